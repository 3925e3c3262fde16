"""One request pipeline for every protocol: auth, error mapping, metrics and logging, once.

The server speaks TF Serving's Predict (gRPC and REST) and the Open Inference Protocol
(gRPC and REST). Each handler only turns its wire format into a model call and back, and
raises :class:`~accel_widgets.serving.status.RequestError` to refuse; everything around
that lives here, so the protocols cannot drift apart in who may call, which status a
failure gets, or what ``/metrics`` counts:

* gRPC: :class:`PipelineInterceptor`, a ``grpc.ServerInterceptor`` wrapping every method of
  the two inference services (the health service passes through untouched: probes need no
  key and are not requests to count).
* HTTP: :meth:`Pipeline.run`, which ``rest.py`` calls around each route (the middleware).

A handler names the model it served with :func:`note_model`, so metrics are labelled by
model even though the pipeline runs before the request is parsed.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import grpc

from accel_widgets.serving.auth import KeyChecker
from accel_widgets.serving.metrics import Metrics
from accel_widgets.serving.protocol import INFERENCE_SERVICE, PREDICTION_SERVICE
from accel_widgets.serving.status import RequestError

log = logging.getLogger("accel_widgets.serving")

T = TypeVar("T")

#: The retired Azure client's routing header: accepted (routing is by model name), logged.
ROUTE_HEADER = "x-ms-aml-grpc-service-route"

#: Metric ``protocol`` label by gRPC service. TF Serving's keeps its historic name "grpc".
GRPC_PROTOCOLS = {PREDICTION_SERVICE: "grpc", INFERENCE_SERVICE: "v2_grpc"}

#: Methods that answer without a key: liveness/readiness, as the gRPC health service does.
PUBLIC_METHODS = frozenset(f"/{INFERENCE_SERVICE}/{name}" for name in ("ServerLive", "ServerReady"))

INTERNAL_MESSAGE = "internal server error; see the server log"

_model: contextvars.ContextVar[str] = contextvars.ContextVar("accel_widgets_model", default="-")


def note_model(name: str) -> None:
    """Label the current request's metrics with the model that served it."""
    _model.set(name)


class Pipeline:
    """Runs one request's handler between the steps every protocol shares."""

    def __init__(self, keys: KeyChecker, metrics: Metrics) -> None:
        self.keys = keys
        self.metrics = metrics

    def run(
        self,
        protocol: str,
        handler: Callable[[], T],
        *,
        authorization: str | None,
        public: bool = False,
    ) -> T | RequestError:
        """The handler's result, or the :class:`RequestError` to answer with.

        Never raises: an unexpected exception is logged with its traceback and answered
        INTERNAL without details (they may hold paths or data the caller should not see).
        """
        started = time.perf_counter()
        token = _model.set("-")
        code = "OK"
        try:
            if not public:
                self.keys.check(authorization)
            return handler()
        except RequestError as exc:
            code = exc.code
            return exc
        except Exception:
            log.exception("%s request failed unexpectedly", protocol)
            code = "INTERNAL"
            return RequestError("INTERNAL", INTERNAL_MESSAGE)
        finally:
            seconds = time.perf_counter() - started
            model = _model.get()
            _model.reset(token)
            self.metrics.observe(model, protocol, code, seconds)
            log.debug("%s %s %s %.1f ms", protocol, model, code, seconds * 1000)


class PipelineInterceptor(grpc.ServerInterceptor):
    """Wraps the inference services' unary methods (raw bytes in, raw bytes out)."""

    def __init__(self, pipeline: Pipeline, services: Collection[str] = tuple(GRPC_PROTOCOLS)):
        self.pipeline = pipeline
        self.services = frozenset(services)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        service = method[1:].split("/", 1)[0]
        if handler is None or service not in self.services or handler.unary_unary is None:
            return handler
        protocol = GRPC_PROTOCOLS.get(service, service)
        public = method in PUBLIC_METHODS
        inner = handler.unary_unary
        pipeline = self.pipeline

        def guarded(request: bytes, context: grpc.ServicerContext) -> bytes:
            authorization = None
            for key, value in context.invocation_metadata() or ():
                if key == "authorization":
                    authorization = value
                elif key == ROUTE_HEADER:
                    log.debug("route header %s", value)
            result = pipeline.run(
                protocol,
                lambda: inner(request, context),
                authorization=authorization,
                public=public,
            )
            if isinstance(result, RequestError):
                context.set_code(grpc.StatusCode[result.code])
                context.set_details(result.message)
                return b""
            return result

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
