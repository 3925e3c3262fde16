"""Exactly which failures the scoring client retries, as a server that counts attempts sees it.

The client's retry policy is declared as gRPC service config (engine/clients/grpc_client.py):
UNAVAILABLE
only, up to 5 attempts, for Predict and GetModelMetadata; the health check never. Retrying a
code that cannot succeed (INVALID_ARGUMENT, RESOURCE_EXHAUSTED: the request is too big) or
that already used the whole deadline (DEADLINE_EXCEEDED) multiplies the load on a struggling
server for nothing. Each test here has a real gRPC server on loopback fail a call with one
status code, then count how many attempts arrived: a code added to the retried list, or
UNAVAILABLE taken out of it, changes a count.
"""

from __future__ import annotations

import io
import threading
from concurrent import futures
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from PIL import Image

from accel_widgets.engine.clients.grpc_client import PredictionClient, client_from_service
from accel_widgets.engine.targets.base import free_port
from accel_widgets.errors import ScoringError
from accel_widgets.serving import protocol
from accel_widgets.serving.tensors import make_tensor_proto

#: Every status a server can answer with, but OK.
FAILURES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]
#: UNAVAILABLE, and CANCELLED sent by a server that is shutting down (a version swap:
#: engine/clients/grpc_client.py); a cancel by this client is never retried (gRPC retries only
#: statuses a server sent).
RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}


class CountingServer:
    """Predict, GetModelMetadata and the health check, each failing with the queued codes
    (one per attempt) and then answering; ``attempts`` counts the calls per method."""

    def __init__(self, health: bool = True) -> None:
        self.failures: list[grpc.StatusCode] = []
        self.attempts: dict[str, int] = {}
        self.answer_bytes = 0  # Predict answers a tensor_content of this many bytes
        self._lock = threading.Lock()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )

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

        def health_answer():
            return protocol.HealthCheckResponse(status=protocol.SERVING_STATUS["SERVING"])

        handlers = [
            grpc.method_handlers_generic_handler(
                protocol.PREDICTION_SERVICE,
                {
                    "Predict": method("Predict", self._predict_answer),
                    "GetModelMetadata": method("GetModelMetadata", metadata),
                },
            )
        ]
        if health:
            handlers.append(
                grpc.method_handlers_generic_handler(
                    protocol.HEALTH_SERVICE, {"Check": method("Check", health_answer)}
                )
            )
        self.server.add_generic_rpc_handlers(tuple(handlers))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _predict_answer(self) -> protocol.PredictResponse:
        response = protocol.PredictResponse()
        if self.answer_bytes:
            tensor = response.outputs["big"]
            tensor.dtype = protocol.DATA_TYPES["DT_UINT8"]
            tensor.tensor_shape.dim.add(size=self.answer_bytes)
            tensor.tensor_content = b"\1" * self.answer_bytes
        return response

    def reset(self, *failures: grpc.StatusCode) -> None:
        with self._lock:
            self.failures = list(failures)
            self.attempts = {}
            self.answer_bytes = 0


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
def test_a_failed_predict_is_retried_only_when_unavailable_or_cancelled_by_the_server(
    counting, client, code
):
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


# -- the channel the client opens ------------------------------------------------------------


def _big_request(megabytes: float) -> protocol.PredictRequest:
    request = protocol.PredictRequest()
    request.inputs["images"].CopyFrom(make_tensor_proto(b"\xff" * int(megabytes * 2**20)))
    return request


def test_a_photo_sized_request_is_still_retried(counting, client):
    """gRPC retries only what it still holds: 1 MB is above its 256 KiB default buffer."""
    counting.reset(grpc.StatusCode.UNAVAILABLE)
    client.predict(_big_request(1.0))
    assert counting.attempts == {"Predict": 2}


def test_answers_up_to_the_message_limit_arrive_and_bigger_ones_say_why(counting):
    counting.reset()
    counting.answer_bytes = 6 * 2**20  # above gRPC's 4 MB default, below our 64 MB
    with PredictionClient("127.0.0.1", counting.port, timeout=20) as client:
        response = client.predict(protocol.PredictRequest())
    assert len(response.outputs["big"].tensor_content) == 6 * 2**20
    counting.answer_bytes = 2 * 2**20
    with PredictionClient("127.0.0.1", counting.port, max_message_mb=1) as small:
        with pytest.raises(ScoringError) as refused:
            small.predict(protocol.PredictRequest())
        assert refused.value.code == "RESOURCE_EXHAUSTED"
        with pytest.raises(ScoringError) as refused:
            small.predict(_big_request(1.5))
        assert refused.value.code == "RESOURCE_EXHAUSTED"


