"""The ports hold under careless and hostile use (issue 22), on one keyed SqueezeNet server.

Each test holds what silenced the server before: idle HTTP connections (the standard
library's 16 pool threads were each held by one), gRPC health Watch streams (each held a
thread of the pool Predict runs on), a silent TLS client (its handshake ran inside
``accept``), and requests that protocols refuse but the server took or answered 500. The
answers are checked for being answers, not for their speed: client timeouts are generous,
and the latency under these loads is measured by ``bench/bench_hostile.py``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

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
from accel_widgets.serving import protocol
from accel_widgets.serving.tensors import make_tensor_proto

pytestmark = pytest.mark.timeout(180)

KEY = "key-" + secrets.token_hex(16)
AUTH = {"Authorization": f"Bearer {KEY}"}
JPEG = jpeg_bytes()
#: Long enough for a loaded CI machine; the old server did not answer at all within it.
PATIENCE_S = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    keys = folder / "keys"
    keys.write_text(KEY + "\n")
    os.chmod(keys, 0o600)
    with running_server(folder, write_config(folder, api_keys_file=str(keys))) as process:
        yield process


def _http(
    server,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=PATIENCE_S)
    try:
        connection.request(method, path, body, {**AUTH, **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _infer_body() -> tuple[bytes, dict[str, str]]:
    """A v2 REST infer body with the JPEG in the binary extension (what tritonclient sends)."""
    raw = len(JPEG).to_bytes(4, "little") + JPEG
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def _assert_everything_answers(server) -> None:
    """Health on both ports, and inference on both, each answered (not timed out)."""
    status, _, body = _http(server, "GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "SERVING"
    status, _, _ = _http(server, "GET", "/v2/health/ready")
    assert status == 200
    body, headers = _infer_body()
    status, headers, answer = _http(server, "POST", "/v2/models/squeezenet/infer", body, headers)
    assert status == 200, answer[:300]
    with grpc.insecure_channel(server.target) as channel:
        check = channel.unary_unary(
            protocol.HEALTH_CHECK_METHOD,
            request_serializer=protocol.HealthCheckRequest.SerializeToString,
            response_deserializer=protocol.HealthCheckResponse.FromString,
        )
        response = check(protocol.HealthCheckRequest(), timeout=PATIENCE_S)
        assert response.status == protocol.SERVING_STATUS["SERVING"]
    with PredictionClient("127.0.0.1", server.port, access_token=KEY, timeout=PATIENCE_S) as c:
        assert int(np.argmax(c.score_image(JPEG))) in CAT_CLASSES


@contextmanager
def _idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that never finish a request: most send nothing, some stop
    inside their headers, some inside a body they announced."""
    held = []
    try:
        for index in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S)
            if index % 4 == 1:
                sock.sendall(b"POST /v2/models/squeezenet/infer HTTP/1.1\r\nHost: x\r\n")
            elif index % 4 == 2:
                sock.sendall(
                    b"POST /v2/models/squeezenet/infer HTTP/1.1\r\nContent-Length: 100000\r\n"
                    b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n{"
                )
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def test_256_idle_http_connections_do_not_silence_either_port(server):
    """Before: 16 idle connections held every thread of the HTTP port for 10 s each."""
    with _idle_connections(server.rest_port, 256) as held:
        _assert_everything_answers(server)
        # The idle ones are still open: the answers above did not wait for them to go.
        held[-1].setblocking(False)
        with pytest.raises(BlockingIOError):
            held[-1].recv(1)


def test_64_health_watch_streams_do_not_silence_inference(server):
    """Before: each Watch held a thread of the pool Predict runs on; 8 silenced Predict."""
    with grpc.insecure_channel(server.target) as channel:
        watch = channel.unary_stream(
            protocol.HEALTH_WATCH_METHOD,
            request_serializer=protocol.HealthCheckRequest.SerializeToString,
            response_deserializer=protocol.HealthCheckResponse.FromString,
        )
        streams = [watch(protocol.HealthCheckRequest(), timeout=120) for _ in range(64)]
        try:
            for stream in streams:  # every stream is open and has said SERVING
                assert next(stream).status == protocol.SERVING_STATUS["SERVING"]
            _assert_everything_answers(server)
        finally:
            for stream in streams:
                stream.cancel()


def test_a_silent_tls_client_neither_blocks_the_https_port_nor_the_stop(tmp_path):
    """Before: the TLS handshake ran inside accept() with no time limit: one client that
    connected and sent nothing blocked the port, and stopping the server hung."""
    cert, private_key = self_signed_certificate(tmp_path)
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    keys.chmod(0o600)
    config = write_config(
        tmp_path, api_keys_file=str(keys), tls={"cert": str(cert), "key": str(private_key)}
    )
    context = ssl.create_default_context(cafile=str(cert))
    with running_server(tmp_path, config) as server:
        silent = [socket.create_connection(("127.0.0.1", server.rest_port)) for _ in range(3)]
        try:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", server.rest_port, timeout=PATIENCE_S, context=context
            )
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["status"] == "SERVING"
            connection.close()
            assert server.terminate(timeout=PATIENCE_S) == 0
        finally:
            for sock in silent:
                sock.close()


