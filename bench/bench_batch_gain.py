"""The most dynamic batching can gain on this machine: per-image time by batch size, in process.

A service that batches requests can serve at most ``1 / per_image(batch) * per_image(1)``
times the throughput of one client sending one image at a time, and only if queueing and
gRPC cost nothing. With intra-op threads = the CPUs, a lone batch-1 request already keeps
every core busy, so what is left to gain is what a larger GEMM saves per image. This prints
that ceiling for ResNet-50 (fp32 and INT8, ONNX Runtime and OpenVINO) side by side in one run,
with the CPU it ran on; compare it with ``bench_serving.py``'s batching gain.

Usage: ``python bench/bench_batch_gain.py --workspace DIR [--rounds 6] [--batches 1,2,4,8,16]``
(``DIR`` holds ResNet-50 converted by ``bench_serving.py --workspace DIR``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_runtimes import cpu_description  # noqa: E402


def _sessions(onnx: Path, batches: list[int]) -> dict[str, object]:
    """One ONNX Runtime session and one OpenVINO compile (batch bounded by the largest)."""
    from accel_widgets.serving import openvino_runtime, runtime

    out: dict[str, object] = {}
    threads = runtime.available_cpus()
    session, _ = runtime.open_onnxruntime(onnx, "fp32", threads, True, "cpu")
    out["onnxruntime"] = session
    if openvino_runtime.available() is None:
        out["openvino"] = openvino_runtime.OpenVinoSession(
            onnx, threads=threads, precision_hint="f32", dynamic_batch=max(batches)
        )
    return out


def per_image_ms(session, name: str, batch: int, rounds: int, block: int = 4) -> float:
    """Median ms per image over ``rounds`` blocks of ``block`` calls (first call dropped)."""
    x = np.random.default_rng(0).random((batch, 224, 224, 3), dtype=np.float32) * 255
    samples = []
    for _ in range(rounds):
        for position in range(block):
            started = time.perf_counter()
            session.run(None, {name: x})
            if position:
                samples.append((time.perf_counter() - started) * 1000 / batch)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", default="1,2,4,8,16")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    cpu = cpu_description()
    print(f"CPU: {cpu['model']} ({cpu['cpus']} CPUs; flags: {' '.join(cpu['flags'])})")
    artifacts = args.workspace / "models" / "resnet50" / "1" / "artifacts"
    rows: dict[str, dict[int, float]] = {}
    for precision in ("fp32", "int8"):
        onnx = artifacts / precision / "model.onnx"
        if not onnx.is_file():
            print(f"skipping {precision}: {onnx} not found (run bench_serving.py first)")
            continue
        sessions = _sessions(onnx, batches)
        for runtime_name, session in sessions.items():
            name = session.get_inputs()[0].name
            per = {b: [] for b in batches}
            for _ in range(args.rounds):  # interleave batch sizes, shuffled each round
                order = batches[:]
                random.shuffle(order)
                for b in order:
                    per[b].append(per_image_ms(session, name, b, 1))
            rows[f"{runtime_name} {precision}"] = {b: statistics.median(v) for b, v in per.items()}
    header = "ms per image".ljust(22) + "".join(f"b={b}".rjust(9) for b in batches)
    print(header + "   ceiling (b=1 / best)")
    for label, values in rows.items():
        best = min(values.values())
        line = label.ljust(22) + "".join(f"{values[b]:9.2f}" for b in batches)
        print(f"{line}   {values[1] / best:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
