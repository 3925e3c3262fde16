"""Container benchmark: the packaged image against the local target, side by side in one run.

Prints, for one model (ResNet-50 INT8 with random weights by default):

* **image**: size of the built image, and the build time cold (``no_cache``: every layer,
  wheels included) and warm (the wheels layer cached, another model file: the same model's
  other precision, as a second model would be);
* **ready**: from the ``deploy()`` call to a SERVING health answer, container vs local,
  ``--deploys`` each, alternating, deleted between;
* **served latency**: client-observed p50/p99 for the cat JPEG through each service, in
  alternating blocks of ``--block`` calls (ONNX Runtime threads spin after a run, so
  measuring one service right after the other's burst would slow it: docs/FINDINGS.md), and the
  ratio container / local.

The CPU model is printed with the figures: they move with the machine. Needs a Docker
engine and a base image (``--base``, default ``$ACCEL_WIDGETS_BASE_IMAGE`` or the one
``scripts/make_base_image.sh`` makes). Every service and image it makes is removed on exit.

Usage: ``python bench/bench_container.py [--model resnet50|squeezenet] [--runs 200]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_IMAGE_MB = 450
TARGET_SERVED_RATIO = 1.05
TARGET_READY_WARM_S = 3.0

_STARTED = time.monotonic()


from bench_runtimes import cpu_description  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(workspace: Any, model: str, weights_dir: Path) -> str:
    """The model converted in ``workspace``; its name."""
    if model == "squeezenet":
        from accel_widgets.engine.models.register import register_onnx

        register_onnx(
            weights_dir / "SqueezeNet_fp16.onnx",
            "squeezenet",
            workspace=workspace,
            preprocessing={"channel_order": "BGR", "layout": "NCHW", "dtype": "float16"},
        )
        return "squeezenet"
    from accel_widgets.engine.conversion.convert import convert
    from accel_widgets.engine.models.build import build_model

    log(f"building and converting {model} (random weights, INT8)")
    build_model(model, weights="random", workspace=workspace)
    convert(model, quantize="int8", workspace=workspace)
    return model


def deploy_timed(model: str, target: str, name: str, workspace: Any) -> tuple[Any, float]:
    from accel_widgets.engine.targets import deploy

    started = time.perf_counter()
    service = deploy(model, target=target, name=name, workspace=workspace)
    return service, time.perf_counter() - started


def run(args: argparse.Namespace, workspace: Any) -> dict[str, Any]:
    from accel_widgets.engine.checks.samples import sample_photos
    from accel_widgets.engine.clients.grpc_client import client_from_service
    from accel_widgets.engine.packaging import package as pkg
    from accel_widgets.engine.targets import delete_service

    results: dict[str, Any] = {
        "cpu": cpu_description()["model"],
        "cpus": os.cpu_count(),
        "model": args.model,
    }
    model = prepare(workspace, args.model, args.weights)

    served_precision = workspace.get_artifact(model).precision
    other = [a.precision for a in workspace.list_artifacts(workspace.get_model(model))]
    other = [p for p in other if p != served_precision]
    log(f"packaging {served_precision} cold (no layer cache)")
    cold = pkg.package(model, base=args.base, name="bench-cold", no_cache=True, workspace=workspace)
    results["image_mb"] = round(cold.info["size_bytes"] / 1e6, 1)
    results["build_cold_s"] = cold.info["build_seconds"]
    if other:
        log(f"packaging {other[0]} warm (wheels layer cached, another model file)")
        warm = pkg.package(
            model, precision=other[0], base=args.base, name="bench-warm", workspace=workspace
        )
        results["build_warm_s"] = warm.info["build_seconds"]
        results["warm_image_mb"] = round(warm.info["size_bytes"] / 1e6, 1)
        pkg.delete_image("bench-warm", workspace=workspace)
    else:
        results["build_warm_s"] = float("nan")

    ready: dict[str, list[float]] = {"container": [], "local": []}
    for _ in range(args.deploys):
        for target in ("container", "local"):
            service, seconds = deploy_timed(model, target, f"ready-{target}", workspace)
            ready[target].append(seconds)
            delete_service(service.name, workspace)
    results["ready_s"] = {t: round(statistics.median(v), 2) for t, v in ready.items()}
    log(f"deploy to ready: {results['ready_s']}")

    jpeg = sample_photos(["chelsea"])[0].data
    services = {
        target: deploy_timed(model, target, f"bench-{target}", workspace)[0]
        for target in ("container", "local")
    }
    timings: dict[str, list[float]] = {"container": [], "local": []}
    clients = {t: client_from_service(s) for t, s in services.items()}
    try:
        for client in clients.values():
            for _ in range(10):
                client.score_image(jpeg)  # warm-up: connection, first runs
        order = ["container", "local"]
        while min(len(v) for v in timings.values()) < args.runs:
            for target in order:
                time.sleep(args.gap)
                for _ in range(args.block):
                    started = time.perf_counter()
                    clients[target].score_image(jpeg)
                    timings[target].append((time.perf_counter() - started) * 1000)
            order.reverse()
    finally:
        for client in clients.values():
            client.close()
        for service in services.values():
            delete_service(service.name, workspace)
        pkg.delete_image("bench-cold", workspace=workspace)
    results["served_ms"] = {
        t: {"p50": round(percentile(v, 0.5), 2), "p99": round(percentile(v, 0.99), 2)}
        for t, v in timings.items()
    }
    results["served_ratio"] = round(
        results["served_ms"]["container"]["p50"] / results["served_ms"]["local"]["p50"], 3
    )
    return results


def report(results: dict[str, Any]) -> list[str]:
    served, ready = results["served_ms"], results["ready_s"]
    rows = [
        f"CPU: {results['cpu']} ({results['cpus']} CPUs); model {results['model']}",
        f"image size           {results['image_mb']:8.1f} MB   (target <= {TARGET_IMAGE_MB})",
        f"image size, fp32     {results.get('warm_image_mb', float('nan')):8.1f} MB",
        f"build, cold / warm   {results['build_cold_s']:8.1f} s / {results['build_warm_s']:.1f} s",
        f"ready, container     {ready['container']:8.2f} s    (target <= {TARGET_READY_WARM_S})",
        f"ready, local         {ready['local']:8.2f} s",
        f"served p50 container {served['container']['p50']:8.2f} ms  "
        f"(p99 {served['container']['p99']:.2f})",
        f"served p50 local     {served['local']['p50']:8.2f} ms  "
        f"(p99 {served['local']['p99']:.2f})",
        f"container / local    {results['served_ratio']:8.3f}x   (target <= {TARGET_SERVED_RATIO})",
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    default_weights = Path(__file__).resolve().parents[2] / "shared" / "weights"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50", choices=["resnet50", "squeezenet"])
    parser.add_argument(
        "--base",
        default=os.environ.get("ACCEL_WIDGETS_BASE_IMAGE") or "local/debian-py:bookworm",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=Path(os.environ.get("ACCEL_WIDGETS_WEIGHTS_DIR") or default_weights),
    )
    parser.add_argument("--runs", type=int, default=200, help="scored requests per service")
    parser.add_argument("--block", type=int, default=20, help="calls per block")
    parser.add_argument("--gap", type=float, default=0.2, help="idle seconds between blocks")
    parser.add_argument("--deploys", type=int, default=3, help="deploys per target")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from accel_widgets.engine.store.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="accel-container-bench-") as folder:
        results = run(args, Workspace(folder))
    results["runtime_s"] = round(time.monotonic() - _STARTED, 1)
    print("\n".join(report(results)))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