def test_replicas_share_the_calls_round_robin():
    first, second = CountingServer(), CountingServer()
    try:
        service = SimpleNamespace(
            address="127.0.0.1",
            port=first.port,
            key=None,
            name="svc",
            use_ssl=False,
            info={"replicas": [f"127.0.0.1:{second.port}"]},
        )
        with client_from_service(service) as client:
            assert client.target == f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}"
            for _ in range(8):
                client.predict(protocol.PredictRequest())
        assert first.attempts["Predict"] >= 2 and second.attempts["Predict"] >= 2
        assert first.attempts["Predict"] + second.attempts["Predict"] == 8
    finally:
        first.server.stop(0)
        second.server.stop(0)


def test_a_dns_name_is_spread_over_what_it_resolves_to(counting):
    counting.reset()
    service = SimpleNamespace(
        address="localhost",
        port=counting.port,
        key=None,
        name=None,
        use_ssl=False,
        info={"round_robin": True},
    )
    with client_from_service(service) as client:
        assert client.target == f"dns:///localhost:{counting.port}"
        client.predict(protocol.PredictRequest())
    assert counting.attempts == {"Predict": 1}
    with pytest.raises(ValueError) as refused:
        PredictionClient("127.0.0.1", 1, replicas=["[::1]:2"])
    assert str(refused.value) == "replicas: use IPv4 addresses or one DNS name with round_robin"


def test_addresses_in_every_form():
    with PredictionClient("[::1]:8500") as v6:
        assert (v6.address, v6.port, v6.target) == ("::1", 8500, "[::1]:8500")
    with PredictionClient("::1", 8500) as v6:
        assert v6.target == "[::1]:8500"
    with PredictionClient("example.org", "9000") as named:
        assert (named.port, named.target) == (9000, "example.org:9000")
    for address in ("localhost:http", "localhost:"):
        with pytest.raises(ValueError) as refused:
            PredictionClient(address)
        assert str(refused.value) == f"no port in address {address!r}; use 'host:port' or port="
    with pytest.raises(ValueError, match="address is empty"):
        PredictionClient("", 1)


def test_the_client_says_where_it_goes_and_never_its_key():
    with PredictionClient("127.0.0.1", 8500) as plain:
        assert repr(plain) == "PredictionClient(127.0.0.1:8500, plaintext, no key)"
    with PredictionClient("127.0.0.1", 8500, use_ssl=True, access_token="k-9") as keyed:
        assert repr(keyed) == "PredictionClient(127.0.0.1:8500, tls, with key)"


def test_a_rest_only_service_gets_the_rest_client():
    from accel_widgets.engine.clients.rest_client import RestPredictionClient

    service = SimpleNamespace(
        address="127.0.0.1",
        port=1,
        key="k-1",
        name="svc",
        use_ssl=True,
        info={"protocol": "rest", "scoring_uri": "http://127.0.0.1:8501/score"},
    )
    client = client_from_service(service, timeout=3.0)
    assert isinstance(client, RestPredictionClient)
    assert (client.url, client.key, client.timeout) == ("http://127.0.0.1:8501/score", "k-1", 3.0)
    grpc_service = SimpleNamespace(**{**vars(service), "info": {}})
    with client_from_service(grpc_service, timeout=4.0) as plain:
        assert (plain.use_ssl, plain.access_token, plain.service_name, plain.timeout) == (
            True,
            "k-1",
            "svc",
            4.0,
        )


# -- scoring a real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """The real server in-process with the tiny colour model, TLS on (tests/pinned_support.py)."""
    from pinned_support import colour_config, inprocess_server
    from serving_fixtures import self_signed_certificate

    folder = tmp_path_factory.mktemp("pinned-client")
    cert, key = self_signed_certificate(folder)
    config = colour_config(folder, tls={"cert": str(cert), "key": str(key)})
    with inprocess_server(config) as server:
        yield server, cert


def _tls_client(colours, **options) -> PredictionClient:
    server, cert = colours
    return PredictionClient(
        "127.0.0.1", server.port, use_ssl=True, root_certificates=str(cert), **options
    )


def test_tls_with_a_certificate_file_given_by_path(colours):
    from pinned_support import png

    server, cert = colours
    for certificate in (str(cert), cert, cert.read_bytes()):
        with PredictionClient(
            "127.0.0.1", server.port, use_ssl=True, root_certificates=certificate
        ) as client:
            assert int(np.argmax(client.score_image(png((0, 255, 0))))) == 1


