"""What the transport alone costs per call, for a handler as long as the model's run.

Issue 11 part 2 asks where a served request spends time that the same work in-process does
not. This isolates the transport: each server runs in its own process and answers a
Predict-sized call (the 35 KB chelsea JPEG in, 4 KB of "scores" out) after holding it for
``--handler-ms`` (0, and 16: ResNet-50 INT8's in-process time here) without doing model
work. The handler waits in ``time.sleep``: a CPU-bound wait of the same length measured the
same (within 0.05 ms), and sleeping keeps the bench from competing with itself for the
2 vCPUs.

The reply carries the handler's start and end on ``time.perf_counter()``, which is
CLOCK_MONOTONIC on Linux and so shared by the two processes: the bench splits each call
into the **in** leg (the client's call until the handler starts: client, HTTP/2, the
server's hand-offs to the handler thread) and the **out** leg (the handler's return until
the client holds the reply). Candidates run in blocks, in a shuffled order per round, back
to back and after idle gaps, like the other benches:

* ``tcp``: a plain TCP socket server (one thread, ``recv`` / ``sendall``): what the OS and
  the VM charge for waking a sleeping thread on each side, the floor under any transport;
* ``sync``: ``grpc.server(ThreadPoolExecutor(8))``, the server's construction today: the
  request is read by gRPC's event-engine threads, queued to the Python polling thread, handed
  to a pool thread, whose read of the message goes back through the polling thread;
* ``sync-1``: the same with one pool thread (no choice of thread to wake);
* ``sync-no-ee``: ``sync`` with gRPC's event engine turned off in the server process
  (``GRPC_EXPERIMENTS=-event_engine_client,-event_engine_listener,...``), which cuts the
  server's event-engine context switches per call from about 4.5 to 1.3;
* ``aio``: ``grpc.aio.server()``, the handler a coroutine on the polling thread's loop.

What it showed on a 2-vCPU AMD EPYC (docs/MEASUREMENTS.md): a gRPC round trip grows with the
time the handler holds the call, because every thread on the path has gone to sleep by then
and each wake-up on this VM costs more after a longer sleep; ``tcp`` pays the same effect
once per side, gRPC about five times.

Usage: ``python bench/bench_grpc_layer.py [--rounds 20] [--block 5] [--gaps-ms 0,50]
[--handler-ms 0,16] [--budget-ms 17.1]``; ``--budget-ms`` is the best in-process p50 of the
model you compare with, and the bench prints what 10 % of it leaves after the transport.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
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

SERVICE = "bench.Echo"
REPLY = bytes(4096)
KINDS = ("tcp", "sync", "sync-1", "sync-no-ee", "aio")
#: gRPC core experiments that route a server's I/O through the event engine's own threads.
NO_EVENT_ENGINE = (
    "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
)
STAMPS = struct.Struct("dd")  # handler start, handler end (perf_counter, seconds)


def _method(handler_ms: float) -> str:
    return f"Hold{int(handler_ms * 1000)}us"


def _reply(hold_s: float) -> bytes:
    started = time.perf_counter()
    if hold_s:
        time.sleep(hold_s)
    return STAMPS.pack(started, time.perf_counter()) + REPLY


def _sync_handlers(holds_ms: list[float]) -> grpc.GenericRpcHandler:
    methods = {
        _method(ms): grpc.unary_unary_rpc_method_handler(
            lambda request, context, s=ms / 1000: _reply(s)
        )
        for ms in holds_ms
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


def serve_sync(port_file: Path, workers: int, holds_ms: list[float]) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((_sync_handlers(holds_ms),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_file.write_text(str(port))
    server.wait_for_termination()


def serve_aio(port_file: Path, holds_ms: list[float]) -> None:
    def method(hold_s: float) -> grpc.RpcMethodHandler:
        async def handler(request: bytes, context: object) -> bytes:
            return _reply(hold_s)

        return grpc.unary_unary_rpc_method_handler(handler)

    async def main() -> None:
        server = grpc.aio.server()
        methods = {_method(ms): method(ms / 1000) for ms in holds_ms}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_file.write_text(str(port))
        await server.wait_for_termination()

    asyncio.run(main())


def serve_tcp(port_file: Path) -> None:
    """Length-prefixed frames: 4-byte size + payload + 8-byte hold (s) in; stamps + reply out."""
    listener = socket.create_server(("127.0.0.1", 0))
    port_file.write_text(str(listener.getsockname()[1]))
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while header := conn.recv(4, socket.MSG_WAITALL):
                (size,) = struct.unpack("!I", header)
                body = conn.recv(size + 8, socket.MSG_WAITALL)
                (hold_s,) = struct.unpack("!d", body[-8:])
                conn.sendall(_reply(hold_s))


class TcpClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, payload: bytes, hold_ms: float) -> bytes:
        frame = struct.pack("!I", len(payload)) + payload + struct.pack("!d", hold_ms / 1000)
        self.sock.sendall(frame)
        return self.sock.recv(STAMPS.size + len(REPLY), socket.MSG_WAITALL)

    def close(self) -> None:
        self.sock.close()


def start(kind: str, folder: Path, holds_ms: list[float]) -> tuple[subprocess.Popen, int]:
    port_file = folder / f"{kind}.port"
    env = dict(os.environ)
    if kind == "sync-no-ee":
        env["GRPC_EXPERIMENTS"] = NO_EVENT_ENGINE
    holds = ",".join(f"{ms:g}" for ms in holds_ms)
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(port_file), "--handler-ms", holds],
        env=env,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"the {kind} server did not start")
        time.sleep(0.05)
    return process, int(port_file.read_text())


def _serve(kind: str, port_file: Path, holds_ms: list[float]) -> None:
    if kind == "aio":
        serve_aio(port_file, holds_ms)
    elif kind == "tcp":
        serve_tcp(port_file)
    else:
        serve_sync(port_file, 1 if kind == "sync-1" else 8, holds_ms)


def measure(
    calls: dict[str, Callable[[], bytes]], *, rounds: int, block: int, gap_s: float
) -> dict[str, dict[str, float]]:
    """p50 of the whole call and of its in / out legs (ms), per candidate, in blocks."""
    from bench_runtimes import in_blocks

    def legs(call: Callable[[], bytes]) -> Callable[[], tuple[float, float, float]]:
        def one() -> tuple[float, float, float]:
            started = time.perf_counter()
            reply = call()
            ended = time.perf_counter()
            handler_start, handler_end = STAMPS.unpack_from(reply)
            return (
                (ended - started) * 1000,
                (handler_start - started) * 1000,
                (ended - handler_end) * 1000,
            )

        return one

    seen = in_blocks(
        {kind: legs(call) for kind, call in calls.items()},
        rounds=rounds,
        block=block,
        gap_s=gap_s,
    )
    return {
        kind: {
            "call": statistics.median(v[0] for v in values),
            "in": statistics.median(v[1] for v in values),
            "out": statistics.median(v[2] for v in values),
            "transport": statistics.median(v[1] + v[2] for v in values),
        }
        for kind, values in seen.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=5, help="calls per visit (first dropped)")
    parser.add_argument("--gaps-ms", default="0,50")
    parser.add_argument("--handler-ms", default="0,16", help="how long each handler holds a call")
    parser.add_argument(
        "--budget-ms",
        type=float,
        default=17.1,
        help="the model's best in-process p50; 10 %% of it is the served-overhead budget",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    holds_ms = [float(h) for h in args.handler_ms.split(",")]
    if args.serve:
        _serve(args.serve[0], Path(args.serve[1]), holds_ms)
        return 0
    if args.quick:
        args.rounds, args.block = 3, 3
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_runtimes import cpu_description

    from accel_widgets.engine.checks.samples import sample_photos

    payload = sample_photos(["chelsea"])[0].data

    cpu = cpu_description()
    print(
        f"CPU: {cpu['model']} ({cpu['cpus']} CPUs; {cpu['flags']}); grpcio {grpc.__version__}; "
        f"{len(payload)} B in, {len(REPLY)} B out",
        flush=True,
    )
    budget = args.budget_ms * 0.10
    with tempfile.TemporaryDirectory() as folder:
        servers = {kind: start(kind, Path(folder), holds_ms) for kind in KINDS}
        channels: list[grpc.Channel] = []
        tcp = TcpClient(servers["tcp"][1])
        try:
            calls: dict[tuple[str, float], Callable[[], bytes]] = {}
            for kind, (_, port) in servers.items():
                if kind == "tcp":
                    for ms in holds_ms:
                        calls[kind, ms] = lambda ms=ms: tcp.call(payload, ms)
                    continue
                channel = grpc.insecure_channel(f"127.0.0.1:{port}")
                channels.append(channel)
                for ms in holds_ms:
                    method = channel.unary_unary(f"/{SERVICE}/{_method(ms)}")
                    calls[kind, ms] = lambda m=method: m(payload)
            for call in calls.values():
                for _ in range(10):
                    call()
            print(
                f"\n{'gap ms':>6} {'handler ms':>10} {'candidate':<11}"
                f"{'call p50':>10}{'in leg':>9}{'out leg':>9}{'in + out':>10}  (ms)"
            )
            for gap in (float(g) / 1000 for g in args.gaps_ms.split(",")):
                for ms in holds_ms:
                    subset = {kind: calls[kind, ms] for kind in KINDS}
                    result = measure(subset, rounds=args.rounds, block=args.block, gap_s=gap)
                    for kind in KINDS:
                        r = result[kind]
                        print(
                            f"{gap * 1000:>6.0f} {ms:>10g} {kind:<11}{r['call']:>10.3f}"
                            f"{r['in']:>9.3f}{r['out']:>9.3f}{r['transport']:>10.3f}",
                            flush=True,
                        )
                    if ms == max(holds_ms):
                        sync = result["sync"]["transport"]
                        print(
                            f"{'':>18} a 10 % budget on a {args.budget_ms:g} ms model is "
                            f"{budget:.2f} ms; the sync server's transport alone takes "
                            f"{sync:.2f} ms ({sync / budget:.0%} of it), plain TCP "
                            f"{result['tcp']['transport']:.2f} ms",
                            flush=True,
                        )
        finally:
            tcp.close()
            for channel in channels:
                channel.close()
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
