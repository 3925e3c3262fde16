"""The REST scoring client against our real server, and its retries against a scripted one.

The real server is ``python -m accel_widgets.serving`` on 127.0.0.1 with the real SqueezeNet
1.1 (``../shared/weights``) and an API key, started as ``tests/serving_fixtures.py`` does; its
REST port speaks TF Serving's routes. The REST client must score exactly what the gRPC client
scores. Retries and error texts for answers our server never gives on purpose (429, 503) are
checked against a tiny scripted HTTP server on loopback that records what it received.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from serving_fixtures import CAT_CLASSES, running_server, squeezenet_model, write_config

from accel_widgets.engine.checks.samples import sample_photos
from accel_widgets.engine.clients.grpc_client import PredictionClient
from accel_widgets.engine.clients.rest_client import RestPredictionClient
from accel_widgets.errors import ScoringError

pytestmark = pytest.mark.timeout(120)

KEY = "rest-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rest-server")
    keys = folder / "keys"
    keys.write_text(f"{KEY}\n")
    keys.chmod(0o600)
    config = write_config(folder, [squeezenet_model()], api_keys_file=str(keys))
    with running_server(folder, config) as process:
        yield process


@pytest.fixture(scope="module")
def cat() -> bytes:
    return sample_photos(["chelsea"])[0].data


def _predict_url(server) -> str:
    return f"http://127.0.0.1:{server.rest_port}/v1/models/squeezenet:predict"


# -- against the real server ---------------------------------------------------------------


def test_rest_scores_equal_grpc_scores_on_the_cat(server, cat):
    with PredictionClient(server.target, access_token=KEY) as grpc_client:
        expected = grpc_client.score_image(cat)
    with RestPredictionClient(_predict_url(server), key=KEY) as client:
        scores = client.score_image(cat)
    assert scores.shape == expected.shape == (1000,)
    np.testing.assert_array_equal(scores, expected.astype(np.float64))
    assert int(np.argmax(scores)) in CAT_CLASSES


def test_score_file_and_base_address_with_model_name(server, cat, tmp_path):
    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(cat)
    base = f"http://127.0.0.1:{server.rest_port}"
    with RestPredictionClient(base, key=KEY, model_name="squeezenet") as client:
        assert client.predict_url() == _predict_url(server)
        from_file = client.score_file(photo)
        batch = client.score_batch([photo, photo])
    with RestPredictionClient(_predict_url(server), key=KEY) as client:
        assert np.array_equal(from_file, client.score_image(cat))
    assert all(np.array_equal(b, from_file) for b in batch)


def test_is_ready_on_the_real_server(server):
    with RestPredictionClient(_predict_url(server), key=KEY) as client:
        assert client.is_ready() is True
        assert client.health() == "serving"


def test_wrong_key_is_a_clear_error(server, cat):
    with (
        RestPredictionClient(_predict_url(server), key="not-the-key") as client,
        pytest.raises(ScoringError) as info,
    ):
        client.score_image(cat)
    error = info.value
    assert error.code == "UNAUTHENTICATED"
    assert error.status == 401
    assert "HTTP 401" in str(error)
    assert "key" in error.details
    assert "RestPredictionClient(url, key=KEY)" in str(error)


def test_missing_key_is_refused_too(server, cat):
    with (
        RestPredictionClient(_predict_url(server)) as client,
        pytest.raises(ScoringError, match="HTTP 401"),
    ):
        client.score_image(cat)


def test_unknown_model_is_not_found(server, cat):
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/nope:predict"
    with RestPredictionClient(url, key=KEY) as client, pytest.raises(ScoringError) as info:
        client.score_image(cat)
    assert info.value.code == "NOT_FOUND"
    assert "nope" in str(info.value)


def test_not_an_image_is_invalid_argument_and_not_retried(server):
    with (
        RestPredictionClient(_predict_url(server), key=KEY) as client,
        pytest.raises(ScoringError) as info,
    ):
        client.score_image(b"this is not a picture")
    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.status == 400
    assert "after" not in str(info.value)  # one attempt


# -- against a scripted server -------------------------------------------------------------


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answers):
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.answers = list(answers)  # (status, headers, body dict)
        self.received: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/score"


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: Scripted

    def log_message(self, *args) -> None:
        pass

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.received.append(
            {"method": method, "auth": self.headers.get("Authorization"), "body": body}
        )
        status, headers, payload = (
            self.server.answers.pop(0) if self.server.answers else (200, {}, {})
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._answer("POST")

    def do_GET(self) -> None:
        self._answer("GET")


@pytest.fixture
def scripted():
    servers = []

    def start(*answers):
        server = Scripted(answers)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


OK = (200, {}, {"predictions": [[0.25, 0.75]]})


def test_key_and_tf_serving_body_are_sent(scripted, cat):
    server = scripted(OK)
    with RestPredictionClient(server.url, key="k-123") as client:
        scores = client.score_image(cat)
    assert scores.tolist() == [0.25, 0.75]
    (request,) = server.received
    assert request["auth"] == "Bearer k-123"
    assert list(request["body"]) == ["instances"]
    (instance,) = request["body"]["instances"]
    assert base64.b64decode(instance["b64"]) == cat


def test_another_input_name_and_output_filter(scripted, cat):
    server = scripted(OK)
    with RestPredictionClient(server.url) as client:
        client.score_image(cat, input_name="pixels", outputs="probs")
    body = server.received[0]["body"]
    assert list(body["instances"][0]) == ["pixels"]
    assert body["output_filter"] == ["probs"]
    assert server.received[0]["auth"] is None


def test_429_and_503_are_retried_with_backoff(scripted, cat):
    server = scripted(
        (429, {"Retry-After": "0"}, {"error": "slow down"}),
        (503, {}, {"error": "warming up"}),
        OK,
    )
    with RestPredictionClient(server.url, key="k") as client:
        assert client.score_image(cat).tolist() == [0.25, 0.75]
    assert len(server.received) == 3


def test_retries_run_out_with_the_status_and_message(scripted, cat):
    server = scripted(*[(503, {}, {"error": {"code": "X", "message": "no capacity"}})] * 3)
    with (
        RestPredictionClient(server.url, key="k", retries=2) as client,
        pytest.raises(ScoringError) as info,
    ):
        client.score_image(cat)
    assert len(server.received) == 3
    message = str(info.value)
    assert info.value.code == "UNAVAILABLE"
    assert "HTTP 503" in message and "after 3 attempts" in message
    assert "no capacity" in message


def test_400_is_never_retried(scripted, cat):
    server = scripted((400, {}, {"error": "bad body"}), OK)
    with RestPredictionClient(server.url) as client, pytest.raises(ScoringError, match="bad body"):
        client.score_image(cat)
    assert len(server.received) == 1


def test_health_of_a_scoring_uri(scripted):
    serving = scripted((501, {}, {"error": "predict takes POST with a JSON body"}))
    with RestPredictionClient(serving.url) as client:
        assert client.health() == "serving"
    gateway = scripted(*[(424, {}, {"message": "upstream failed"})] * 2)
    with RestPredictionClient(gateway.url) as client:
        assert client.is_ready() is False
        assert client.health() == "not_serving"


def test_nothing_listening_is_unavailable_and_not_ready():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with RestPredictionClient(f"http://127.0.0.1:{port}/score", retries=1, timeout=3) as client:
        assert client.health() == "unreachable"
        with pytest.raises(ScoringError) as info:
            client.score_image(b"x")
    assert info.value.code == "UNAVAILABLE"
    assert "could not reach" in str(info.value)


def test_a_key_is_never_sent_in_clear_text_beyond_loopback():
    with pytest.raises(ValueError, match="clear text"):
        RestPredictionClient("http://example.com/score", key="secret")
    with pytest.raises(ValueError, match="http"):
        RestPredictionClient("ftp://example.com/score")
    RestPredictionClient("https://example.com/score", key="secret").close()


def test_a_base_address_needs_a_model_name():
    with (
        RestPredictionClient("http://127.0.0.1:1") as client,
        pytest.raises(ValueError, match="model_name"),
    ):
        client.predict_url()
