"""What the gRPC layer alone costs per call: the sync thread-pool server vs ``grpc.aio``.

Issue 11 part 2 asks where a served request spends time that the same work in-process does
not. This isolates the transport: each server runs in its own process and answers a
Predict-sized call (the 35 KB chelsea JPEG in, 4 KB of "scores" out) without doing any
model work, so the client-observed time is gRPC's own (framing, HTTP/2, the hand-off from
gRPC's polling thread to the handler) plus the client's. Candidates run in blocks, in a
shuffled order per round, back to back and after idle gaps, like the other benches.

* ``sync``: ``grpc.server(ThreadPoolExecutor(8))``, the server's construction today: the
  request is read by gRPC's completion-queue thread and handed to a pool thread;
* ``sync-1``: the same with one pool thread (no choice of thread to wake);
* ``aio``: ``grpc.aio.server()``, the handler a coroutine on the polling thread's loop.

Usage: ``python bench/bench_grpc_layer.py [--rounds 20] [--block 5] [--gaps-ms 0,50]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

SERVICE, METHOD = "bench.Echo", "Call"
REPLY = bytes(4096)
KINDS = ("sync", "sync-1", "aio")


def _handler(request: bytes, context: object) -> bytes:
    return REPLY


def serve_sync(port_file: Path, workers: int) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=workers))
    method = grpc.unary_unary_rpc_method_handler(_handler)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: method}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_file.write_text(str(port))
    server.wait_for_termination()


def serve_aio(port_file: Path) -> None:
    async def handler(request: bytes, context: object) -> bytes:
        return REPLY

    async def main() -> None:
        server = grpc.aio.server()
        method = grpc.unary_unary_rpc_method_handler(handler)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {METHOD: method}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_file.write_text(str(port))
        await server.wait_for_termination()

    asyncio.run(main())


def start(kind: str, folder: Path) -> tuple[subprocess.Popen, int]:
    port_file = folder / f"{kind}.port"
    process = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port_file)])
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"the {kind} server did not start")
        time.sleep(0.05)
    return process, int(port_file.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=5, help="calls per visit (first dropped)")
    parser.add_argument("--gaps-ms", default="0,50")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.serve:
        kind, port_file = args.serve[0], Path(args.serve[1])
        if kind == "aio":
            serve_aio(port_file)
        else:
            serve_sync(port_file, 1 if kind == "sync-1" else 8)
        return 0
    if args.quick:
        args.rounds, args.block = 3, 3
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_runtimes import cpu_description

    from accel_widgets.engine.samples import sample_photos

    payload = sample_photos(["chelsea"])[0].data

    cpu = cpu_description()
    print(f"CPU: {cpu['model']} ({cpu['cpus']} CPUs); grpcio {grpc.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        servers = {kind: start(kind, Path(folder)) for kind in KINDS}
        try:
            channels = {k: grpc.insecure_channel(f"127.0.0.1:{p}") for k, (_, p) in servers.items()}
            calls = {k: c.unary_unary(f"/{SERVICE}/{METHOD}") for k, c in channels.items()}
            for call in calls.values():
                for _ in range(20):
                    call(payload)
            print(f"{'gap ms':>6} " + "".join(f"{k + ' p50 ms':>16}" for k in KINDS))
            for gap in (float(g) / 1000 for g in args.gaps_ms.split(",")):
                samples: dict[str, list[float]] = {k: [] for k in KINDS}
                order = list(KINDS)
                rng = random.Random(0)
                for _ in range(args.rounds):
                    rng.shuffle(order)
                    for kind in order:
                        for position in range(args.block):
                            if gap:
                                time.sleep(gap)
                            started = time.perf_counter()
                            calls[kind](payload)
                            if position:
                                samples[kind].append((time.perf_counter() - started) * 1000)
                cells = "".join(f"{statistics.median(samples[k]):>16.3f}" for k in KINDS)
                print(f"{gap * 1000:>6.0f} {cells}", flush=True)
            for channel in channels.values():
                channel.close()
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