# -- HTTP errors: JSON, the right status, never 500 -------------------------------------------


def _error(status: int, body: bytes) -> str:
    assert status < 500, (status, body[:300])
    return json.loads(body)["error"]


def test_wrong_method_unknown_path_and_huge_body_answer_405_404_413_in_json(server):
    status, headers, body = _http(server, "PUT", "/v2/models/squeezenet/infer", b"{}")
    assert status == 405 and headers["Allow"] == "POST" and "PUT" in _error(status, body)
    status, headers, body = _http(server, "POST", "/v2/models/nosuch", b"{}")
    assert status == 405 and headers["Allow"] == "GET" and "takes GET" in _error(status, body)
    status, headers, body = _http(server, "DELETE", "/v1/models/squeezenet")
    assert status == 405 and headers["Allow"] == "GET"
    status, _, body = _http(server, "GET", "/v3/anything")
    assert status == 404 and "no route GET /v3/anything" in _error(status, body)
    status, _, body = _http(server, "BREW", "/v2/models/squeezenet/infer")
    assert status == 405 and _error(status, body)
    # 64 MB: the server reads and drops it, then says why (the limit is 16 MB by default).
    huge = bytes(64 * 1024 * 1024)
    status, _, body = _http(server, "POST", "/v2/models/squeezenet/infer", huge)
    assert status == 413 and "this server takes at most" in _error(status, body)
    _assert_everything_answers(server)


def _post_json(server, path: str, text: bytes, headers: dict[str, str] | None = None):
    status, _, body = _http(
        server, "POST", path, text, {"Content-Type": "application/json", **(headers or {})}
    )
    return status, _error(status, body)


def test_json_that_python_reads_but_protocols_refuse_is_400_not_500(server):
    infer, predict = "/v2/models/squeezenet/infer", "/v1/models/squeezenet:predict"
    nested = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert _post_json(server, infer, nested) == (
        400,
        "the body's JSON is nested too deeply to read",
    )
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _post_json(server, predict, b'{"instances": ' + deep + b"}")[0] == 400
    many = b'{"instances": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}"  # parses; too deep for numpy
    assert _post_json(server, predict, many)[0] == 400

    surrogate = (
        b'{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}'
    )
    status, message = _post_json(server, infer, surrogate)
    assert status == 400 and "lone surrogate" in message

    for number in (b"1e400", b"-1e400", b"NaN", b"Infinity"):
        pixels = b"[" + b", ".join([number] + [b"0"] * (3 * 224 * 224 - 1)) + b"]"
        body = b'{"inputs": [{"name": "data_0", "datatype": "FP32", "shape": [1, 3, 224, 224], '
        status, message = _post_json(server, infer, body + b'"data": ' + pixels + b"}]}")
        assert status == 400 and ("finite" in message or "not a JSON number" in message), message
        status, message = _post_json(server, predict, b'{"instances": [[' + number + b"]]}")
        assert status == 400 and ("finite" in message or "not a JSON number" in message), message


