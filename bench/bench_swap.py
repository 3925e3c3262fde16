"""The swap of a new version under load: failed requests while ``deploy`` replaces a service.

A client scores the cat photo in a loop, on one channel, from before the swap until after
it; meanwhile ``deploy`` swaps a running local service to a new model version (start the
new server on the same port with SO_REUSEPORT, switch the record, stop the old one:
``engine/targets/local.py``). Counted: requests answered, requests failed (any error, by
status), which server answered (the model version in each reply), and the swap's seconds.
The goal is 0 failed requests.

    PYTHONPATH=$PWD python bench/bench_swap.py --swaps 5 [--weights ../shared/weights]

``--target container`` swaps a container service instead (needs Docker, host networking,
and the base image ``local/debian-py:bookworm``).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRE = {"channel_order": "BGR", "layout": "NCHW", "dtype": "float16"}


class Scorer(threading.Thread):
    """Scores without pause until stopped; counts answers by model version, and failures."""

    def __init__(self, service, photo: bytes) -> None:
        super().__init__(daemon=True)
        from accel_widgets.engine.clients.grpc_client import client_from_service
        from accel_widgets.serving import protocol
        from accel_widgets.serving.tensors import make_tensor_proto

        self.client = client_from_service(service, timeout=10.0)
        self.request = protocol.PredictRequest()
        self.request.inputs["images"].CopyFrom(make_tensor_proto([photo]))
        self.stop = threading.Event()
        self.versions: collections.Counter[int] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []

    def run(self) -> None:
        from accel_widgets.errors import ScoringError

        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                reply = self.client.predict(self.request)
                self.versions[int(reply.model_spec.version.value)] += 1
            except ScoringError as exc:
                self.failures[exc.code or "error"] += 1
            except Exception as exc:  # counted, whatever it is: the figure is failures
                self.failures[type(exc).__name__] += 1
            self.latencies.append((time.perf_counter() - started) * 1000)


from bench_runtimes import cpu_description  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument("--target", default="local", choices=["local", "container"])
    parser.add_argument(
        "--weights",
        default=os.environ.get("ACCEL_WIDGETS_WEIGHTS_DIR", str(ROOT.parent / "shared/weights")),
    )
    parser.add_argument("--base", default="local/debian-py:bookworm")
    args = parser.parse_args()

    from accel_widgets.engine.checks.samples import sample_photos
    from accel_widgets.engine.models.register import register_onnx
    from accel_widgets.engine.store.workspace import Workspace
    from accel_widgets.engine.targets import delete_service, deploy

    photo = sample_photos(["chelsea"])[0].data
    with tempfile.TemporaryDirectory(prefix="bench-swap-") as tmp:
        workspace = Workspace(Path(tmp) / "ws")
        onnx = Path(args.weights) / "SqueezeNet_fp16.onnx"
        for _ in range(2):  # two versions of one model: v1 and v2
            register_onnx(onnx, "sq", workspace=workspace, preprocessing=PRE)
        images = {}
        if args.target == "container":
            from accel_widgets.engine.packaging.package import package

            for version in (1, 2):
                images[version] = package("sq", version, base=args.base, workspace=workspace)

        def deploy_version(version: int):
            extra = {"image": f"{images[version].ref}"} if images else {}
            return deploy(
                "sq", version=version, target=args.target, auth=True, workspace=workspace, **extra
            )

        rows = []
        service = deploy_version(1)
        try:
            for swap in range(args.swaps):
                scorer = Scorer(service, photo)
                scorer.start()
                time.sleep(1.0)
                before = sum(scorer.versions.values())
                version = 2 if swap % 2 == 0 else 1
                started = time.perf_counter()
                new = deploy_version(version)
                seconds = time.perf_counter() - started
                time.sleep(1.0)
                scorer.stop.set()
                scorer.join(30)
                scorer.client.close()
                assert new.port == service.port, (new.port, service.port)
                rows.append(
                    {
                        "swap": f"v{3 - version} -> v{version}",
                        "seconds": seconds,
                        "answered": sum(scorer.versions.values()),
                        "during": sum(scorer.versions.values()) - before,
                        "failed": sum(scorer.failures.values()),
                        "failures": dict(scorer.failures),
                        "by_version": dict(scorer.versions),
                        "p50_ms": statistics.median(scorer.latencies),
                        "max_ms": max(scorer.latencies),
                    }
                )
                service = new
        finally:
            delete_service("sq", workspace)
            if images:
                from accel_widgets.engine.packaging.package import delete_image

                delete_image("sq", workspace=workspace)  # both versions, and the wheels stage
    print(f"CPU: {cpu_description()['model']} ({os.cpu_count()} cores); target {args.target}")
    header = f"{'swap':<9} {'s':>5} {'answered':>9} {'failed':>7} {'p50 ms':>7} {'max ms':>7}"
    print(f"{header}  by version")
    for row in rows:
        print(
            f"{row['swap']:<9} {row['seconds']:>5.2f} {row['answered']:>9} {row['failed']:>7} "
            f"{row['p50_ms']:>7.1f} {row['max_ms']:>7.0f}  {row['by_version']} "
            f"{row['failures'] or ''}"
        )
    print(f"failed requests in all: {sum(r['failed'] for r in rows)}")


if __name__ == "__main__":
    main()
