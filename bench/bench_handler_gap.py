"""Is the model's work slower inside a gRPC handler than in a plain loop, and if so, where?

Issue 11 part 2: after idle gaps, ``bench_serving.py`` found the server's own prepare + run
about 1 ms slower than the same work in process. This bench isolates it from the transport.
A gRPC server (``grpc.server(ThreadPoolExecutor(8))``, as the real one) runs in its own
process with ResNet-50 INT8 opened exactly as the server opens it (``runtime_choice``,
``--runtime``, OpenVINO by default); its handler decodes the JPEG it is sent and runs the
model, and replies with what it measured on its own thread: ``prepare`` and ``run`` wall
time and the thread's CPU time (``time.thread_time``) for each. This process does the same
work in a plain loop with the same timers. The two run in blocks, in a shuffled order per
round, back to back and after ``--gap-ms`` of idle, so each is compared at the same gap.

Reading it: wall time above the caller thread's CPU time is waiting (the GIL, a runtime's
worker, a wake-up); wall equal to CPU but larger than the loop's means the same work ran
slower on the CPU. On a 2-vCPU AMD EPYC (docs/MEASUREMENTS.md) the run's CPU time tracked its
wall time within 0.1-0.25 ms in both places, so the after-idle gap is slower computing, not
waiting; it moved between 0.2 and 1.4 ms from one run of the bench to the next.

Usage: ``python bench/bench_handler_gap.py [--workspace DIR] [--rounds 25] [--block 5]
[--gaps-ms 0,50] [--runtime openvino]``; the workspace keeps the converted ResNet-50 for the
next run (the same as ``bench_serving.py --workspace``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

SERVICE = "bench.Work"
#: prepare wall, prepare CPU, run wall, run CPU (ms, on the thread that did the work)
TIMES = struct.Struct("4d")
COLUMNS = ("prepare wall", "prepare cpu", "run wall", "run cpu")


def open_work(
    onnx: str, runtime: str, folder: Path
) -> Callable[[bytes], tuple[float, float, float, float]]:
    """The server's prepare + run for one JPEG, timed on the calling thread."""
    from accel_widgets.preprocess import prepare
    from accel_widgets.serving import runtime_choice
    from accel_widgets.serving.config import ServerConfig

    config_file = folder / f"config-{runtime}.json"
    model_entry = {"name": "resnet50", "onnx": onnx, "precision": "int8"}
    config_file.write_text(json.dumps({"models": [model_entry], "runtime": runtime}))
    config = ServerConfig.load(config_file)
    model = config.models[0]
    candidates, _ = runtime_choice.open_candidates(
        model, asked=runtime, device="cpu", threads=config.threads, spinning=config.spinning
    )
    session = candidates[0].session
    name = session.get_inputs()[0].name

    def work(jpeg: bytes) -> tuple[float, float, float, float]:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        pixels = prepare(jpeg, model.preprocessing, max_pixels=config.max_pixels)
        wall1, cpu1 = time.perf_counter(), time.thread_time()
        session.run(None, {name: pixels})
        wall2, cpu2 = time.perf_counter(), time.thread_time()
        return (
            (wall1 - wall0) * 1000,
            (cpu1 - cpu0) * 1000,
            (wall2 - wall1) * 1000,
            (cpu2 - cpu1) * 1000,
        )

    return work


def serve(port_file: Path, onnx: str, runtime: str) -> None:
    """The handler process: the same work, answered over gRPC as the real server does."""
    work = open_work(onnx, runtime, port_file.parent)
    from accel_widgets.engine.checks.samples import sample_photos

    jpeg = sample_photos(["chelsea"])[0].data
    for _ in range(5):
        work(jpeg)
    handler = grpc.unary_unary_rpc_method_handler(
        lambda request, context: TIMES.pack(*work(request))
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Run": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_file.write_text(str(port))
    server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--workspace", type=Path, help="keep the converted model here")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--block", type=int, default=5, help="calls per visit (first dropped)")
    parser.add_argument("--gaps-ms", default="0,50")
    parser.add_argument("--runtime", default="openvino", choices=("openvino", "onnxruntime"))
    parser.add_argument("--quick", action="store_true", help="a few rounds: check it runs")
    args = parser.parse_args(argv)
    if args.serve:
        serve(Path(args.serve[0]), args.serve[1], args.serve[2])
        return 0
    if args.quick:
        args.rounds, args.block = 3, 3

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_runtimes import cpu_description, in_blocks
    from bench_serving import prepare_models

    from accel_widgets.engine.checks.samples import sample_photos
    from accel_widgets.engine.store.workspace import Workspace

    cpu = cpu_description()
    print(f"CPU: {cpu['model']} ({cpu['cpus']} CPUs; {cpu['flags']}); runtime {args.runtime}")
    folder = Path(tempfile.mkdtemp(prefix="accel-gap-"))
    workspace = Workspace(args.workspace or folder / "workspace")
    prepare_models(workspace)
    onnx = str(workspace.get_artifact("resnet50", precision="int8").file)
    jpeg = sample_photos(["chelsea"])[0].data

    port_file = folder / "port"
    command = [sys.executable, __file__, "--serve", str(port_file), onnx, args.runtime]
    server = subprocess.Popen(command)
    channel = None
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists() or not port_file.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the handler process did not start; see its output above")
            time.sleep(0.1)
        channel = grpc.insecure_channel(f"127.0.0.1:{port_file.read_text()}")
        call = channel.unary_unary(f"/{SERVICE}/Run")
        work = open_work(onnx, args.runtime, folder)
        candidates: dict[str, Callable[[], tuple[float, ...]]] = {
            "loop": lambda: work(jpeg),
            "handler": lambda: TIMES.unpack(call(jpeg)),
        }
        for candidate in candidates.values():
            for _ in range(5):
                candidate()
        print(f"\np50 ms on the thread that did the work ({args.rounds} rounds x {args.block - 1})")
        print(
            f"{'gap ms':>6} {'where':<8}" + "".join(f"{c:>14}" for c in COLUMNS) + f"{'total':>9}"
        )
        for gap_ms in (float(g) for g in args.gaps_ms.split(",")):
            seen = in_blocks(candidates, rounds=args.rounds, block=args.block, gap_s=gap_ms / 1000)
            totals = {}
            for kind, rows in seen.items():
                p50 = [statistics.median(row[i] for row in rows) for i in range(4)]
                totals[kind] = statistics.median(row[0] + row[2] for row in rows)
                print(
                    f"{gap_ms:>6.0f} {kind:<8}"
                    + "".join(f"{v:>14.2f}" for v in p50)
                    + f"{totals[kind]:>9.2f}"
                )
            print(
                f"{'':>15}handler / loop {totals['handler'] / totals['loop']:.3f} "
                f"({totals['handler'] - totals['loop']:+.2f} ms)",
                flush=True,
            )
    finally:
        if channel is not None:
            channel.close()
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
