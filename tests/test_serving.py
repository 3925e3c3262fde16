"""The serving process end to end: a real server on loopback with the real SqueezeNet."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from serving_fixtures import (
    CAT_CLASSES,
    ESPRESSO,
    jpeg_bytes,
    png_bytes,
    running_server,
    write_config,
)

from accel_widgets.engine.clients.grpc_client import PredictionClient
from accel_widgets.errors import ScoringError
from accel_widgets.serving import protocol
from accel_widgets.serving.tensors import make_tensor_proto, tensor_to_numpy


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("squeezenet-server")
    with running_server(folder, write_config(folder)) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with PredictionClient("127.0.0.1", server.port, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def raw_predict(server):
    """Predict over a plain channel, bytes in and out: any request, even a malformed one."""
    channel = grpc.insecure_channel(server.target)
    call = channel.unary_unary(protocol.PREDICT_METHOD)
    yield call
    channel.close()


def _request(data: bytes | list[bytes], input_name="images", model="", outputs=()) -> bytes:
    request = protocol.PredictRequest()
    if model:  # no model_spec: the default model (a model_spec with an empty name is refused)
        request.model_spec.name = model
    request.inputs[input_name].CopyFrom(make_tensor_proto(data))
    request.output_filter.extend(outputs)
    return request.SerializeToString()


def _status(call, body: bytes) -> tuple[grpc.StatusCode, str]:
    try:
        call(body, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_cat_photo_scores_a_cat_first(client):
    scores = client.score_image(jpeg_bytes("chelsea"))
    assert scores.shape == (1000,)
    assert int(np.argmax(scores)) in CAT_CLASSES
    assert abs(float(scores.sum()) - 1.0) < 0.01  # SqueezeNet's softmax, passed through


def test_espresso_photo_scores_espresso_first(client, tmp_path):
    path = tmp_path / "coffee.jpg"
    path.write_bytes(jpeg_bytes("coffee"))
    assert int(np.argmax(client.score_file(path))) == ESPRESSO


def test_a_batch_of_images_scores_each(client):
    response = client.predict(_request_message([jpeg_bytes("chelsea"), jpeg_bytes("coffee")]))
    scores = np.asarray(response.outputs["output_alias"].float_val).reshape(2, 1000)
    assert int(np.argmax(scores[0])) in CAT_CLASSES and int(np.argmax(scores[1])) == ESPRESSO


def _request_message(images: list[bytes]):
    return protocol.PredictRequest.FromString(_request(images))


def test_legacy_input_and_output_tensor_names_work(client):
    out = "classifier/squeezenet/predictions/Softmax:0"
    result = client.score_image(jpeg_bytes("coffee"), input_name="Placeholder:0", outputs=[out])
    assert int(np.argmax(result)) == ESPRESSO
    both = client.score_image(jpeg_bytes("coffee"), outputs=["output_alias", "softmaxout_1"])
    assert set(both) == {"output_alias", "softmaxout_1"}


def test_response_names_the_model_and_version(client):
    response = client.predict(_request_message([jpeg_bytes()]))
    assert response.model_spec.name == "squeezenet"
    assert response.model_spec.version.value == 1


def test_metadata_lists_inputs_and_outputs(client):
    meta = client.metadata()
    assert meta["model"] == "squeezenet" and meta["version"] == 1
    assert meta["inputs"]["images"] == {
        "name": "Placeholder:0",
        "dtype": "DT_STRING",
        "shape": [-1],
    }
    # The preprocessed tensor is an alternative, so it has a signature of its own: a TF
    # Serving client reading serving_default must not think it has to send both.
    assert list(meta["inputs"]) == ["images"]
    pixels = meta["signatures"]["predict_pixels"]["inputs"]["data_0"]
    assert pixels["shape"] == [1, 3, 224, 224] and pixels["dtype"] == "DT_HALF"
    assert meta["outputs"]["output_alias"]["shape"] == [-1, 1000]


def test_health_says_serving(client):
    assert client.is_ready()


def test_wrong_input_name_lists_accepted_names(raw_predict):
    code, details = _status(raw_predict, _request(jpeg_bytes(), input_name="Placeholder:1"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no input 'Placeholder:1'" in details
    for name in ("'images'", "'Placeholder:0'", "'data_0'"):
        assert name in details


def test_unknown_output_lists_accepted_names(raw_predict):
    code, details = _status(raw_predict, _request(jpeg_bytes(), outputs=["logits"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'logits'" in details and "'output_alias'" in details and "'softmaxout_1'" in details


def test_unknown_model_is_not_found_and_lists_models(raw_predict):
    code, details = _status(raw_predict, _request(jpeg_bytes(), model="resnet50"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "'resnet50'" in details and "'squeezenet'" in details


@pytest.mark.parametrize(
    ("data", "words"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"GIF89a? no, just text", "not a JPEG or PNG image", id="not-an-image"),
        pytest.param(jpeg_bytes()[:2000], "corrupt or truncated", id="truncated-jpeg"),
        pytest.param(b"\xff\xd8\xff\xe0" + bytes(200), "corrupt or truncated", id="corrupt-jpeg"),
    ],
)
def test_bad_image_is_invalid_argument_and_the_server_keeps_serving(
    raw_predict, client, data, words
):
    code, details = _status(raw_predict, _request(data))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in details
    assert int(np.argmax(client.score_image(jpeg_bytes()))) in CAT_CLASSES


def test_decompression_bomb_is_refused_with_a_clear_message(raw_predict, client):
    bomb = bytearray(jpeg_bytes())
    sof = bomb.find(b"\xff\xc0")
    bomb[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") * 2
    code, details = _status(raw_predict, _request(bytes(bomb)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too large" in details and "30000x30000" in details
    assert int(np.argmax(client.score_image(jpeg_bytes()))) in CAT_CLASSES


def test_grey_png_scores(client):
    from skimage import data

    assert client.score_image(png_bytes(data.camera(), "L")).shape == (1000,)


def test_preprocessed_tensor_is_fed_as_is(client):
    from accel_widgets.preprocess import Preprocessing, prepare

    pre = Preprocessing(channel_order="BGR", layout="NCHW", dtype="float16")
    tensor = prepare(jpeg_bytes("coffee"), pre)
    by_alias = client.score_numpy_array(tensor)
    # float32 is cast to the model's float16; the ONNX input name works too.
    by_name = client.score_numpy_array(tensor.astype(np.float32), input_name="data_0")
    assert by_alias.shape == (1, 1000) and int(np.argmax(by_alias)) == ESPRESSO
    np.testing.assert_allclose(by_alias, by_name, atol=1e-3)


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.zeros((1, 224, 224, 3), np.float32), id="nhwc-instead-of-nchw"),
        pytest.param(np.zeros((3, 224, 224), np.float32), id="no-batch-axis"),
        pytest.param(np.zeros((1, 3, 10, 10), np.float16), id="wrong-size"),
    ],
)
def test_wrong_shape_names_the_expected_shape(client, array):
    with pytest.raises(ScoringError) as info:
        client.score_numpy_array(array)
    assert info.value.code == "INVALID_ARGUMENT"
    assert "[1, 3, 224, 224]" in str(info.value)


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.full((1, 3, 224, 224), 70_000, np.int64), id="int-beyond-float16"),
        pytest.param(np.zeros((1, 3, 224, 224), np.bool_), id="bool"),
    ],
)
def test_wrong_dtype_is_refused_naming_the_expected_input(client, array):
    with pytest.raises(ScoringError) as info:
        client.score_numpy_array(array)
    assert info.value.code == "INVALID_ARGUMENT"
    assert "float16 [1, 3, 224, 224]" in str(info.value)


def test_malformed_protobuf_is_invalid_argument(raw_predict):
    code, details = _status(raw_predict, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid PredictRequest" in details


def test_unknown_signature_is_refused(raw_predict):
    request = protocol.PredictRequest.FromString(_request(jpeg_bytes(), model="squeezenet"))
    request.model_spec.signature_name = "classify"
    code, details = _status(raw_predict, request.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "serving_default" in details


def test_wrong_version_is_not_found(raw_predict):
    request = protocol.PredictRequest.FromString(_request(jpeg_bytes(), model="squeezenet"))
    request.model_spec.version.value = 7
    code, details = _status(raw_predict, request.SerializeToString())
    assert code == grpc.StatusCode.NOT_FOUND and "version 1" in details


# -- REST ------------------------------------------------------------------------------------


def _rest(server, path: str, body: dict | None = None) -> tuple[int, dict | str]:
    url = f"http://127.0.0.1:{server.rest_port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        text, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def test_rest_predict_gives_the_same_class(server):
    image = base64.b64encode(jpeg_bytes("coffee")).decode()
    status, body = _rest(server, "/v1/models/squeezenet:predict", {"instances": [{"b64": image}]})
    assert status == 200
    assert int(np.argmax(body["predictions"][0])) == ESPRESSO


def test_rest_predict_takes_named_inputs_and_numeric_instances(server):
    from accel_widgets.preprocess import Preprocessing, prepare

    image = base64.b64encode(jpeg_bytes("chelsea")).decode()
    status, body = _rest(
        server, "/v1/models/squeezenet:predict", {"instances": [{"images": {"b64": image}}]}
    )
    assert status == 200 and int(np.argmax(body["predictions"][0])) in CAT_CLASSES
    tensor = prepare(jpeg_bytes("coffee"), Preprocessing(channel_order="BGR", layout="NCHW"))
    status, body = _rest(server, "/v1/models/squeezenet:predict", {"inputs": tensor.tolist()})
    assert status == 200 and int(np.argmax(body["outputs"][0])) == ESPRESSO


def test_rest_errors_follow_tf_serving(server):
    status, body = _rest(server, "/v1/models/nope:predict", {"instances": [{"b64": "AAAA"}]})
    assert status == 404 and "'squeezenet'" in body["error"]
    status, body = _rest(server, "/v1/models/squeezenet:predict", {"instances": [{"b64": "AAAA"}]})
    assert status == 400 and "not a JPEG or PNG" in body["error"]
    status, body = _rest(server, "/v1/models/squeezenet:predict", {"rows": []})
    assert status == 400 and "instances" in body["error"]


def test_rest_model_status_metadata_and_metrics(server, client):
    client.score_image(jpeg_bytes())  # at least one gRPC request for the counters to show
    status, body = _rest(server, "/v1/models/squeezenet")
    assert status == 200
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    status, body = _rest(server, "/v1/models/squeezenet/metadata")
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert "images" in signature["inputs"] and body["metadata"]["labels"] == 1000
    status, text = _rest(server, "/metrics")
    assert status == 200
    assert re.search(
        r'accel_widgets_requests_total\{code="OK",model="squeezenet",protocol="grpc"\} [1-9]', text
    )
    assert "accel_widgets_request_duration_seconds_bucket" in text
    status, body = _rest(server, "/healthz")
    assert status == 200 and body["status"] == "SERVING"


# -- load ------------------------------------------------------------------------------------


def test_sixteen_concurrent_clients_for_twenty_seconds_see_no_errors(server):
    """The issue's load test: 16 clients, 20 s, loopback, every answer a cat, zero errors."""
    image = jpeg_bytes("chelsea")
    stop = time.monotonic() + 20.0
    counts, errors = [0] * 16, []

    def worker(index: int) -> None:
        with PredictionClient("127.0.0.1", server.port, timeout=30) as own:
            while time.monotonic() < stop:
                try:
                    scores = own.score_image(image)
                    assert int(np.argmax(scores)) in CAT_CLASSES
                    counts[index] += 1
                except Exception as exc:  # collected, asserted below
                    errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors[:3]
    assert all(n > 0 for n in counts), counts


def test_a_message_above_the_limit_is_refused_and_serving_goes_on(raw_predict, client):
    big = _request(jpeg_bytes() + bytes(17 * 1024 * 1024))  # the config's limit is 16 MB
    code, _ = _status(raw_predict, big)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert int(np.argmax(client.score_image(jpeg_bytes()))) in CAT_CLASSES


def test_predict_pixels_signature_accepts_the_preprocessed_tensor(client):
    """The signature metadata advertises must also be accepted by Predict."""
    from accel_widgets.preprocess import Preprocessing, prepare

    pre = Preprocessing(channel_order="BGR", layout="NCHW", dtype="float16")
    tensor = prepare(jpeg_bytes(), pre)
    request = protocol.PredictRequest()
    request.model_spec.name = "squeezenet"  # a model_spec names its model (as TF Serving's)
    request.model_spec.signature_name = "predict_pixels"
    request.inputs["data_0"].CopyFrom(make_tensor_proto(tensor))
    response = client.predict(request)
    scores = tensor_to_numpy(response.outputs["output_alias"]).reshape(-1)
    assert int(scores.argmax()) in CAT_CLASSES
