"""The standard gRPC health service (``grpc.health.v1.Health``), built in.

Why not the ``grpcio-health-checking`` package: it ships generated ``_pb2`` modules that
pin the protobuf version they were generated with (the problem ``protocol.py`` avoids),
and the service is twenty lines. Kubernetes' gRPC probes, ``grpc_health_probe`` and our
client's ``is_ready()`` all call ``Check``; the status is NOT_SERVING until every model has
loaded and warmed up, and again from the moment a shutdown begins.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

from accel_widgets.serving.protocol import (
    HEALTH_SERVICE,
    PREDICTION_SERVICE,
    SERVING_STATUS,
    HealthCheckRequest,
    HealthCheckResponse,
)


class HealthService:
    """Serving status for ``""`` (the whole server) and the PredictionService."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._status = dict.fromkeys(("", PREDICTION_SERVICE), SERVING_STATUS["NOT_SERVING"])
        self._closing = False

    def set_serving(self, serving: bool) -> None:
        status = SERVING_STATUS["SERVING" if serving else "NOT_SERVING"]
        with self._condition:
            for service in self._status:
                self._status[service] = status
            self._condition.notify_all()

    def close(self) -> None:
        """Say NOT_SERVING and end Watch streams, so they do not hold up a graceful stop."""
        with self._condition:
            self._closing = True
        self.set_serving(False)

    def status(self, service: str) -> int | None:
        with self._condition:
            return self._status.get(service)

    def check(self, request: Any, context: grpc.ServicerContext) -> Any:
        status = self.status(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        return HealthCheckResponse(status=status)

    def watch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        last = None
        while context.is_active():
            with self._condition:
                status = self._status.get(request.service, SERVING_STATUS["SERVICE_UNKNOWN"])
                closing = self._closing
                if status == last and not closing:
                    self._condition.wait(timeout=1.0)
                    continue
            last = status
            yield HealthCheckResponse(status=status)
            if closing:
                return

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            HEALTH_SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.check,
                    request_deserializer=HealthCheckRequest.FromString,
                    response_serializer=HealthCheckResponse.SerializeToString,
                ),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    self.watch,
                    request_deserializer=HealthCheckRequest.FromString,
                    response_serializer=HealthCheckResponse.SerializeToString,
                ),
            },
        )
