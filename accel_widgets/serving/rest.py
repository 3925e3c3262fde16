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

TF Serving's ``/labels/<label>`` form of the model routes is understood and answered as TF
Serving answers an unknown label (400): this server has no version labels. A TF Serving
instance is ``{"b64": "<base64 image>"}``, a nested list of numbers (a preprocessed tensor
row), or an object with one input name as its key holding either. Every answer that is not
a success is JSON, ``{"error": "<message>"}`` (both protocols' shape), with the HTTP status
TF Serving uses for the same gRPC code, 404 for a path that is no route, 405 (with
``Allow``) for a route asked with another method, 413 for a body over the limit. Each route
runs inside :meth:`Pipeline.run` (auth, status, metrics, logging), as the gRPC methods do
through the interceptor; no client input can make it answer 500 (tests/test_serving_http.py
and the fuzz tests hold it to that).

**Why Tornado** (issue 22; figures in docs/MEASUREMENTS.md, "The HTTP port under hostile
use"): the standard library's server gave each connection a pool thread from ``accept``
on, so 16 idle connections held the whole port, health included, and a TLS handshake ran
inside ``accept`` on the serving thread with no time limit. Connection handling, time limits
and HTTP errors belong to a well-kept server. Tornado's ``HTTPServer`` reads requests on one
event loop thread: an idle, slow or silent client holds a socket and nothing else; it closes
a connection whose headers (and, with TLS, the handshake before them) take longer than
``HEADER_SECONDS`` or whose body takes longer than ``BODY_SECONDS``; and it is one wheel
with no dependencies (0.5 MB, already in every Jupyter install), where aiohttp brings nine
more packages (3.2 MB of wheels) and lacks a header time limit, and uvicorn needs an ASGI
layer and measured 44 ms per kept-alive request as set up here (a write/ACK stall, not
tuned away).
Only once a request is complete does its work go to a thread pool (``WORKERS`` threads):
inference never waits behind a client that is still sending. Health, readiness and
``/metrics`` are answered on the loop itself, so they answer even while every inference
thread is busy. ``bench/bench_http_servers.py`` measures the candidates side by side.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import re
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

from accel_widgets.serving import v2
from accel_widgets.serving.health import HealthService
from accel_widgets.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from accel_widgets.serving.pipeline import Pipeline, note_model
from accel_widgets.serving.registry import ModelRegistry
from accel_widgets.serving.status import RequestError, echo

log = logging.getLogger("accel_widgets.serving")

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<predict>:predict)|(?P<metadata>/metadata))?$"
)
_V2_MODEL_PATH = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
    r"(?:(?P<ready>/ready)|(?P<infer>/infer))?$"
)
#: Paths answered without a key, as Kubernetes probes send none.
_PUBLIC_V2 = ("/v2/health/live", "/v2/health/ready")
_GET_ONLY = ("/metrics", "/healthz", "/v2", *_PUBLIC_V2)
#: The binary tensor data extension's header: the JSON part's length in the body.
BINARY_HEADER = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"

#: A connection must deliver its request headers (after the TLS handshake, when TLS is on)
#: within this many seconds of connecting or of its previous answer, else it is closed:
#: the standard library's server waited as long for each connection, but on a pool thread.
HEADER_SECONDS = 10.0
#: And its whole body within this many: 16 MB (the default limit) at 3 Mbit/s.
BODY_SECONDS = 60.0
#: Threads that run complete requests (the model); connections do not hold them.
WORKERS = 16
#: A body declared above the limit is read and dropped, then answered 413 in JSON: a client
#: such as http.client sends its whole body before it reads, and closing on unread data
#: resets the connection, so the client would see "connection reset" instead of the 413.
#: Past this many times the limit, the 413 is sent at once and the connection closed.
DRAIN_FACTOR = 4


