"""The HTTP port: TF Serving's REST API and the Open Inference Protocol's, plus /metrics.

Routes::

    POST /v1/models/<name>[/versions/<v>]:predict   {"instances": [...]} -> {"predictions": [...]}
                                                    {"inputs": ...}      -> {"outputs": ...}
    GET  /v1/models/<name>[/versions/<v>]           model status
    GET  /v1/models/<name>[/versions/<v>]/metadata  signature (inputs, outputs), labels count
    GET  /v2/health/live, /v2/health/ready          Open Inference Protocol health (no key)
    GET  /v2                                        server metadata
    GET  /v2/models/<name>[/versions/<v>][/ready]   model metadata / readiness
    POST /v2/models/<name>[/versions/<v>]/infer     inference, JSON or the binary extension
    GET  /metrics                                   Prometheus text (no key needed)
    GET  /healthz                                   200 once serving, 503 before and while stopping

A TF Serving instance is ``{"b64": "<base64 image>"}``, a nested list of numbers (a
preprocessed tensor row), or an object with one input name as its key holding either. Errors
come back as ``{"error": "<message>"}`` (both protocols' shape) with the HTTP status TF
Serving uses for the same gRPC code. Each route runs inside :meth:`Pipeline.run` (auth,
status, metrics, logging), as the gRPC methods do through the interceptor.

Why the standard library's HTTP server still, with a thread pool: the serving set stays
free of an ASGI stack (uvicorn + starlette/FastAPI or aiohttp add 5+ packages to a container
that holds ONNX Runtime and gRPC only), and the measurements do not call for one: the gRPC
port carries the low-latency traffic, and in process the server's accept, parse and send
cost 0.8 ms of a request (docs/MEASUREMENTS.md). What was measured to matter, a fresh thread
per request, is replaced by a pool (:class:`_PooledHTTPServer`). ``bench/bench_protocols.py``
measures this port beside gRPC in one run. One request per
connection (HTTP/1.0) keeps a graceful stop from waiting on idle keep-alive connections.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np

from accel_widgets.serving import v2
from accel_widgets.serving.health import HealthService
from accel_widgets.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from accel_widgets.serving.pipeline import Pipeline, note_model
from accel_widgets.serving.registry import ModelRegistry
from accel_widgets.serving.status import RequestError

log = logging.getLogger("accel_widgets.serving")

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?:(?P<predict>:predict)|(?P<metadata>/metadata))?$"
)
_V2_MODEL_PATH = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
    r"(?:(?P<ready>/ready)|(?P<infer>/infer))?$"
)
#: The binary tensor data extension's header: the JSON part's length in the body.
BINARY_HEADER = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"


@dataclass
class Reply:
    """What a route answers: status, body, its content type and any extra headers."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def _json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(payload).encode())


class RestServer:
    """Runs a :class:`_PooledHTTPServer` in a background thread until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: ModelRegistry,
        pipeline: Pipeline,
        health: HealthService,
        *,
        max_body_bytes: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        handler = type(
            "Handler",
            (_Handler,),
            {
                "registry": registry,
                "pipeline": pipeline,
                "health": health,
                "max_body_bytes": max_body_bytes,
            },
        )
        server_class = _IPv6HTTPServer if ":" in host else _PooledHTTPServer
        self.httpd = server_class((host, port), handler)
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="rest-server", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, then wait for the requests in flight."""
        self.httpd.shutdown()
        self.httpd.server_close()


class _PooledHTTPServer(HTTPServer):
    """The standard library's server with a pool of handler threads instead of one per request.

    Measured (SqueezeNet, decode + model, in process, 80 interleaved calls, 2-core EPYC): a
    request handled on a fresh thread took 30.5 ms p50, on a reused one 28.6 ms. A thread per
    request (``ThreadingHTTPServer``) pays that every time; gRPC's worker pool never does.
    A slow client holds a worker for at most ``_Handler.timeout`` (10 s).
    """

    def __init__(self, address: tuple[str, int], handler: type, workers: int = 16) -> None:
        super().__init__(address, handler)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._handle, request, client_address)

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        """Close the socket, then wait for the requests in flight (a graceful stop)."""
        super().server_close()
        self._pool.shutdown(wait=True)


