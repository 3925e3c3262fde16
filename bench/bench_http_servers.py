"""Which HTTP server for the REST port: the standard library's, Tornado, aiohttp, uvicorn.

Each candidate runs in its own process with the same two routes and the same shape of work
as the serving process's HTTP port: ``POST /infer`` reads a 25 kB body (a JPEG's size, sent
with the binary tensor extension's header), hands it to a thread pool (where the model runs
in the real server) and answers a JSON header plus 4,000 bytes of scores; ``GET /health``
answers ``{"ready": true}``. The work itself is nil, so what is timed is the server: accept,
parse, hand-off to the pool, send.

* ``stdlib``: ``accel_widgets.serving.rest`` before issue 22 (``http.server`` + a 16-thread
  pool, HTTP/1.0, one request per connection);
* ``tornado``: ``tornado.httpserver.HTTPServer`` with header and body time limits;
* ``aiohttp``: ``aiohttp.web`` (``AppRunner`` + ``TCPSite``);
* ``uvicorn``: uvicorn (h11) with a ten-line ASGI app, skipped when uvicorn is not
  installed (``pip install uvicorn``).

Printed per candidate: client-observed p50/p99 ms for a request on a fresh connection and on
a kept-alive one (the candidates run in blocks, in a shuffled order each round, so machine
load drifts over all alike), the import time of the server library in a fresh interpreter,
the server process's RSS after start and after the timed requests, and whether ``GET
/health`` answers while 256 idle connections are held open (the failure of issue 22: the
standard library's pool is held by 16 of them).

Usage: ``python bench/bench_http_servers.py [--rounds 20] [--block 25] [--out FILE]``;
``--quick`` checks that the bench runs.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accel_widgets.engine.clients.timing import percentiles  # noqa: E402

KINDS = ("stdlib", "tornado", "aiohttp", "uvicorn")
IMPORTS = {
    "stdlib": "import http.server, concurrent.futures",
    "tornado": "import tornado.httpserver, tornado.web",
    "aiohttp": "import aiohttp.web",
    "uvicorn": "import uvicorn",
}
BODY = os.urandom(25_000)
HEADER = b'{"inputs":[{"name":"images","datatype":"BYTES","shape":[1],"parameters":{}}]}'
SCORES = os.urandom(4_000)
IDLE_CONNECTIONS = 256


from bench_runtimes import cpu_description  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def work(body: bytes) -> bytes:
    """The model's place: nothing, so the server's own cost is what the client sees."""
    return b'{"outputs":[{"name":"output_alias","datatype":"FP32","shape":[1,1000]}]}'


# -- the servers (run with --serve KIND PORT_FILE) ---------------------------------------------


def write_port(path: Path, port: int) -> None:
    """Atomically, once the socket listens: the bench never reads half a number."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)


def serve_stdlib(port_file: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Pooled(HTTPServer):
        def __init__(self, address: Any, handler: Any) -> None:
            super().__init__(address, handler)
            self.pool = ThreadPoolExecutor(16)

        def process_request(self, request: Any, client_address: Any) -> None:
            self.pool.submit(self._handle, request, client_address)

        def _handle(self, request: Any, client_address: Any) -> None:
            try:
                self.finish_request(request, client_address)
            finally:
                self.shutdown_request(request)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        disable_nagle_algorithm = True
        timeout = 10

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, body: bytes, header_length: int | None = None) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            if header_length is not None:
                self.send_header("Inference-Header-Content-Length", str(header_length))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(b'{"ready": true}')

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            header = work(body)
            self._send(header + SCORES, len(header))

    server = Pooled(("127.0.0.1", 0), Handler)
    write_port(port_file, server.server_address[1])
    server.serve_forever()