def test_v2_rest_refuses_the_wrong_datatype_both_data_forms_and_a_repeated_header(server):
    infer = "/v2/models/squeezenet/infer"
    as_bytes = {"name": "data_0", "datatype": "BYTES", "shape": [1], "data": ["not pixels"]}
    status, message = _post_json(server, infer, json.dumps({"inputs": [as_bytes]}).encode())
    assert status == 400 and "the metadata gives 'data_0' as FP16" in message
    as_numbers = {"name": "images", "datatype": "FP32", "shape": [1], "data": [1.0]}
    status, message = _post_json(server, infer, json.dumps({"inputs": [as_numbers]}).encode())
    assert status == 400 and "the metadata gives 'images' as BYTES" in message

    raw = len(JPEG).to_bytes(4, "little") + JPEG
    both = {
        "name": "images",
        "datatype": "BYTES",
        "shape": [1],
        "data": [{"b64": base64.b64encode(JPEG).decode()}],
        "parameters": {"binary_data_size": len(raw)},
    }
    header = json.dumps({"inputs": [both]}).encode()
    status, message = _post_json(
        server, infer, header + raw, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 400 and "send its data one way only" in message

    body, headers = _infer_body()
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=PATIENCE_S)
    connection.putrequest("POST", infer)
    for name, value in {**AUTH, "Content-Length": str(len(body))}.items():
        connection.putheader(name, value)
    connection.putheader(
        "Inference-Header-Content-Length", headers["Inference-Header-Content-Length"]
    )
    connection.putheader("Inference-Header-Content-Length", "0")
    connection.endheaders(body)
    response = connection.getresponse()
    status, text = response.status, response.read()
    connection.close()
    assert status == 400 and "sent 2 times" in _error(status, text)


def test_rest_version_labels_are_refused_as_tf_serving_refuses_unknown_ones(server):
    status, _, body = _http(server, "GET", "/v1/models/squeezenet/labels/stable")
    assert status == 400 and "Unrecognized servable version label: stable" in _error(status, body)


# -- gRPC: TF Serving's answers, v2's rules, bounded messages ---------------------------------


def _predict(server, request: bytes, method: str = protocol.PREDICT_METHOD):
    with grpc.insecure_channel(server.target) as channel:
        try:
            channel.unary_unary(method)(
                request, timeout=PATIENCE_S, metadata=(("authorization", KEY),)
            )
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def _predict_request(**spec) -> protocol.PredictRequest:
    request = protocol.PredictRequest()
    request.inputs["images"].CopyFrom(make_tensor_proto([JPEG]))
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


