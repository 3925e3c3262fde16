"""API keys on a real server: refusals that explain, a client that sends the key, no leaks."""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from serving_fixtures import (
    CAT_CLASSES,
    jpeg_bytes,
    running_server,
    self_signed_certificate,
    write_config,
)

from accel_widgets.engine.clients.grpc_client import PredictionClient
from accel_widgets.errors import ScoringError

KEY = "key-" + secrets.token_hex(16)
OLD_KEY = "key-" + secrets.token_hex(16)
WRONG_KEY = "wrong-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keyed-server")
    keys = folder / "keys"
    keys.write_text(f"# rotated keys: both valid\n{KEY}\n\n{OLD_KEY}\n")
    os.chmod(keys, 0o600)
    config = write_config(folder, api_keys_file=str(keys))
    with running_server(folder, config, "--log-level", "debug") as process:
        yield process


def _score(server, token: str | None) -> np.ndarray:
    with PredictionClient(
        "127.0.0.1", server.port, access_token=token, service_name="cats", timeout=30
    ) as client:
        return client.score_image(jpeg_bytes())


def test_no_key_is_unauthenticated_and_says_how_to_pass_it(server):
    with pytest.raises(ScoringError) as info:
        _score(server, None)
    assert info.value.code == "UNAUTHENTICATED"
    assert "authorization: Bearer <key>" in str(info.value)


def test_wrong_key_is_unauthenticated_and_not_echoed(server):
    with pytest.raises(ScoringError) as info:
        _score(server, WRONG_KEY)
    assert info.value.code == "UNAUTHENTICATED"
    assert "not valid" in str(info.value)
    assert WRONG_KEY not in str(info.value)


def test_right_key_through_the_client_scores(server):
    assert int(np.argmax(_score(server, KEY))) in CAT_CLASSES
    assert int(np.argmax(_score(server, OLD_KEY))) in CAT_CLASSES


def test_bare_key_without_bearer_is_accepted_for_old_clients(server):
    channel = grpc.insecure_channel(server.target)
    try:
        call = channel.unary_unary("/grpc.health.v1.Health/Check")
        call(b"", timeout=10, metadata=(("authorization", KEY),))
        from accel_widgets.serving import protocol
        from accel_widgets.serving.tensors import make_tensor_proto

        request = protocol.PredictRequest()
        request.inputs["images"].CopyFrom(make_tensor_proto(jpeg_bytes()))
        predict = channel.unary_unary(
            protocol.PREDICT_METHOD,
            request_serializer=protocol.PredictRequest.SerializeToString,
            response_deserializer=protocol.PredictResponse.FromString,
        )
        response = predict(request, timeout=30, metadata=(("authorization", KEY),))
        assert len(response.outputs["output_alias"].float_val) == 1000
    finally:
        channel.close()


def test_health_needs_no_key_but_metadata_does(server):
    with PredictionClient("127.0.0.1", server.port) as anonymous:
        assert anonymous.is_ready()  # Kubernetes probes carry no key
        with pytest.raises(ScoringError) as info:
            anonymous.metadata()
        assert info.value.code == "UNAUTHENTICATED"
    with PredictionClient("127.0.0.1", server.port, access_token=KEY) as client:
        assert client.metadata()["model"] == "squeezenet"


def test_rest_needs_the_key_too(server):
    import base64

    body = json.dumps({"instances": [{"b64": base64.b64encode(jpeg_bytes()).decode()}]}).encode()
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/squeezenet:predict"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30)
    assert info.value.code == 401
    request = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        predictions = json.loads(response.read())["predictions"]
    assert int(np.argmax(predictions[0])) in CAT_CLASSES


def test_route_header_arrives_and_no_key_is_ever_logged(server):
    _score(server, KEY)
    with pytest.raises(ScoringError):
        _score(server, WRONG_KEY)
    log = server.log()
    assert "route header /api/v1/service/cats" in log  # the client's header reached the server
    assert "auth on" in log
    for secret in (KEY, OLD_KEY, WRONG_KEY):
        assert secret not in log


def test_tls_with_a_key_scores_and_plaintext_is_refused(tmp_path):
    import ssl

    cert, private_key = self_signed_certificate(tmp_path)
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    keys.chmod(0o600)
    config = write_config(
        tmp_path, api_keys_file=str(keys), tls={"cert": str(cert), "key": str(private_key)}
    )
    with running_server(tmp_path, config) as server:
        assert server.info["tls"] is True
        with PredictionClient(
            "127.0.0.1", server.port, use_ssl=True, root_certificates=cert, access_token=KEY
        ) as client:
            assert int(np.argmax(client.score_image(jpeg_bytes()))) in CAT_CLASSES
        with PredictionClient("127.0.0.1", server.port, access_token=KEY, timeout=5) as plain:
            with pytest.raises(ScoringError) as info:
                plain.score_image(jpeg_bytes())
            assert info.value.code == "UNAVAILABLE"
        context = ssl.create_default_context(cafile=str(cert))
        request = urllib.request.Request(
            f"https://127.0.0.1:{server.rest_port}/v1/models/squeezenet",
            headers={"Authorization": f"Bearer {KEY}"},
        )
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            assert json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"