class _IPv6HTTPServer(_PooledHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    registry: ModelRegistry
    pipeline: Pipeline
    health: HealthService
    max_body_bytes: int
    server_version = "accel-widgets"
    # One request per connection (HTTP/1.0): a graceful stop never waits on an idle
    # keep-alive connection.
    protocol_version = "HTTP/1.0"
    # TCP_NODELAY: the response's headers and body are two writes; with Nagle's algorithm the
    # second waits for the client's (delayed) ACK of the first.
    disable_nagle_algorithm = True
    # A client that connects and then sends nothing cannot hold a connection (or a graceful
    # stop, which waits for every handler thread) for longer than this.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("rest %s %s", self.address_string(), format % args)

    # -- plumbing --------------------------------------------------------------------------

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def _through_pipeline(
        self, protocol: str, route: Callable[[], Reply], *, public: bool = False
    ) -> None:
        """Run ``route`` inside the shared pipeline and send what it answers."""
        result = self.pipeline.run(
            protocol, route, authorization=self.headers.get("Authorization"), public=public
        )
        if isinstance(result, RequestError):
            result = _json_reply({"error": result.message}, result.http_status)
        self._send(result)

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _model(self, name: str, version: int | None) -> Any:
        model = self.registry.get(name, version)
        note_model(model.name)
        return model

    # -- GET -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self._path()
        if path == "/metrics":
            self._send(Reply(200, self.registry.metrics.render().encode(), METRICS_CONTENT_TYPE))
            return
        if path == "/healthz":
            serving = self.health.serving
            status = "SERVING" if serving else "NOT_SERVING"
            self._send(_json_reply({"status": status}, 200 if serving else 503))
            return
        if path.startswith("/v2"):
            public = path in ("/v2/health/live", "/v2/health/ready")
            self._through_pipeline("v2_rest", lambda: self._v2_get(path), public=public)
            return
        self._through_pipeline("rest", lambda: self._v1_get(path))

    def _v1_get(self, path: str) -> Reply:
        match = _v1_route(self.command, path)
        if match["predict"]:
            raise RequestError("UNIMPLEMENTED", "predict takes POST with a JSON body")
        version = int(match["version"]) if match["version"] else None
        model = self._model(match["name"], version)
        return _json_reply(_metadata(model) if match["metadata"] else _status(model))

    def _v2_get(self, path: str) -> Reply:
        if path == "/v2/health/live":
            return _json_reply({"live": True})
        if path == "/v2/health/ready":
            ready = self.health.serving
            return _json_reply({"ready": ready}, 200 if ready else 503)
        if path == "/v2":
            return _json_reply(v2.server_metadata(["binary_tensor_data"]))
        match = _v2_route(self.command, path)
        if match["infer"]:
            raise RequestError("UNIMPLEMENTED", "infer takes POST with a JSON body")
        if match["ready"]:
            try:
                model = self._model(match["name"], v2.parse_version(match["version"] or ""))
            except RequestError as exc:
                if exc.code != "UNAVAILABLE":
                    raise
                return _json_reply({"name": match["name"], "ready": False}, 503)
            return _json_reply({"name": model.name, "ready": True})
        model = self._model(match["name"], v2.parse_version(match["version"] or ""))
        return _json_reply(v2.model_metadata(model))

    # -- POST ------------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = self._path()
        protocol = "v2_rest" if path.startswith("/v2") else "rest"
        route = self._v2_post if protocol == "v2_rest" else self._v1_post
        body: list[bytes] = []

        def read_then_route() -> Reply:
            # Read the body first, so a refusal never resets a client still sending it.
            body.append(self._read_body())
            return route(path, body[0])

        self._through_pipeline(protocol, read_then_route)

    def _v1_post(self, path: str, raw: bytes) -> Reply:
        match = _v1_route(self.command, path)
        if not match["predict"]:
            raise RequestError("UNIMPLEMENTED", f"POST {self.path} is not a predict route")
        version = int(match["version"]) if match["version"] else None
        model = self._model(match["name"], version)
        inputs, columnar, output_filter = _parse_predict(_json(raw), model.config.input_alias)
        # REST clients read outputs by alias (the original service had no REST API), and a
        # second key would turn TF Serving's "predictions" list into a list of objects.
        wanted = output_filter or [b.config.alias for b in model.outputs]
        outputs = self.registry.predict(model, inputs, wanted)
        return _json_reply(_predict_response(outputs, columnar))

    def _v2_post(self, path: str, raw: bytes) -> Reply:
        match = _v2_route(self.command, path)
        if not match["infer"]:
            raise RequestError("UNIMPLEMENTED", f"POST {self.path} is not an infer route")
        model = self._model(match["name"], v2.parse_version(match["version"] or ""))
        return _v2_infer(self.registry, model, raw, self.headers.get(BINARY_HEADER))

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("INVALID_ARGUMENT", "send a JSON body with a Content-Length")
        if int(length) > self.max_body_bytes:
            raise RequestError(
                "RESOURCE_EXHAUSTED",
                f"the body has {int(length):,} bytes; this server takes at most "
                f"{self.max_body_bytes:,}",
            )
        return self.rfile.read(int(length))


def _v1_route(command: str, path: str) -> re.Match[str]:
    match = _MODEL_PATH.match(path)
    if match is None:
        raise RequestError(
            "NOT_FOUND",
            f"no route {command} {path}; try POST /v1/models/<name>:predict, "
            "GET /v1/models/<name>, GET /v1/models/<name>/metadata, "
            "POST /v2/models/<name>/infer or GET /metrics",
        )
    return match


def _v2_route(command: str, path: str) -> re.Match[str]:
    match = _V2_MODEL_PATH.match(path)
    if match is None:
        raise RequestError(
            "NOT_FOUND",
            f"no route {command} {path}; the Open Inference Protocol routes are "
            "GET /v2/health/live, GET /v2/health/ready, GET /v2, GET /v2/models/<name>, "
            "GET /v2/models/<name>/ready and POST /v2/models/<name>/infer",
        )
    return match


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError("INVALID_ARGUMENT", f"the body is not valid JSON: {exc}") from None


# -- Open Inference Protocol: infer ----------------------------------------------------------


def _v2_infer(registry: ModelRegistry, model: Any, raw: bytes, header_length: str | None) -> Reply:
    """One v2 REST inference: JSON, or JSON + binary tensors (the binary data extension)."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise RequestError(
                "INVALID_ARGUMENT",
                f"{BINARY_HEADER} is {header_length!r}, but the body has {len(raw):,} bytes",
            )
        raw, binary = raw[: int(header_length)], raw[int(header_length) :]
    request = _json(raw)
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise RequestError(
            "INVALID_ARGUMENT",
            'the body must be a JSON object with "inputs": a list of {"name", "datatype", '
            '"shape", "data"}',
        )
    offset = 0
    inputs = []
    for entry in request["inputs"]:
        if not isinstance(entry, dict):
            raise RequestError("INVALID_ARGUMENT", 'each of "inputs" must be a JSON object')
        spec = v2.tensor(entry.get("name"), entry.get("datatype"), entry.get("shape"))
        size = _parameters(entry).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise RequestError(
                    "INVALID_ARGUMENT",
                    f"{spec.describe()} says binary_data_size {size!r}, but "
                    f"{len(binary) - offset:,} bytes of binary data remain",
                )
            value = v2.from_raw(model, spec, binary[offset : offset + size])
            offset += size
        elif "data" in entry:
            data = entry["data"]
            if spec.datatype == v2.BYTES:
                data = [_json_bytes(spec, item) for item in _flat(data)]
            value = v2.from_values(model, spec, data if isinstance(data, list) else [data])
        else:
            raise RequestError(
                "INVALID_ARGUMENT",
                f'{spec.describe()} has neither "data" nor a binary_data_size parameter',
            )
        inputs.append((spec, value))
    if offset != len(binary):
        raise RequestError(
            "INVALID_ARGUMENT",
            f"{len(binary) - offset:,} bytes of binary data are left over after the inputs",
        )
    requested = request.get("outputs") or []
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise RequestError("INVALID_ARGUMENT", '"outputs" must be a list of {"name": ...}')
    binary_default = bool(_parameters(request).get("binary_data_output", False))
    binary_by_name = {
        o["name"]: bool(_parameters(o).get("binary_data", binary_default)) for o in requested
    }
    outputs = v2.infer(registry, model, inputs, [o["name"] for o in requested])
    response: dict[str, Any] = {
        "model_name": model.name,
        "model_version": str(model.version),
        "outputs": [],
    }
    if isinstance(request.get("id"), str):
        response["id"] = request["id"]
    blobs = []
    for name, array in outputs:
        entry = {"name": name, "datatype": "FP32", "shape": list(array.shape)}
        if binary_by_name.get(name, binary_default):
            blob = np.ascontiguousarray(array, "<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
        response["outputs"].append(entry)
    header = json.dumps(response).encode()
    if not blobs:
        return Reply(200, header)
    return Reply(
        200,
        header + b"".join(blobs),
        "application/octet-stream",
        {BINARY_HEADER: str(len(header))},
    )


def _parameters(entry: dict[str, Any]) -> dict[str, Any]:
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError("INVALID_ARGUMENT", '"parameters" must be a JSON object')
    return parameters


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    return [leaf for item in data for leaf in _flat(item)]


def _json_bytes(spec: v2.Tensor, item: Any) -> bytes:
    """A BYTES element in JSON: a string (UTF-8) or ``{"b64": ...}`` for binary (images)."""
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, dict) and set(item) == {"b64"}:
        return _decode_instance(item)
    raise RequestError(
        "INVALID_ARGUMENT",
        f'{spec.describe()}: a BYTES element is a string or {{"b64": "<base64>"}}; images '
        "are usually sent as binary data (the binary tensor extension)",
    )


# -- TF Serving REST -------------------------------------------------------------------------


def _decode_instance(value: Any) -> bytes | Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise RequestError("INVALID_ARGUMENT", "a 'b64' value is not valid base64") from None
    return value


def _parse_predict(body: Any, alias: str) -> tuple[dict[str, Any], bool, list[str]]:
    """(inputs, columnar?, output_filter) from a TF Serving REST predict body."""
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise RequestError(
            "INVALID_ARGUMENT",
            'the body must be a JSON object with either "instances" (a list) or "inputs"',
        )
    output_filter = body.get("output_filter") or []
    if not isinstance(output_filter, list) or not all(isinstance(n, str) for n in output_filter):
        raise RequestError("INVALID_ARGUMENT", '"output_filter" must be a list of output names')
    columnar = "inputs" in body
    data = body["inputs"] if columnar else body["instances"]
    name = alias
    if columnar and isinstance(data, dict):
        if len(data) != 1:
            raise RequestError("INVALID_ARGUMENT", '"inputs" must name exactly one input')
        ((name, data),) = data.items()
    if not isinstance(data, list):
        data = [data]
    if not columnar and data and all(isinstance(i, dict) and "b64" not in i for i in data):
        names = {k for i in data for k in i}
        if len(names) != 1:
            raise RequestError("INVALID_ARGUMENT", "every instance must name the same one input")
        name = names.pop()
        data = [i[name] for i in data]
    values = [_decode_instance(v) for v in data]
    if not values:
        raise RequestError("INVALID_ARGUMENT", "no instances to score")
    if all(isinstance(v, bytes) for v in values):
        return {name: values}, columnar, output_filter
    if any(isinstance(v, (bytes, dict, str)) for v in values):
        raise RequestError(
            "INVALID_ARGUMENT",
            'mix of images and numbers: send every instance as {"b64": ...} or as numbers',
        )
    try:
        array = np.asarray(values)
    except ValueError as exc:
        raise RequestError("INVALID_ARGUMENT", f"ragged numeric instances: {exc}") from None
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise RequestError("INVALID_ARGUMENT", "numeric instances must be nested lists of numbers")
    return {name: array}, columnar, output_filter


def _predict_response(outputs: dict[str, np.ndarray], columnar: bool) -> dict[str, Any]:
    if columnar:
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    rows = len(next(iter(outputs.values())))
    return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(rows)]}


def _status(model: Any) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(model.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def _metadata(model: Any) -> dict[str, Any]:
    return {
        "model_spec": {"name": model.name, "version": str(model.version), "signature_name": ""},
        "metadata": {
            "signature_def": {"signature_def": model.signatures()},
            "precision": model.config.precision,
            "preprocessing": model.config.preprocessing.to_dict(),
            "labels": len(model.labels) if model.labels is not None else None,
        },
    }