@dataclass
class Reply:
    """What a route answers: status, body, its content type and any extra headers."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def _json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(payload).encode())


def _error_reply(error: RequestError) -> Reply:
    return _json_reply({"error": error.message}, error.http_status)


class RestServer:
    """Tornado's HTTP server on an event loop in a background thread, until :meth:`stop`.

    The socket is bound here, so a port in use raises :class:`OSError` at once.
    """

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
        workers: int = WORKERS,
        header_seconds: float = HEADER_SECONDS,
        body_seconds: float = BODY_SECONDS,
    ) -> None:
        self._sockets = tornado.netutil.bind_sockets(port, host)
        self.port: int = self._sockets[0].getsockname()[1]
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")
        self._routes = _Routes(registry, health)
        self._front = _Front(self._routes, pipeline, health, registry, self._pool, max_body_bytes)
        self._options = {
            "ssl_options": ssl_context,
            "idle_connection_timeout": header_seconds,
            "body_timeout": body_seconds,
            "max_body_size": max_body_bytes,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: tornado.httpserver.HTTPServer | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rest-server", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._done = asyncio.Event()
        app = tornado.web.Application(
            [(r".*", _Handler, {"front": self._front})],
            log_function=_log_request,
            compress_response=False,
        )
        self._http = tornado.httpserver.HTTPServer(app, **self._options)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        assert self._http is not None
        self._http.add_sockets(self._sockets)
        self._started.set()
        await self._done.wait()

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let the requests in flight finish (up to ``grace`` s), close."""
        loop = self._loop
        if loop is None or not self._thread.is_alive():
            for sock in self._sockets:
                sock.close()
            return
        future = asyncio.run_coroutine_threadsafe(self._drain(grace), loop)
        try:
            future.result(timeout=grace + 10)
        except Exception:
            log.exception("the REST port did not stop cleanly")
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _drain(self, grace: float) -> None:
        assert self._http is not None and self._loop is not None
        self._http.stop()  # the listening sockets close; no new connection is accepted
        deadline = self._loop.time() + grace
        while self._front.active and self._loop.time() < deadline:
            await asyncio.sleep(0.02)
        try:
            await asyncio.wait_for(self._http.close_all_connections(), timeout=5)
        except asyncio.TimeoutError:
            log.warning("REST connections still open after the grace period; closing anyway")
        self._done.set()


def _log_request(handler: tornado.web.RequestHandler) -> None:
    request = handler.request
    log.debug(
        "rest %s %s %s %d %.1f ms",
        request.remote_ip,
        request.method,
        echo(request.path),
        handler.get_status(),
        request.request_time() * 1000,
    )


@dataclass
class _Front:
    """What every connection's handler shares (set once; ``active`` only on the loop)."""

    routes: _Routes
    pipeline: Pipeline
    health: HealthService
    registry: ModelRegistry
    pool: ThreadPoolExecutor
    max_body_bytes: int
    active: int = 0


def _allowed_methods(path: str) -> tuple[str, ...] | None:
    """The methods a path takes, or None for a path that is no route."""
    if path in _GET_ONLY:
        return ("GET",)
    match = _MODEL_PATH.match(path)
    if match is not None:
        return ("POST",) if match["predict"] else ("GET",)
    match = _V2_MODEL_PATH.match(path)
    if match is not None:
        return ("POST",) if match["infer"] else ("GET",)
    return None


