"""The standard gRPC health service (``grpc.health.v1.Health``), from ``grpcio-health-checking``.

Kubernetes' gRPC probes, ``grpc_health_probe`` and our client's ``is_ready()`` call
``Check``; the status is NOT_SERVING until every model has loaded and warmed up, and again
from the moment a shutdown begins. The REST port's ``/healthz`` and the Open Inference
Protocol's ``ServerReady`` / ``/v2/health/ready`` read the same status.

Why the library now: it used to be hand-written because the package's generated ``_pb2``
modules were expected to pin protobuf. Measured: grpcio-health-checking 1.85 requires the
same protobuf major as grpcio 1.85 (``protobuf>=7.35,<8``, what the serving set has anyway),
installs 55 kB and imports in 20 ms; its servicer also gets ``List`` and graceful-shutdown
``Watch`` handling right, which ours did by hand. Its messages live in protobuf's default
descriptor pool and ours (``protocol.py``) in a private one, so the two never clash.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from accel_widgets.serving.protocol import INFERENCE_SERVICE, PREDICTION_SERVICE

#: The services whose status is reported: the whole server (``""``) and each protocol.
SERVICES = ("", PREDICTION_SERVICE, INFERENCE_SERVICE)


#: Threads that run Watch calls (the library's ``experimental_thread_pool``). A non-blocking
#: Watch returns once it has sent the first status, so a stream holds no thread afterwards.
WATCH_THREADS = 2
#: Watch streams held at once; more are refused RESOURCE_EXHAUSTED. A held stream costs a
#: little memory and one callback each status change runs: bounded, so a client opening
#: streams in a loop cannot grow the server without end.
MAX_WATCHES = 1024


class _BoundedHealthServicer(health.HealthServicer):
    """The library's servicer with non-blocking Watch on a pool of its own, and a cap.

    Issue 22: with blocking Watch (a generator per stream) every held stream kept a thread of
    the server's pool, which Predict shares: 8 streams, which need no key, silenced inference
    on a ``max(8, 4 x CPUs)``-thread server. Non-blocking, a stream is a registered callback;
    the library's own status changes (``set``) and :meth:`HealthService.close` send on it.
    """

    def __init__(self, pool: ThreadPoolExecutor, max_watches: int) -> None:
        super().__init__(experimental_non_blocking=True, experimental_thread_pool=pool)
        self._max_watches = max_watches

    def Watch(self, request: Any, context: Any, send_response_callback: Any = None) -> Any:
        with self._lock:
            held = sum(len(group) for group in self._send_response_callbacks.values())
        if held >= self._max_watches:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{held} health Watch streams are open, the most this server holds; use "
                "Check, or close a stream",
            )
        return super().Watch(request, context, send_response_callback)


class HealthService:
    """Serving status for ``""`` (the whole server) and each protocol's service."""

    def __init__(self, max_watches: int = MAX_WATCHES) -> None:
        self._pool = ThreadPoolExecutor(max_workers=WATCH_THREADS, thread_name_prefix="watch")
        self._servicer = _BoundedHealthServicer(self._pool, max_watches)
        self._lock = threading.Lock()
        self._serving = False
        self.set_serving(False)

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else _NOT_SERVING
        with self._lock:
            self._serving = serving
            for service in SERVICES:
                self._servicer.set(service, status)

    def close(self) -> None:
        """Say NOT_SERVING and end Watch streams, so they do not hold up a graceful stop."""
        with self._lock:
            self._serving = False
        self._servicer.enter_graceful_shutdown()
        # The library has no public call to end Watch streams; its per-stream callbacks end
        # a stream (status OK) when given None, what it does itself when a client goes
        # away; the stream's own close callback then finds it already ended. A test
        # (test_serving_lifecycle) holds a Watch open through a shutdown to keep this true.
        servicer: Any = self._servicer
        streams = getattr(servicer, "_send_response_callbacks", {})  # absent: streams stay open
        with getattr(servicer, "_lock", contextlib.nullcontext()):
            callbacks = [c for group in streams.values() for c in group]
        for callback in callbacks:
            callback(None)

    @property
    def serving(self) -> bool:
        with self._lock:
            return self._serving

    def add_to(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)


_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