def test_predict_model_spec_gets_tf_servings_answers(server):
    # No model_spec: what the retired Azure client sends; the default model answers.
    assert _predict(server, _predict_request().SerializeToString())[0] == grpc.StatusCode.OK
    code, details = _predict(server, _predict_request(name="").SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "ModelSpec has no name specified" in details and "'squeezenet'" in details
    code, details = _predict(server, _predict_request(name="resnet50").SerializeToString())
    assert code == grpc.StatusCode.NOT_FOUND and "no model 'resnet50'" in details
    labelled = _predict_request(name="squeezenet", version_label="stable")
    code, details = _predict(server, labelled.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: stable" in details
    # Both fields on the wire (a oneof: the parser keeps the last one).
    for first, last in (("version", "version_label"), ("version_label", "version")):
        parts = {"version": _predict_request(name="squeezenet", version=1)}
        parts["version_label"] = _predict_request(name="squeezenet", version_label="stable")
        wire = parts[first].SerializeToString() + parts[last].SerializeToString()
        code, details = _predict(server, wire)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "both version and version_label" in (
            details
        )
    metadata = protocol.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = ""
    code, details = _predict(
        server, metadata.SerializeToString(), protocol.GET_MODEL_METADATA_METHOD
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no name specified" in details


def test_v2_model_infer_refuses_raw_and_typed_contents_together(server):
    request = protocol.ModelInferRequest(model_name="squeezenet")
    entry = request.inputs.add(name="images", datatype="BYTES", shape=[1])
    entry.contents.bytes_contents.append(JPEG)
    request.raw_input_contents.append(len(JPEG).to_bytes(4, "little") + JPEG)
    code, details = _predict(
        server, request.SerializeToString(), f"/{protocol.INFERENCE_SERVICE}/ModelInfer"
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "send each input's data one way" in (
        details
    )


def test_echoed_input_is_cut_so_a_refusal_always_fits_in_a_grpc_status(server):
    """Before: a 100 kB name came back whole and overflowed gRPC's 8 kB metadata limit,
    so the client got RESOURCE_EXHAUSTED instead of the refusal."""
    long = "x" * 100_000
    code, details = _predict(server, _predict_request(name=long).SerializeToString())
    assert code == grpc.StatusCode.NOT_FOUND and "x" * 200 in details
    assert "x" * 201 not in details and "(100,000 characters)" in details
    request = protocol.PredictRequest()
    request.model_spec.name = "squeezenet"
    request.inputs[long].CopyFrom(make_tensor_proto([JPEG]))
    code, details = _predict(server, request.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "x" * 201 not in details
    infer = protocol.ModelInferRequest(model_name="squeezenet")
    infer.inputs.add(name=long, datatype="BYTES", shape=[1]).contents.bytes_contents.append(JPEG)
    code, details = _predict(
        server, infer.SerializeToString(), f"/{protocol.INFERENCE_SERVICE}/ModelInfer"
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "x" * 201 not in details
    # 30,000: a path over 64 kB (Tornado's header limit) is refused before any route.
    status, _, body = _http(server, "GET", "/v1/models/" + long[:30_000])
    assert status == 404 and "x" * 201 not in _error(status, body)


def test_health_watch_streams_are_bounded():
    """Past the cap a Watch is refused RESOURCE_EXHAUSTED; Check still answers; closing with
    streams that have just been cancelled does not deadlock (the library's non-blocking
    servicer sent under its lock: it did). In process: a real server's cap is 1,024."""
    from concurrent.futures import ThreadPoolExecutor

    from accel_widgets.serving.health import HealthService

    health = HealthService(max_watches=2)
    health.set_serving(True)
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    health.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = channel.unary_stream(
                protocol.HEALTH_WATCH_METHOD,
                request_serializer=protocol.HealthCheckRequest.SerializeToString,
                response_deserializer=protocol.HealthCheckResponse.FromString,
            )
            held = [watch(protocol.HealthCheckRequest(), timeout=PATIENCE_S) for _ in range(2)]
            for stream in held:
                assert next(stream).status == protocol.SERVING_STATUS["SERVING"]
            with pytest.raises(grpc.RpcError) as refused:
                next(watch(protocol.HealthCheckRequest(), timeout=PATIENCE_S))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "the most this server holds" in refused.value.details()
            check = channel.unary_unary(
                protocol.HEALTH_CHECK_METHOD,
                request_serializer=protocol.HealthCheckRequest.SerializeToString,
                response_deserializer=protocol.HealthCheckResponse.FromString,
            )
            assert check(protocol.HealthCheckRequest(), timeout=PATIENCE_S).status == 1
            for stream in held:
                stream.cancel()
    finally:
        health.close()
        server.stop(0)


def test_a_chunked_body_is_served_and_one_over_the_limit_is_413_in_json(server):
    """Transfer-Encoding: chunked has no length to check first: counted as it comes."""
    body, headers = _infer_body()

    def chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    for payload, expected in ((body, 200), (bytes(30 * 1024 * 1024), 413)):
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=PATIENCE_S)
        connection.request(
            "POST",
            "/v2/models/squeezenet/infer",
            chunks(payload),
            {**AUTH, **headers, "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        status, text = response.status, response.read()
        connection.close()
        assert status == expected, text[:300]
        if expected == 413:
            assert "this server takes at most" in _error(status, text)
