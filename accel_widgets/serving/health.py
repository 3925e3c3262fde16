"""The standard gRPC health service (``grpc.health.v1.Health``): Check and a bounded Watch.

Kubernetes' gRPC probes, ``grpc_health_probe`` and our client's ``is_ready()`` call
``Check``; the status is NOT_SERVING until every model has loaded and warmed up, and again
from the moment a shutdown begins. The REST port's ``/healthz`` and the Open Inference
Protocol's ``ServerReady`` / ``/v2/health/ready`` read the same status.

The messages, the service definition and its registration come from ``grpcio-health-checking``
(1.85: the same protobuf major as grpcio, 55 kB, 20 ms to import; its messages live in
protobuf's default pool and ours in a private one, so the two never clash). The servicer is
ours, for what issue 22 found in the library's:

* **Blocking Watch** (its default, a generator per stream) holds a thread of the server's
  pool for as long as a stream is open, the pool Predict runs on: 8 streams, which need no
  key, silenced inference. Here Watch is *non-blocking* (gRPC's
  ``experimental_non_blocking``): it registers the stream and returns, on a 2-thread pool
  of its own (``experimental_thread_pool``), so a held stream holds no thread at all.
* Its **non-blocking** mode sends each status while holding the servicer's lock, and a send
  waits until gRPC's server thread has written it; that thread takes the same lock to forget
  a stream that ended, so a stream ending during a status change (or a shutdown) deadlocked
  the server (a test here found it). Here every send goes through one sender thread that
  holds no lock, in the order the statuses were set, and forgetting a stream never sends.
* Streams are **capped** (``MAX_WATCHES``); more are refused RESOURCE_EXHAUSTED, so a client
  opening streams in a loop cannot grow the server without end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accel_widgets.serving.protocol import INFERENCE_SERVICE, PREDICTION_SERVICE

#: The services whose status is reported: the whole server (``""``) and each protocol.
SERVICES = ("", PREDICTION_SERVICE, INFERENCE_SERVICE)
#: Threads that run Watch calls; each returns as soon as its stream is registered.
WATCH_THREADS = 2
#: Watch streams held at once; more are refused RESOURCE_EXHAUSTED.
MAX_WATCHES = 1024

_Response = health_pb2.HealthCheckResponse
_Send = Callable[[Any], None]


class _HealthServicer(health_pb2_grpc.HealthServicer):
    """Check, and a non-blocking Watch whose sends never happen under a lock."""

    def __init__(self, max_watches: int) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, int] = {}
        self._streams: dict[str, set[_Send]] = {}
        self._closing = False
        self._max_watches = max_watches
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-send")
        self._last: Future | None = None  # one sender thread: the last send is the latest

        # gRPC reads these two attributes from the method it is given, so the method is an
        # attribute of this instance (the library sets them on its class's function).
        def watch(request: Any, context: Any, send_response_callback: _Send | None = None) -> None:
            return self._watch(request, context, send_response_callback)

        watch.experimental_non_blocking = True  # type: ignore[attr-defined]
        watch.experimental_thread_pool = ThreadPoolExecutor(  # type: ignore[attr-defined]
            max_workers=WATCH_THREADS, thread_name_prefix="health-watch"
        )
        self.Watch = watch  # type: ignore[method-assign]

    def Check(self, request: Any, context: Any) -> Any:
        with self._lock:
            status = self._status.get(request.service)
        if status is None:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            return _Response()
        return _Response(status=status)

    def _watch(self, request: Any, context: Any, send: _Send | None) -> None:
        if send is None:  # a server without non-blocking support never calls it so
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Watch needs a non-blocking server")
        service = request.service
        with self._lock:
            held = sum(len(group) for group in self._streams.values())
            if held < self._max_watches:
                self._streams.setdefault(service, set()).add(send)
                status = self._status.get(service, _Response.SERVICE_UNKNOWN)
                # Queued under the lock: no later status can overtake the first one.
                self._queue(send, _Response(status=status))
        if held >= self._max_watches:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{held} health Watch streams are open, the most this server holds; use "
                "Check, or close a stream",
            )
        if not context.add_callback(lambda: self._forget(service, send)):
            self._forget(service, send)  # it ended already

    def _forget(self, service: str, send: _Send) -> None:
        """A stream ended: runs on gRPC's server thread, so it only takes the lock briefly."""
        with self._lock:
            self._streams.get(service, set()).discard(send)

    def _queue(self, send: _Send, response: Any) -> None:
        """Send on the sender thread (call with the lock held, so order is kept)."""
        self._last = self._sender.submit(send, response)

    def set(self, service: str, status: int) -> None:
        with self._lock:
            if self._closing:
                return
            self._status[service] = status
            for send in self._streams.get(service, ()):
                self._queue(send, _Response(status=status))

    def close(self, timeout: float = 5.0) -> None:
        """NOT_SERVING everywhere, then end every stream (status OK), then wait for the sends."""
        with self._lock:
            if not self._closing:
                for service in self._status:
                    self._status[service] = _Response.NOT_SERVING
                    for send in self._streams.get(service, ()):
                        self._queue(send, _Response(status=_Response.NOT_SERVING))
                self._closing = True
            for group in self._streams.values():
                for send in group:
                    self._queue(send, None)  # gRPC's callback ends the stream when given None
            last = self._last
        if last is not None:
            wait([last], timeout=timeout)


class HealthService:
    """Serving status for ``""`` (the whole server) and each protocol's service."""

    def __init__(self, max_watches: int = MAX_WATCHES) -> None:
        self._servicer = _HealthServicer(max_watches)
        self._lock = threading.Lock()
        self._serving = False
        self.set_serving(False)

    def set_serving(self, serving: bool) -> None:
        status = _Response.SERVING if serving else _Response.NOT_SERVING
        with self._lock:
            self._serving = serving
            for service in SERVICES:
                self._servicer.set(service, status)

    def close(self) -> None:
        """Say NOT_SERVING and end Watch streams, so they do not hold up a graceful stop.

        A test (test_serving_lifecycle) holds a Watch open through a shutdown to keep this
        true; tests/test_serving_hostile.py closes with streams that have just ended.
        """
        with self._lock:
            self._serving = False
        self._servicer.close()

    @property
    def serving(self) -> bool:
        with self._lock:
            return self._serving

    def add_to(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
