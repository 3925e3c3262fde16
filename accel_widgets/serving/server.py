"""The serving process: TF Serving and Open Inference Protocol over gRPC + health, REST.

Start-up order, and why:

1. Check the bind address against the auth policy: beyond loopback, refuse to start without
   an API key file unless ``--insecure-no-auth`` says so out loud.
2. Open the gRPC port (and the REST port) *before* loading models. Health says
   NOT_SERVING and Predict answers UNAVAILABLE "model 'x' is still loading", so a client
   that connects early gets a reason, not a refused connection.
3. Load and warm up every model (:class:`~accel_widgets.serving.registry.ModelRegistry`).
4. Health says SERVING, then the ready file is written atomically (temporary file +
   rename) with ``{"port", "rest_port", "pid", ...}``: whoever polls for it (the engine's
   local target, the tests) never reads half a file or a port that is not answering yet.

SIGTERM (or SIGINT): health says NOT_SERVING, both ports stop accepting, requests in flight
finish (up to ``grace_seconds``), the ready file is removed, and the process exits 0.

This module, like all of ``accel_widgets.serving``, imports neither TensorFlow nor Jupyter:
a serving container carries ONNX Runtime, gRPC (with its health service), numpy, Pillow,
simplejpeg, prometheus_client and Tornado (the HTTP port) only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import ssl
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from accel_widgets.errors import ServingError
from accel_widgets.serving.addresses import is_loopback
from accel_widgets.serving.auth import KeyChecker, load_keys
from accel_widgets.serving.config import IDLE_LOG_PREFIX, STOPPED_FILE, ServerConfig
from accel_widgets.serving.grpc_service import PredictionService
from accel_widgets.serving.health import HealthService
from accel_widgets.serving.metrics import Metrics
from accel_widgets.serving.pipeline import Pipeline, PipelineInterceptor
from accel_widgets.serving.registry import ModelRegistry
from accel_widgets.serving.rest import RestServer
from accel_widgets.serving.runtime import available_cpus
from accel_widgets.serving.v2_grpc import InferenceService

log = logging.getLogger("accel_widgets.serving")


@dataclass(frozen=True)
class ServeOptions:
    """Where and how to listen (command-line flags; the config says what to serve).

    ``rest_port=None`` turns the REST port off; ``0`` picks a free port, as ``port=0`` does
    for gRPC. The ports actually bound go into the ready file.
    """

    host: str = "127.0.0.1"
    port: int = 0
    rest_port: int | None = 0
    ready_file: Path | None = None
    insecure_no_auth: bool = False
    grace_seconds: float = 10.0
    api_keys: tuple[bytes, ...] = ()  # from the environment, in addition to the keys file
    #: Share the gRPC port with another server of this user (SO_REUSEPORT): how the engine
    #: swaps in a service's new version without refusing a client (targets/local.py).
    reuse_port: bool = False
    #: Stop after this many seconds without a scoring request (0: never). A workshop room
    #: fills up with services participants forgot; an idle one gives its memory back, says
    #: why in :data:`STOPPED_FILE` beside the ready file, and a deploy starts it again.
    idle_timeout: float = 0.0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def grpc_server_options(config: ServerConfig, reuse_port: bool = False) -> list[tuple[str, Any]]:
    """Message limits both ways, no port sharing, and keepalive pings from clients allowed.

    gRPC Python sets SO_REUSEPORT by default, which lets a second server bind a port that is
    already serving and silently split its traffic; we want "port in use" instead, unless
    ``reuse_port`` asks for the sharing (a version swap: the new server binds the port, the
    old one stops; Linux shares a port only between sockets of one user). The client pings
    every 60 s to notice a dead connection (the retired client's "stale channel"), so the
    server must accept pings more often than its 5-minute default.
    """
    limit = config.max_message_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


class Server:
    """One serving process's servers; :func:`serve` drives it from the command line."""

    def __init__(self, config: ServerConfig, options: ServeOptions) -> None:
        self.config = config
        self.options = options
        self.stopping = threading.Event()
        self.metrics = Metrics()
        self.registry = ModelRegistry(config, self.metrics)
        self.health = HealthService()
        self.keys = KeyChecker()
        self.port = 0
        self.rest: RestServer | None = None
        self._grpc: grpc.Server | None = None

    # -- start-up --------------------------------------------------------------------------

    def check_exposure(self) -> None:
        if is_loopback(self.options.host) or self.config.api_keys_file or self.options.api_keys:
            return
        if self.options.insecure_no_auth:
            log.warning(
                "serving on %s WITHOUT authentication (--insecure-no-auth): anyone who can "
                "reach this address can use the models",
                self.options.host,
            )
            return
        raise ServingError(
            f"refusing to serve on {self.options.host} without API keys: anyone on the "
            "network could use the models. Set api_keys_file in the config, bind to "
            "127.0.0.1, or pass --insecure-no-auth if that is really what you want"
        )

    def start(self) -> None:
        """Bind, load, warm up, say SERVING and write the ready file (see module docstring)."""
        self.check_exposure()
        keys = self.options.api_keys
        if self.config.api_keys_file:
            keys = keys + load_keys(self.config.api_keys_file)
        if keys:
            self.keys = KeyChecker(keys)
        self.pipeline = Pipeline(self.keys, self.metrics)
        workers = self.config.workers or max(8, 4 * available_cpus())
        self._grpc = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            options=grpc_server_options(self.config, self.options.reuse_port),
            # Auth, status codes, metrics and logging for both inference services, once.
            interceptors=(PipelineInterceptor(self.pipeline),),
        )
        # TF Serving's Predict and the Open Inference Protocol share one port (KServe
        # exposes one port per service).
        self._grpc.add_generic_rpc_handlers(
            (
                PredictionService(self.registry).handler(),
                InferenceService(self.registry, self.health).handler(),
            )
        )
        self.health.add_to(self._grpc)
        address = _address(self.options.host, self.options.port)
        try:
            if self.config.tls:
                credentials = grpc.ssl_server_credentials(
                    [(self.config.tls.key.read_bytes(), self.config.tls.cert.read_bytes())]
                )
                self.port = self._grpc.add_secure_port(address, credentials)
            else:
                self.port = self._grpc.add_insecure_port(address)
        except (RuntimeError, OSError) as exc:
            raise ServingError(f"cannot listen on {address}: {exc}") from None
        if not self.port:
            raise ServingError(f"cannot listen on {address}: the port is in use or not allowed")
        self._grpc.start()
        if self.options.rest_port is not None:
            self.rest = self._start_rest()
        log.info(
            "listening: gRPC %s%s, loading %d model(s)",
            _address(self.options.host, self.port),
            f", REST {_address(self.options.host, self.rest.port)}" if self.rest else "",
            len(self.config.models),
        )
        self.registry.load_all(should_stop=self.stopping.is_set)
        if self.stopping.is_set():
            return
        self.health.set_serving(True)
        if self.options.ready_file:
            self._write_ready_file(self.options.ready_file)
        log.info(
            "ready: models %s (default %s), auth %s, tls %s",
            ", ".join(m.name for m in self.config.models),
            self.config.default_model,
            "on" if self.keys.enabled else "off",
            "on" if self.config.tls else "off",
        )

    def _start_rest(self) -> RestServer:
        context = None
        if self.config.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.config.tls.cert), str(self.config.tls.key))
        try:
            rest = RestServer(
                self.options.host,
                self.options.rest_port or 0,
                self.registry,
                self.pipeline,
                self.health,
                # base64 makes a request a third bigger than the gRPC message it mirrors.
                max_body_bytes=self.config.max_message_bytes * 4 // 3 + 4096,
                ssl_context=context,
            )
        except OSError as exc:
            raise ServingError(
                f"cannot listen on REST port {self.options.rest_port}: {exc.strerror}"
            ) from None
        rest.start()
        return rest

    def _write_ready_file(self, path: Path) -> None:
        payload = {
            "port": self.port,
            "rest_port": self.rest.port if self.rest else None,
            "pid": os.getpid(),
            "host": self.options.host,
            "models": [m.name for m in self.config.models],
            "tls": self.config.tls is not None,
            "auth": self.keys.enabled,
            # Which runtime serves each model and the figures it was chosen by (runtime_choice).
            "runtimes": {
                name: model.runtime_info.to_dict()
                for name, model in self.registry.models.items()
                if model.runtime_info is not None
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ready-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f)
        os.replace(tmp, path)

    # -- shut-down -------------------------------------------------------------------------

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` s), clean up."""
        grace = self.options.grace_seconds if grace is None else grace
        self.stopping.set()
        self.health.close()
        done = self._grpc.stop(grace) if self._grpc else None
        if self.rest:
            self.rest.stop(grace)
        if done is not None:
            done.wait(grace + 5)
        for model in list(self.registry.models.values()):
            model.close()  # batching workers serve what is queued, then stop
        ready = self.options.ready_file
        if ready and ready.exists():
            try:
                if json.loads(ready.read_text()).get("pid") == os.getpid():
                    ready.unlink()
            except (OSError, ValueError):
                pass
        log.info("stopped")


IDLE_LOG = IDLE_LOG_PREFIX + " %.0f s (idle timeout)"


def _stop_when_idle(server: Server, options: ServeOptions) -> None:
    """Mark ``server`` stopping once it has gone ``idle_timeout`` s without a request."""
    idle = server.metrics.idle_seconds()
    if not options.idle_timeout or idle < options.idle_timeout:
        return
    log.info(IDLE_LOG, idle)
    if options.ready_file:
        note = {"reason": "idle", "idle_seconds": round(idle), "at": time.time()}
        with contextlib.suppress(OSError):
            (options.ready_file.parent / STOPPED_FILE).write_text(json.dumps(note))
    server.stopping.set()


def serve(config: ServerConfig, options: ServeOptions) -> int:
    """Run until SIGTERM or SIGINT; the exit code (0 after a clean stop, 1 on a start error)."""
    server = Server(config, options)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received: draining in-flight requests", signal.Signals(signum).name)
        server.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except ServingError as exc:
        log.error("%s", exc)
        server.stop(grace=0)
        return 1
    # Wake up now and then: Event.wait without a timeout would delay signal handling.
    while not server.stopping.wait(timeout=0.5):
        _stop_when_idle(server, options)
    server.stop()
    return 0
