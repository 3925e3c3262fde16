"""TF Serving's REST API on a second port, for curl, browsers and Prometheus.

Routes (TF Serving's shapes)::

    POST /v1/models/<name>[/versions/<v>]:predict   {"instances": [...]} -> {"predictions": [...]}
                                                    {"inputs": ...}      -> {"outputs": ...}
    GET  /v1/models/<name>[/versions/<v>]           model status
    GET  /v1/models/<name>[/versions/<v>]/metadata  signature (inputs, outputs), labels count
    GET  /metrics                                   Prometheus text (no key needed)
    GET  /healthz                                   200 once serving, 503 before and while stopping

An instance is ``{"b64": "<base64 image>"}``, a nested list of numbers (a preprocessed
tensor row), or an object with one input name as its key holding either. Errors come back
as ``{"error": "<message>"}`` with the HTTP status TF Serving uses for the same gRPC code.

The standard library's ``ThreadingHTTPServer`` is enough: the gRPC port carries the
low-latency traffic; this port is for humans and tooling, so it stays dependency-free.
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
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from accel_widgets.serving.auth import KeyChecker
from accel_widgets.serving.health import HealthService
from accel_widgets.serving.registry import ModelRegistry
from accel_widgets.serving.status import RequestError

log = logging.getLogger("accel_widgets.serving")

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?:(?P<predict>:predict)|(?P<metadata>/metadata))?$"
)


class RestServer:
    """Runs a ``ThreadingHTTPServer`` in a background thread until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: ModelRegistry,
        keys: KeyChecker,
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
                "keys": keys,
                "health": health,
                "max_body_bytes": max_body_bytes,
            },
        )
        server_class = _IPv6HTTPServer if ":" in host else ThreadingHTTPServer
        self.httpd = server_class((host, port), handler)
        # Finish in-flight requests on stop: server_close() joins non-daemon threads.
        self.httpd.daemon_threads = False
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


class _IPv6HTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    registry: ModelRegistry
    keys: KeyChecker
    health: HealthService
    max_body_bytes: int
    server_version = "accel-widgets"
    # One request per connection (HTTP/1.0): a graceful stop never waits on an idle
    # keep-alive connection.
    protocol_version = "HTTP/1.0"
    # A client that connects and then sends nothing cannot hold a connection (or a graceful
    # stop, which waits for every handler thread) for longer than this.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("rest %s %s", self.address_string(), format % args)

    # -- plumbing --------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, exc: RequestError) -> None:
        self._json(exc.http_status, {"error": exc.message})

    def _route(self) -> re.Match[str]:
        match = _MODEL_PATH.match(self.path.split("?", 1)[0])
        if match is None:
            raise RequestError(
                "NOT_FOUND",
                f"no route {self.command} {self.path}; try POST /v1/models/<name>:predict, "
                "GET /v1/models/<name>, GET /v1/models/<name>/metadata or GET /metrics",
            )
        return match

    def _model(self, match: re.Match[str]) -> Any:
        self.keys.check(self.headers.get("Authorization"))
        version = int(match["version"]) if match["version"] else None
        return self.registry.get(match["name"], version)

    # -- GET -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = self.registry.metrics.render().encode()
            self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
            return
        if path == "/healthz":
            serving = self.health.status("") == 1
            self._json(200 if serving else 503, {"status": "SERVING" if serving else "NOT_SERVING"})
            return
        try:
            match = self._route()
            if match["predict"]:
                raise RequestError("UNIMPLEMENTED", "predict takes POST with a JSON body")
            model = self._model(match)
            if match["metadata"]:
                self._json(200, _metadata(model))
            else:
                self._json(200, _status(model))
        except RequestError as exc:
            self._error(exc)

    # -- POST ------------------------------------------------------------------------------

    def do_POST(self) -> None:
        started = time.perf_counter()
        model_name = "-"
        try:
            # Read the body first, so a refusal never resets a client still sending it.
            body = self._read_body()
            match = self._route()
            if not match["predict"]:
                raise RequestError("UNIMPLEMENTED", f"POST {self.path} is not a predict route")
            model = self._model(match)
            model_name = model.name
            inputs, columnar, output_filter = _parse_predict(body, model.config.input_alias)
            outputs = self.registry.predict(model, inputs, output_filter)
            self._json(200, _predict_response(outputs, columnar))
            self.registry.observe(model_name, "rest", "OK", started)
        except RequestError as exc:
            self.registry.observe(model_name, "rest", exc.code, started)
            self._error(exc)
        except Exception:
            log.exception("REST predict failed unexpectedly")
            self.registry.observe(model_name, "rest", "INTERNAL", started)
            self._json(500, {"error": "internal server error; see the server log"})

    def _read_body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("INVALID_ARGUMENT", "send a JSON body with a Content-Length")
        if int(length) > self.max_body_bytes:
            raise RequestError(
                "RESOURCE_EXHAUSTED",
                f"the body has {int(length):,} bytes; this server takes at most "
                f"{self.max_body_bytes:,}",
            )
        try:
            return json.loads(self.rfile.read(int(length)))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError("INVALID_ARGUMENT", f"the body is not valid JSON: {exc}") from None


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