@tornado.web.stream_request_body
class _Handler(tornado.web.RequestHandler):
    """Every request, whatever its method or path: the routes answer in JSON.

    The body is streamed in (``data_received``) so that its size is checked before it is
    read, and a body over the limit is dropped instead of kept.
    """

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")

    def initialize(self, front: _Front) -> None:
        self.front = front
        self._chunks: list[bytes] = []
        self._received = 0
        self._too_large: int | None = None
        self._counted = False

    def set_default_headers(self) -> None:
        self.set_header("Server", "accel-widgets")

    def compute_etag(self) -> None:
        return None  # answers are computed per request; hashing them would be wasted work

    # -- the request's life -----------------------------------------------------------------

    def prepare(self) -> None:
        self.front.active += 1
        self._counted = True
        length = self.request.headers.get("Content-Length", "")
        limit = self.front.max_body_bytes
        if "chunked" in self.request.headers.get("Transfer-Encoding", "").lower():
            # No length to check first: data_received counts, and drops past the limit.
            self.request.connection.set_max_body_size(limit * DRAIN_FACTOR)  # type: ignore[union-attr]
        elif length.isdigit() and int(length) > limit:
            self._too_large = int(length)
            if int(length) > limit * DRAIN_FACTOR:
                self.set_header("Connection", "close")
                self._send(self._refusal(self._body_error()))
                return
            self.request.connection.set_max_body_size(int(length))  # type: ignore[union-attr]

    def data_received(self, chunk: bytes) -> None:
        if self._too_large is not None:
            return
        self._received += len(chunk)
        if self._received > self.front.max_body_bytes:  # a chunked body with no length
            self._too_large = self._received
            self._chunks.clear()
            return
        self._chunks.append(chunk)

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.front.active -= 1

    # -- answers ----------------------------------------------------------------------------

    async def get(self) -> None:
        await self._answer()

    post = put = delete = patch = head = options = get

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Tornado's own refusals (an unknown method ...) in JSON too, never an HTML page."""
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(json.dumps({"error": f"{status_code} {self._reason}"}))

    def _send(self, reply: Reply) -> None:
        self.set_status(reply.status)
        self.set_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.set_header(name, value)
        # A client that went away has nothing more to be told.
        with contextlib.suppress(tornado.iostream.StreamClosedError):
            self.finish(reply.body)

    def _body_error(self) -> RequestError:
        return RequestError(
            "RESOURCE_EXHAUSTED",
            f"the body has {self._too_large:,} bytes; this server takes at most "
            f"{self.front.max_body_bytes:,}",
        )

    def _refusal(self, error: RequestError) -> Reply:
        """``error`` through the pipeline (auth first, then counted), as a JSON reply."""
        protocol = "v2_rest" if self.request.path.startswith("/v2") else "rest"

        def refuse() -> Reply:
            raise error

        result = self.front.pipeline.run(
            protocol, refuse, authorization=self.request.headers.get("Authorization")
        )
        return _error_reply(result) if isinstance(result, RequestError) else result

    async def _answer(self) -> None:
        front = self.front
        method, path = self.request.method or "", self.request.path
        if self._too_large is not None:
            self._send(self._refusal(self._body_error()))
            return
        if method == "GET" and path == "/metrics":
            self._send(Reply(200, front.registry.metrics.render().encode(), METRICS_CONTENT_TYPE))
            return
        if method == "GET" and path == "/healthz":
            serving = front.health.serving
            status = "SERVING" if serving else "NOT_SERVING"
            self._send(_json_reply({"status": status}, 200 if serving else 503))
            return
        protocol = "v2_rest" if path.startswith("/v2") else "rest"
        authorization = self.request.headers.get("Authorization")
        allowed = _allowed_methods(path)
        if allowed is not None and method not in allowed:
            error = RequestError(
                "UNIMPLEMENTED",
                f"{method} is not allowed on {echo(path)}; it takes {' or '.join(allowed)}",
                http_status=405,
            )
            reply = self._refusal(error)
            if reply.status == 405:
                reply.headers["Allow"] = ", ".join(allowed)
            self._send(reply)
            return
        if method == "GET":
            # On the loop: cheap, and health must answer while every worker thread is busy.
            public = path in _PUBLIC_V2
            route = functools.partial(front.routes.get, method, path)
            result = front.pipeline.run(protocol, route, authorization=authorization, public=public)
        elif method == "POST":
            body = b"".join(self._chunks)
            self._chunks = []
            route = functools.partial(front.routes.post, method, path, body, self.request.headers)
            run = functools.partial(
                front.pipeline.run, protocol, route, authorization=authorization
            )
            try:
                result = await asyncio.get_running_loop().run_in_executor(front.pool, run)
            except RuntimeError:  # the pool is shut down: the server is stopping
                result = RequestError("UNAVAILABLE", "the server is stopping; retry elsewhere")
        else:
            route = functools.partial(front.routes.unknown, method, path)
            result = front.pipeline.run(protocol, route, authorization=authorization)
        self._send(_error_reply(result) if isinstance(result, RequestError) else result)


class _Routes:
    """What each route answers, whatever server carries the bytes (plain, testable code)."""

    def __init__(self, registry: ModelRegistry, health: HealthService) -> None:
        self.registry = registry
        self.health = health

    def _model(self, name: str, version: int | None) -> Any:
        model = self.registry.get(name, version)
        note_model(model.name)
        return model

    def unknown(self, method: str, path: str) -> Reply:
        """A method other than GET or POST on a path that is no route: NOT_FOUND, naming the
        routes there are (a route asked with another method was answered 405 before)."""
        (_v2_route if path.startswith("/v2") else _v1_route)(method, path)
        raise RequestError("NOT_FOUND", f"no route {method} {echo(path)}")  # pragma: no cover

    # -- GET -------------------------------------------------------------------------------

    def get(self, method: str, path: str) -> Reply:
        if path.startswith("/v2"):
            return self._v2_get(method, path)
        return self._v1_get(method, path)

    def _v1_get(self, method: str, path: str) -> Reply:
        match = _v1_route(method, path)
        model = self._model(match["name"], _v1_version(match))
        return _json_reply(_metadata(model) if match["metadata"] else _status(model))

    def _v2_get(self, method: str, path: str) -> Reply:
        if path == "/v2/health/live":
            return _json_reply({"live": True})
        if path == "/v2/health/ready":
            ready = self.health.serving
            return _json_reply({"ready": ready}, 200 if ready else 503)
        if path == "/v2":
            return _json_reply(v2.server_metadata(["binary_tensor_data"]))
        match = _v2_route(method, path)
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

    def post(self, method: str, path: str, raw: bytes, headers: Any) -> Reply:
        v2_route = path.startswith("/v2")
        match = _v2_route(method, path) if v2_route else _v1_route(method, path)
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            raise RequestError("INVALID_ARGUMENT", "send a JSON body with a Content-Length")
        if v2_route:
            model = self._model(match["name"], v2.parse_version(match["version"] or ""))
            lengths = headers.get_list(BINARY_HEADER)
            if len(lengths) > 1:
                raise RequestError(
                    "INVALID_ARGUMENT",
                    f"{BINARY_HEADER} is sent {len(lengths)} times; send it once",
                )
            return _v2_infer(self.registry, model, raw, lengths[0] if lengths else None)
        model = self._model(match["name"], _v1_version(match))
        inputs, columnar, output_filter = _parse_predict(_json(raw), model.config.input_alias)
        # REST clients read outputs by alias (the original service had no REST API), and a
        # second key would turn TF Serving's "predictions" list into a list of objects.
        wanted = output_filter or [b.config.alias for b in model.outputs]
        outputs = self.registry.predict(model, inputs, wanted)
        return _json_reply(_predict_response(outputs, columnar))