def test_every_way_of_sending_a_picture_scores_the_same(colours, tmp_path):
    from pinned_support import png

    green = np.zeros((8, 8, 3), np.uint8)
    green[..., 1] = 255
    path = tmp_path / "green.png"
    path.write_bytes(png((0, 255, 0)))
    with _tls_client(colours) as client:
        scores = [
            client.score_file(path),
            client.score_file(str(path), model_name="colours", outputs="output_alias"),
            client.score_image(green),
            client.score_image(Image.fromarray(green)),
            client.score_image(Image.fromarray(green).convert("P")),
            client.score_image(Image.fromarray(green).convert("CMYK")),
            client.score_image(path.read_bytes(), input_name="Placeholder:0"),
        ]
        for one in scores:
            assert one.shape == (10,) and int(np.argmax(one)) == 1
            np.testing.assert_allclose(one, scores[0], atol=1e-6)
        pixels = np.zeros((2, 224, 224, 3), np.float32)
        pixels[0, ..., 0] = pixels[1, ..., 2] = 255
        batch = client.score_numpy_array(pixels, input_name="pixels", outputs=["output_alias"])
        assert batch.shape == (2, 10) and np.argmax(batch, axis=1).tolist() == [0, 2]
        both = client.score_image(green, outputs=["output_alias", "probs:0"])
        assert sorted(both) == ["output_alias", "probs:0"]
        np.testing.assert_array_equal(both["output_alias"], both["probs:0"])


def test_a_filterless_answer_is_keyed_by_alias_only(colours):
    """The server answers under the alias and the original graph name; the client keeps one."""
    from pinned_support import png

    with _tls_client(colours) as client:
        request = protocol.PredictRequest()
        request.inputs["images"].CopyFrom(make_tensor_proto(png()))
        assert sorted(client.predict(request).outputs) == ["output_alias", "probs:0"]
        assert isinstance(client.score_image(png()), np.ndarray)


def test_readiness_follows_the_health_service(colours):
    server, _ = colours
    with _tls_client(colours) as client:
        assert client.is_ready() is True
        server.health.set_serving(False)
        try:
            assert client.is_ready() is False
        finally:
            server.health.set_serving(True)
    with PredictionClient("127.0.0.1", free_port()) as nobody:
        assert nobody.is_ready(timeout=0.5) is False


def test_a_server_without_health_is_ready_only_if_its_metadata_answers(counting):
    """TF Serving itself has no health service: metadata stands in for it."""
    without = CountingServer(health=False)
    try:
        with PredictionClient("127.0.0.1", without.port) as client:
            assert client.is_ready() is True
            without.reset(grpc.StatusCode.NOT_FOUND)
            assert client.is_ready() is False
    finally:
        without.server.stop(0)


def test_pictures_too_big_for_a_png_go_as_a_jpeg_and_odd_inputs_are_refused():
    from accel_widgets.engine.clients.grpc_client import encode_image

    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    assert encode_image(noise).startswith(b"\x89PNG")
    small = encode_image(noise, max_bytes=1000)
    assert small.startswith(b"\xff\xd8")
    decoded = np.asarray(Image.open(io.BytesIO(small)))
    assert decoded.shape == (64, 64, 3)
    grey = encode_image(noise[..., 0])
    assert Image.open(io.BytesIO(grey)).mode == "L"
    rgba = encode_image(Image.fromarray(noise).convert("RGBA"))
    assert Image.open(io.BytesIO(rgba)).mode == "RGBA"
    assert encode_image(bytearray(b"abc")) == b"abc"
    with pytest.raises(ValueError) as refused:
        encode_image(np.zeros((1, 8, 8, 3), np.uint8))
    assert str(refused.value) == (
        "score_image takes an H x W x 3 uint8 picture; got shape (1, 8, 8, 3) dtype uint8 (use "
        "score_numpy_array for a preprocessed tensor)"
    )
    with pytest.raises(TypeError) as refused:
        encode_image([1, 2, 3])
    assert str(refused.value) == "score_image takes bytes, a PIL image or a uint8 array; got list"


def test_score_batch_reports_each_file_by_name(colours, tmp_path):
    from pinned_support import png

    from accel_widgets.progress import EventLog

    paths = []
    for name in ("a.png", "b.png"):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(png())
    events = EventLog()
    with _tls_client(colours) as client:
        results = client.score_batch(paths, progress=events, outputs="output_alias")
        assert len(results) == 2 and results[0].shape == (10,)
        assert [(e.fraction, e.message) for e in events] == [
            (0.0, "scoring 2 image(s)"),
            (0.5, "scored a.png"),
            (1.0, "scored b.png"),
        ]
        empty = EventLog()
        assert client.score_batch([], progress=empty) == []
        assert [(e.fraction, e.message) for e in empty] == [(1.0, "scoring 0 image(s)")]


def test_an_error_without_a_status_is_unknown_and_keeps_its_words():
    client = PredictionClient("127.0.0.1", 1)
    try:

        class Odd(grpc.RpcError):
            def __str__(self) -> str:
                return "odd failure"

        def fail(request, timeout, metadata):
            raise Odd()

        client.stub.Predict = fail
        with pytest.raises(ScoringError) as refused:
            client.predict(protocol.PredictRequest(), timeout=2)
        assert refused.value.code == "UNKNOWN" and refused.value.details == "odd failure"
    finally:
        client.close()
