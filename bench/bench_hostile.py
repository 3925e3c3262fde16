"""The serving process under hostile use (issue 22): latency while the ports are held, memory.

One server process (``python -m accel_widgets.serving``, auth on) serves the real SqueezeNet
from the shared weights on loopback. Measured, side by side in one run:

1. **Quiet**: ``GET /healthz``, ``GET /v2/health/ready``, v2 REST infer (the JPEG in the
   binary tensor extension), gRPC health Check and gRPC Predict, each timed from the client
   (p50 / p99 / max ms), in blocks, in a shuffled order each round.
2. **With 256 idle HTTP connections held** (connected, most silent, some stopped inside their
   headers or their body): the same calls. Goal (issue 22): each answers within 100 ms.
3. **With 64 gRPC health Watch streams held** (no key needed for them): the same calls.
4. **Memory and answers**: the server's RSS before and after 2,000 requests of every kind
   (good ones and refusals: a wrong key, an unknown model, bad JSON, a wrong method, an
   unknown route ...), and the count of answers by HTTP status and gRPC code.

Usage: ``python bench/bench_hostile.py [--rounds 10] [--block 5] [--requests 2000]
[--out FILE]``; ``--quick`` checks that the bench runs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accel_widgets.engine.clients.timing import percentiles  # noqa: E402
from accel_widgets.serving import protocol  # noqa: E402
from accel_widgets.serving.tensors import make_tensor_proto  # noqa: E402

GOAL_MS = 100.0
KEY = "key-" + secrets.token_hex(16)


from bench_runtimes import cpu_description  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def weights_dir() -> Path:
    default = ROOT.parent / "shared" / "weights"
    path = Path(os.environ.get("ACCEL_WIDGETS_WEIGHTS_DIR", default))
    if not (path / "SqueezeNet_fp16.onnx").is_file():
        sys.exit(f"SqueezeNet_fp16.onnx is not in {path}; set ACCEL_WIDGETS_WEIGHTS_DIR")
    return path


def jpeg() -> bytes:
    import io

    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def start_server(folder: Path) -> tuple[subprocess.Popen, dict[str, Any]]:
    weights = weights_dir()
    keys = folder / "keys"
    keys.write_text(KEY + "\n")
    keys.chmod(0o600)
    model = {
        "name": "squeezenet",
        "version": 1,
        "onnx": str(weights / "SqueezeNet_fp16.onnx"),
        "preprocessing": {"channel_order": "BGR", "layout": "NCHW", "dtype": "float16"},
        "input_alias": "images",
        "outputs": [{"alias": "output_alias", "onnx_output": "softmaxout_1"}],
    }
    config = folder / "config.json"
    config.write_text(json.dumps({"models": [model], "api_keys_file": str(keys)}))
    ready = folder / "ready.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "accel_widgets.serving",
            "--config",
            str(config),
            "--ready-file",
            str(ready),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ready.exists():
            return process, json.loads(ready.read_text())
        if process.poll() is not None:
            sys.exit(f"the server exited with {process.returncode}")
        time.sleep(0.05)
    process.kill()
    sys.exit("the server was not ready within 120 s")


class Calls:
    """The calls timed under each load, and the mixed traffic of the memory run."""

    def __init__(self, info: dict[str, Any], image: bytes) -> None:
        self.rest_port = info["rest_port"]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{info['port']}")
        self.check = self.channel.unary_unary(protocol.HEALTH_CHECK_METHOD)
        self.predict_method = self.channel.unary_unary(protocol.PREDICT_METHOD)
        request = protocol.PredictRequest()
        request.model_spec.name = "squeezenet"
        request.inputs["images"].CopyFrom(make_tensor_proto([image]))
        self.predict_body = request.SerializeToString()
        raw = len(image).to_bytes(4, "little") + image
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "images",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ]
            }
        ).encode()
        self.infer_body, self.infer_header = header + raw, str(len(header))
        self.auth = (("authorization", f"Bearer {KEY}"),)

    def http(self, method: str, path: str, body: bytes | None = None, **headers: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=30)
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def grpc_code(self, call: Callable[..., Any], body: bytes, auth: bool = True) -> str:
        try:
            call(body, timeout=30, metadata=self.auth if auth else None)
        except grpc.RpcError as exc:
            return exc.code().name
        return "OK"

    def timed(self) -> dict[str, Callable[[], object]]:
        bearer = {"Authorization": f"Bearer {KEY}"}
        return {
            "GET /healthz": lambda: self.http("GET", "/healthz"),
            "GET /v2/health/ready": lambda: self.http("GET", "/v2/health/ready"),
            "v2 REST infer": lambda: self.http(
                "POST",
                "/v2/models/squeezenet/infer",
                self.infer_body,
                **bearer,
                **{"Inference-Header-Content-Length": self.infer_header},
            ),
            "gRPC health Check": lambda: self.grpc_code(self.check, b"", auth=False),
            "gRPC Predict": lambda: self.grpc_code(self.predict_method, self.predict_body),
        }

    def mixed(self) -> list[tuple[str, Callable[[], object]]]:
        """Good requests and refusals of every kind, labelled by port."""
        bearer = {"Authorization": f"Bearer {KEY}"}
        return [
            ("http", lambda: self.http("GET", "/healthz")),
            ("http", lambda: self.http("GET", "/metrics")),
            ("http", lambda: self.http("GET", "/v2/models/squeezenet", **bearer)),
            ("http", lambda: self.http("GET", "/v2/models/squeezenet")),  # no key: 401
            ("http", lambda: self.http("GET", "/v2/models/nosuch", **bearer)),  # 404
            ("http", lambda: self.http("PUT", "/v2/models/squeezenet/infer", b"{}", **bearer)),
            ("http", lambda: self.http("GET", "/nope", **bearer)),
            ("http", lambda: self.http("POST", "/v2/models/squeezenet/infer", b"{", **bearer)),
            (
                "http",
                lambda: self.http(
                    "POST",
                    "/v2/models/squeezenet/infer",
                    self.infer_body,
                    **bearer,
                    **{"Inference-Header-Content-Length": self.infer_header},
                ),
            ),
            ("grpc", lambda: self.grpc_code(self.predict_method, self.predict_body)),
            ("grpc", lambda: self.grpc_code(self.predict_method, self.predict_body, auth=False)),
            ("grpc", lambda: self.grpc_code(self.predict_method, b"\x0a\x03\x0a\x01x")),
            ("grpc", lambda: self.grpc_code(self.predict_method, b"garbage")),
            ("grpc", lambda: self.grpc_code(self.check, b"", auth=False)),
        ]


@contextlib.contextmanager
def idle_http(port: int, count: int = 256) -> Iterator[None]:
    held = []
    try:
        for index in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if index % 4 == 1:
                sock.sendall(b"POST /v2/models/squeezenet/infer HTTP/1.1\r\nHost: x\r\n")
            elif index % 4 == 2:
                sock.sendall(
                    b"POST /v2/models/squeezenet/infer HTTP/1.1\r\nContent-Length: 100000\r\n\r\n{"
                )
            held.append(sock)
        time.sleep(0.3)
        yield
    finally:
        for sock in held:
            sock.close()


@contextlib.contextmanager
def health_watches(target: str, count: int = 64) -> Iterator[None]:
    channel = grpc.insecure_channel(target)
    watch = channel.unary_stream(
        protocol.HEALTH_WATCH_METHOD,
        request_serializer=protocol.HealthCheckRequest.SerializeToString,
        response_deserializer=protocol.HealthCheckResponse.FromString,
    )
    streams = [watch(protocol.HealthCheckRequest(), timeout=600) for _ in range(count)]
    try:
        for stream in streams:
            next(stream)  # each stream is open and has answered
        yield
    finally:
        for stream in streams:
            stream.cancel()
        channel.close()


def timed_blocks(calls: dict[str, Callable[[], object]], rounds: int, block: int) -> dict:
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        order = list(calls)
        random.shuffle(order)
        for name in order:
            calls[name]()  # the first call of a block is not counted
            for _ in range(block):
                started = time.perf_counter()
                calls[name]()
                samples[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {**percentiles(values), "max_ms": round(max(values), 3)}
        for name, values in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a short run: does it work?")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rounds, block, requests = (
        (2, 2, 100) if args.quick else (args.rounds, args.block, args.requests)
    )
    results: dict[str, Any] = {"cpu": cpu_description()["model"], "rounds": rounds, "block": block}
    with tempfile.TemporaryDirectory() as folder:
        process, info = start_server(Path(folder))
        try:
            calls = Calls(info, jpeg())
            timed = calls.timed()
            server = psutil.Process(process.pid)
            results["quiet"] = timed_blocks(timed, rounds, block)
            with idle_http(info["rest_port"]):
                results["256 idle HTTP connections"] = timed_blocks(timed, rounds, block)
            with health_watches(f"127.0.0.1:{info['port']}"):
                results["64 health Watch streams"] = timed_blocks(timed, rounds, block)
            mixed = calls.mixed()
            results["rss_before_mb"] = round(server.memory_info().rss / 2**20, 1)
            answers: collections.Counter = collections.Counter()
            for index in range(requests):
                port, call = mixed[index % len(mixed)]
                answers[f"{port} {call()}"] += 1
            results["rss_after_mb"] = round(server.memory_info().rss / 2**20, 1)
            results["requests"] = requests
            results["answers"] = dict(sorted(answers.items()))
            results["server_alive"] = process.poll() is None
            calls.channel.close()
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"CPU: {results['cpu']}; {rounds} rounds x {block} calls per kind, auth on")
    print("| load | call | p50 ms | p99 ms | max ms | within 100 ms |")
    print("|---|---|---|---|---|---|")
    for load in ("quiet", "256 idle HTTP connections", "64 health Watch streams"):
        for name, figures in results[load].items():
            ok = "yes" if figures["max_ms"] <= GOAL_MS else "NO"
            print(
                f"| {load} | {name} | {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | "
                f"{figures['max_ms']:.2f} | {ok} |"
            )
    print(
        f"RSS {results['rss_before_mb']} MB before and {results['rss_after_mb']} MB after "
        f"{requests} mixed requests; server alive: {results['server_alive']}"
    )
    print("answers: " + ", ".join(f"{k}: {v}" for k, v in results["answers"].items()))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