def _v1_version(match: re.Match[str]) -> int | None:
    """The path's version; a label is refused as TF Serving refuses one it does not know."""
    if match["label"]:
        raise RequestError(
            "INVALID_ARGUMENT",
            f"Unrecognized servable version label: {echo(match['label'])}; this server has no "
            "version labels: ask for /versions/<number>, or leave it out",
        )
    return int(match["version"]) if match["version"] else None


def _v1_route(command: str, path: str) -> re.Match[str]:
    match = _MODEL_PATH.match(path)
    if match is None:
        raise RequestError(
            "NOT_FOUND",
            f"no route {command} {echo(path)}; try POST /v1/models/<name>:predict, "
            "GET /v1/models/<name>, GET /v1/models/<name>/metadata, "
            "POST /v2/models/<name>/infer or GET /metrics",
        )
    return match


def _v2_route(command: str, path: str) -> re.Match[str]:
    match = _V2_MODEL_PATH.match(path)
    if match is None:
        raise RequestError(
            "NOT_FOUND",
            f"no route {command} {echo(path)}; the Open Inference Protocol routes are "
            "GET /v2/health/live, GET /v2/health/ready, GET /v2, GET /v2/models/<name>, "
            "GET /v2/models/<name>/ready and POST /v2/models/<name>/infer",
        )
    return match


def _json(raw: bytes) -> Any:
    """The body as JSON, refusing what JSON does not allow but Python's parser takes.

    ``NaN`` and ``Infinity`` are not JSON; a number too big for a float (``1e400``) parses as
    infinity and is refused where numbers become a tensor (``finite=True``). Nesting deeper
    than the parser's recursion limit is refused here rather than answered 500.
    """
    try:
        return json.loads(raw, parse_constant=_not_a_json_number)
    except RecursionError:
        raise RequestError(
            "INVALID_ARGUMENT", "the body's JSON is nested too deeply to read"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(
            "INVALID_ARGUMENT", f"the body is not valid JSON: {echo(str(exc))}"
        ) from None


def _not_a_json_number(token: str) -> Any:
    raise RequestError(
        "INVALID_ARGUMENT",
        f"the body holds {token}, which is not a JSON number; send finite numbers",
    )


# -- Open Inference Protocol: infer ----------------------------------------------------------


def _v2_infer(registry: ModelRegistry, model: Any, raw: bytes, header_length: str | None) -> Reply:
    """One v2 REST inference: JSON, or JSON + binary tensors (the binary data extension)."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise RequestError(
                "INVALID_ARGUMENT",
                f"{BINARY_HEADER} is {echo(repr(header_length))}, but the body has "
                f"{len(raw):,} bytes",
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
        if size is not None and "data" in entry:
            raise RequestError(
                "INVALID_ARGUMENT",
                f'{spec.describe()} has both "data" and a binary_data_size parameter: send '
                "its data one way only",
            )
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise RequestError(
                    "INVALID_ARGUMENT",
                    f"{spec.describe()} says binary_data_size {echo(repr(size))}, but "
                    f"{len(binary) - offset:,} bytes of binary data remain",
                )
            value = v2.from_raw(model, spec, binary[offset : offset + size])
            offset += size
        elif "data" in entry:
            data = entry["data"]
            if spec.datatype == v2.BYTES:
                data = [_json_bytes(spec, item) for item in _flat(data)]
            value = v2.from_values(
                model, spec, data if isinstance(data, list) else [data], finite=True
            )
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
    return list(v2.flatten(data)) if isinstance(data, list) else [data]


def _json_bytes(spec: v2.Tensor, item: Any) -> bytes:
    """A BYTES element in JSON: a string (UTF-8) or ``{"b64": ...}`` for binary (images)."""
    if isinstance(item, str):
        try:
            return item.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON, not UTF-8
            raise RequestError(
                "INVALID_ARGUMENT",
                f"{spec.describe()}: a BYTES string is not valid Unicode text (a lone "
                'surrogate); send binary data as {"b64": "<base64>"}',
            ) from None
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
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestError(
            "INVALID_ARGUMENT",
            "numeric instances hold a number too big for a float (such as 1e400); JSON "
            "numbers must be finite",
        )
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
