"""Exactly which failures the scoring client retries, as a server that counts attempts sees it.

The client's retry policy is declared as gRPC service config (engine/client.py): UNAVAILABLE
only, up to 5 attempts, for Predict and GetModelMetadata; the health check never. Retrying a
code that cannot succeed (INVALID_ARGUMENT, RESOURCE_EXHAUSTED: the request is too big) or
that already used the whole deadline (DEADLINE_EXCEEDED) multiplies the load on a struggling
server for nothing. Each test here has a real gRPC server on loopback fail a call with one
status code, then count how many attempts arrived: a code added to the retried list, or
UNAVAILABLE taken out of it, changes a count.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

from accel_widgets.engine.client import PredictionClient
from accel_widgets.errors import ScoringError
from accel_widgets.serving import protocol

#: Every status a server can answer with, but OK.
FAILURES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]
RETRIED = {grpc.StatusCode.UNAVAILABLE}


class CountingServer:
    """Predict, GetModelMetadata and the health check, each failing with the queued codes
    (one per attempt) and then answering; ``attempts`` counts the calls per method."""

    def __init__(self) -> None:
        self.failures: list[grpc.StatusCode] = []
        self.attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def method(name: str, answer):
            def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
                with self._lock:
                    self.attempts[name] = self.attempts.get(name, 0) + 1
                    failure = self.failures.pop(0) if self.failures else None
                if failure is not None:
                    context.abort(failure, f"failing with {failure.name} on purpose")
                return answer().SerializeToString()

            return grpc.unary_unary_rpc_method_handler(handle)

        def metadata():
            response = protocol.GetModelMetadataResponse()
            response.model_spec.name = "counted"
            response.metadata[protocol.SIGNATURE_DEF_FIELD].Pack(protocol.SignatureDefMap())
            return response

        def health():
            return protocol.HealthCheckResponse(status=protocol.SERVING_STATUS["SERVING"])

        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    protocol.PREDICTION_SERVICE,
                    {
                        "Predict": method("Predict", protocol.PredictResponse),
                        "GetModelMetadata": method("GetModelMetadata", metadata),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    protocol.HEALTH_SERVICE, {"Check": method("Check", health)}
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def reset(self, *failures: grpc.StatusCode) -> None:
        with self._lock:
            self.failures = list(failures)
            self.attempts = {}


@pytest.fixture(scope="module")
def counting():
    server = CountingServer()
    yield server
    server.server.stop(0)


@pytest.fixture
def client(counting):
    with PredictionClient("127.0.0.1", counting.port, timeout=20) as scoring:
        yield scoring


@pytest.mark.parametrize("code", FAILURES, ids=[c.name for c in FAILURES])
def test_a_failed_predict_is_retried_only_when_unavailable(counting, client, code):
    counting.reset(code)
    if code in RETRIED:
        client.predict(protocol.PredictRequest())  # the second attempt is answered
        assert counting.attempts == {"Predict": 2}
        return
    with pytest.raises(ScoringError) as failed:
        client.predict(protocol.PredictRequest())
    assert failed.value.code == code.name
    assert f"failing with {code.name} on purpose" in str(failed.value)
    assert counting.attempts == {"Predict": 1}, f"{code.name} must not be retried"


def test_metadata_is_retried_by_the_same_policy(counting, client):
    counting.reset(grpc.StatusCode.UNAVAILABLE)
    assert client.metadata()["model"] == "counted"
    assert counting.attempts == {"GetModelMetadata": 2}
    counting.reset(grpc.StatusCode.RESOURCE_EXHAUSTED)
    with pytest.raises(ScoringError, match="too large for the service"):
        client.metadata()
    assert counting.attempts == {"GetModelMetadata": 1}


def test_unavailable_is_tried_five_times_in_all_then_reported(counting, client):
    counting.reset(*[grpc.StatusCode.UNAVAILABLE] * 6)
    with pytest.raises(ScoringError) as failed:
        client.predict(protocol.PredictRequest())
    assert failed.value.code == "UNAVAILABLE"
    assert "is it running?" in str(failed.value)
    assert counting.attempts == {"Predict": 5}


def test_the_health_check_is_never_retried(counting, client):
    """``is_ready`` must answer at once: a probe that retries hides a down server."""
    counting.reset(grpc.StatusCode.UNAVAILABLE)
    assert client.is_ready() is False
    assert counting.attempts == {"Check": 1}
    counting.reset()
    assert client.is_ready() is True