def serve_tornado(port_file: Path) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import tornado.httpserver
    import tornado.web

    pool = ThreadPoolExecutor(16)

    class Health(tornado.web.RequestHandler):
        def get(self) -> None:
            self.finish(b'{"ready": true}')

    class Infer(tornado.web.RequestHandler):
        async def post(self) -> None:
            loop = asyncio.get_running_loop()
            header = await loop.run_in_executor(pool, work, self.request.body)
            self.set_header("Inference-Header-Content-Length", str(len(header)))
            self.finish(header + SCORES)

    async def main() -> None:
        app = tornado.web.Application([("/health", Health), ("/infer", Infer)])
        server = tornado.httpserver.HTTPServer(
            app, idle_connection_timeout=10, body_timeout=60, max_body_size=32 << 20
        )
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        write_port(port_file, sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_aiohttp(port_file: Path) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from aiohttp import web

    pool = ThreadPoolExecutor(16)

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=b'{"ready": true}')

    async def infer(request: web.Request) -> web.Response:
        body = await request.read()
        header = await asyncio.get_running_loop().run_in_executor(pool, work, body)
        return web.Response(
            body=header + SCORES, headers={"Inference-Header-Content-Length": str(len(header))}
        )

    async def main() -> None:
        app = web.Application(client_max_size=32 << 20)
        app.add_routes([web.get("/health", health), web.post("/infer", infer)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        write_port(port_file, site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_uvicorn(port_file: Path) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn

    pool = ThreadPoolExecutor(16)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            body, headers = b'{"ready": true}', []
        else:
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            header = await asyncio.get_running_loop().run_in_executor(pool, work, b"".join(chunks))
            body = header + SCORES
            headers = [(b"inference-header-content-length", str(len(header)).encode())]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    write_port(port_file, sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", http="h11", loop="asyncio", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


SERVERS = {
    "stdlib": serve_stdlib,
    "tornado": serve_tornado,
    "aiohttp": serve_aiohttp,
    "uvicorn": serve_uvicorn,
}

# -- the client ----------------------------------------------------------------------------


def start(kind: str, folder: Path) -> tuple[subprocess.Popen, int]:
    port_file = folder / f"{kind}.port"
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(port_file)], env=os.environ.copy()
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text():
            return process, int(port_file.read_text())
        if process.poll() is not None:
            raise SystemExit(f"{kind} server exited with {process.returncode}")
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{kind} server did not start")


def infer(connection: http.client.HTTPConnection) -> None:
    connection.request(
        "POST",
        "/infer",
        HEADER + BODY,
        {
            "Inference-Header-Content-Length": str(len(HEADER)),
            "Content-Type": "application/octet-stream",
        },
    )
    response = connection.getresponse()
    data = response.read()
    assert response.status == 200 and len(data) > 4000, (response.status, data[:200])


def timed_fresh(port: int) -> float:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    infer(connection)
    connection.close()
    return (time.perf_counter() - started) * 1000


def import_seconds(kind: str) -> float:
    code = f"import time; t = time.perf_counter(); {IMPORTS[kind]}; print(time.perf_counter() - t)"
    best = min(
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        for _ in range(3)
    )
    return best


def health_with_idle_connections(port: int) -> str:
    """Hold 256 connections open without a request; then how long GET /health takes."""
    idle = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/health")
            connection.getresponse().read()
        except (TimeoutError, OSError) as exc:
            return f"no answer in 5 s ({type(exc).__name__})"
        finally:
            connection.close()
        return f"{(time.perf_counter() - started) * 1000:.1f} ms"
    finally:
        for sock in idle:
            sock.close()


def installed() -> list[str]:
    return [k for k in KINDS if k == "stdlib" or importlib.util.find_spec(k) is not None]


def run(rounds: int, block: int) -> dict[str, Any]:
    kinds = installed()
    skipped = sorted(set(KINDS) - set(kinds))
    if skipped:
        log(f"not installed, skipped: {', '.join(skipped)}")
    results: dict[str, Any] = {"cpu": cpu_description()["model"], "rounds": rounds, "block": block}
    with tempfile.TemporaryDirectory() as folder:
        servers = {kind: start(kind, Path(folder)) for kind in kinds}
        try:
            for kind, (process, port) in servers.items():
                timed_fresh(port)  # warm up
                results[kind] = {
                    "rss_start_mb": psutil.Process(process.pid).memory_info().rss / 2**20
                }
            fresh: dict[str, list[float]] = {k: [] for k in kinds}
            kept: dict[str, list[float]] = {k: [] for k in kinds}
            connections = {
                k: http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                for k, (_, port) in servers.items()
                if k != "stdlib"  # HTTP/1.0: one request per connection
            }
            for _ in range(rounds):
                order = list(kinds)
                random.shuffle(order)
                for kind in order:
                    port = servers[kind][1]
                    for _ in range(block):
                        fresh[kind].append(timed_fresh(port))
                    if kind in connections:
                        for _ in range(block):
                            started = time.perf_counter()
                            infer(connections[kind])
                            kept[kind].append((time.perf_counter() - started) * 1000)
            for kind in kinds:
                process, port = servers[kind]
                entry = results[kind]
                figures = percentiles(fresh[kind])
                entry["fresh_p50_ms"], entry["fresh_p99_ms"] = figures["p50_ms"], figures["p99_ms"]
                if kept[kind]:
                    figures = percentiles(kept[kind])
                    entry["kept_p50_ms"], entry["kept_p99_ms"] = (
                        figures["p50_ms"],
                        figures["p99_ms"],
                    )
                entry["requests"] = len(fresh[kind]) + len(kept[kind])
                entry["rss_after_mb"] = psutil.Process(process.pid).memory_info().rss / 2**20
                entry["health_with_256_idle"] = health_with_idle_connections(port)
                entry["import_s"] = import_seconds(kind)
        finally:
            for process, _ in servers.values():
                process.kill()
                process.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT_FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5: does it run?")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve[0]](Path(args.serve[1]))
        return
    rounds, block = (2, 5) if args.quick else (args.rounds, args.block)
    results = run(rounds, block)
    print(f"CPU: {results['cpu']}; {rounds} rounds x {block} requests per candidate and kind")
    print(
        "| server | fresh conn p50 / p99 ms | kept-alive p50 / p99 ms | import s | RSS start / "
        "after MB | GET /health with 256 idle connections |"
    )
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        if kind not in results:
            continue
        r = results[kind]
        kept = f"{r['kept_p50_ms']:.2f} / {r['kept_p99_ms']:.2f}" if "kept_p50_ms" in r else "-"
        print(
            f"| {kind} | {r['fresh_p50_ms']:.2f} / {r['fresh_p99_ms']:.2f} | {kept} | "
            f"{r['import_s']:.3f} | {r['rss_start_mb']:.1f} / {r['rss_after_mb']:.1f} | "
            f"{r['health_with_256_idle']} |"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
