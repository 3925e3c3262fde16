"""Memory a served model holds, by how its runtime was chosen (issue 24, "light services").

For each model, deploys it as a local service once per way of choosing the runtime, scores
the cat photo 50 times, then reads the server's RSS (its process and any children) and the
p50 of those 50 calls. Side by side, in one run:

* ``auto, raced in the server``: the old way (``ACCEL_WIDGETS_RUNTIME_RACE=here``): both
  runtimes opened in the server, the loser dropped but its libraries still mapped;
* ``auto, raced in a child``: the race in a short-lived child process, the verdict kept;
* ``auto, kept verdict``: a second start that reads the verdict back;
* ``onnxruntime`` and ``openvino``: one runtime asked for by name.

Goals (issue 24): the served sample <= 150 MB, ResNet-50 INT8 <= 260 MB, after 50 requests.

    PYTHONPATH=$PWD python bench/bench_light_services.py [--models sample,resnet50-int8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

WAYS = (
    ("auto, raced in the server", "auto", {"ACCEL_WIDGETS_RUNTIME_RACE": "here"}),
    ("auto, raced in a child", "auto", {}),
    ("auto, kept verdict", "auto", {}),
    ("onnxruntime", "onnxruntime", {}),
    ("openvino", "openvino", {}),
)


def _rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    total = process.memory_info().rss
    total += sum(child.memory_info().rss for child in process.children(recursive=True))
    return total / 2**20


def _prepare(model: str, workspace, weights: Path) -> tuple[str, str | None]:
    """Register or build the model; its name and the precision to serve."""
    if model == "sample":
        from accel_widgets.engine.models.known_files import SAMPLE_PREPROCESSING
        from accel_widgets.engine.models.register import register_onnx

        register_onnx(
            weights / "SqueezeNet_fp16.onnx",
            "squeezenet",
            preprocessing=SAMPLE_PREPROCESSING,
            workspace=workspace,
        )
        return "squeezenet", None
    if model == "resnet50-int8":
        from accel_widgets.engine.conversion.convert import convert
        from accel_widgets.engine.models.build import build_model

        build_model("resnet50", weights="random", workspace=workspace)
        convert("resnet50", quantize="int8", workspace=workspace)
        return "resnet50", "int8"
    raise SystemExit(f"unknown model {model!r}: sample or resnet50-int8")


def main() -> None:
    from bench_runtimes import cpu_description

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sample,resnet50-int8")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--weights", type=Path, default=ROOT.parent / "shared" / "weights")
    args = parser.parse_args()

    from accel_widgets.engine.checks.samples import sample_photos
    from accel_widgets.engine.clients.grpc_client import client_from_service
    from accel_widgets.engine.store.workspace import Workspace
    from accel_widgets.engine.targets import delete_service, deploy

    photo = sample_photos(["chelsea"])[0].data
    print(f"CPU: {cpu_description()}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["ACCEL_WIDGETS_RUNTIME_CACHE"] = str(Path(scratch) / "runtime-cache")
        workspace = Workspace(Path(scratch) / "workspace")
        for model in args.models.split(","):
            name, precision = _prepare(model, workspace, args.weights)
            for label, runtime, env in WAYS:
                os.environ.pop("ACCEL_WIDGETS_RUNTIME_RACE", None)
                os.environ.update(env)
                service = deploy(
                    name,
                    name="light",
                    precision=precision,
                    runtime=runtime,
                    workspace=workspace,
                    ready_timeout=300,
                )
                try:
                    times = []
                    with client_from_service(service) as client:
                        for _ in range(args.requests):
                            started = time.perf_counter()
                            client.score_image(photo)
                            times.append((time.perf_counter() - started) * 1000)
                    info = service.info.get("runtimes", {}).get(name, {})
                    rows.append(
                        (
                            model,
                            label,
                            info.get("runtime", "?"),
                            _rss_mb(service.pid),
                            float(service.info.get("ready_seconds") or 0.0),
                            statistics.median(times),
                        )
                    )
                finally:
                    delete_service("light", workspace=workspace)
        os.environ.pop("ACCEL_WIDGETS_RUNTIME_RACE", None)
    print()
    print(
        f"{'model':<14} {'runtime chosen by':<27} {'serves with':<12} {'RSS MB':>7} "
        f"{'vs in-server race':>17} {'ready s':>8} {'p50 ms':>7}"
    )
    for model, label, runtime, rss, ready, p50 in rows:
        reference = next(r[3] for r in rows if r[0] == model and r[1] == WAYS[0][0])
        print(
            f"{model:<14} {label:<27} {runtime:<12} {rss:7.1f} {rss / reference:17.2f} "
            f"{ready:8.2f} {p50:7.1f}"
        )


if __name__ == "__main__":
    main()
