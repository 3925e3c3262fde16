"""The Open Inference Protocol beside TF Serving's, on one keyed server with the real SqueezeNet.

One server process with an API key serves both protocols on one gRPC port and one HTTP port.
``tritonclient`` (gRPC and HTTP, unchanged) sends the key as a header; every protocol gets
the same scores, the same refusals in sentences, and is counted in ``/metrics`` (parsed with
``prometheus_client``'s own parser) by protocol and status code. A client of the original
service (no ``output_filter``, the graph tensor name) and the Azure route header work too.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from serving_fixtures import CAT_CLASSES, jpeg_bytes, running_server, squeezenet_model, write_config

from accel_widgets.engine.clients.grpc_client import PredictionClient
from accel_widgets.preprocess import Preprocessing, prepare
from accel_widgets.serving import protocol
from accel_widgets.serving.tensors import make_tensor_proto, tensor_to_numpy

KEY = "key-" + secrets.token_hex(16)


def bearer() -> dict[str, str]:
    """A fresh headers dict per call: tritonclient.http adds its own headers to the one given."""
    return {"authorization": f"Bearer {KEY}"}


GRAPH_NAME = "classifier/squeezenet/predictions/Softmax:0"
JPEG = jpeg_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("v2-server")
    keys = folder / "keys"
    keys.write_text(KEY + "\n")
    os.chmod(keys, 0o600)
    with running_server(folder, write_config(folder, api_keys_file=str(keys))) as process:
        yield process


@pytest.fixture(scope="module")
def ours(server) -> np.ndarray:
    with PredictionClient("127.0.0.1", server.port, access_token=KEY, timeout=30) as client:
        return np.asarray(client.score_image(JPEG))


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """The preprocessed tensor as float32 (the model takes float16; exact casts are taken)."""
    pre = Preprocessing.from_dict(squeezenet_model()["preprocessing"])
    return prepare(JPEG, pre).astype(np.float32)


def test_tritonclient_grpc_with_the_key_scores_images_and_tensors_alike(server, ours, pixels):
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(server.target)
    assert client.is_server_live() and client.is_server_ready()  # probes need no key
    with pytest.raises(InferenceServerException, match="needs an API key"):
        client.is_model_ready("squeezenet")
    assert client.is_model_ready("squeezenet", headers=bearer())
    image = triton.InferInput("images", [1], "BYTES")
    image.set_data_from_numpy(np.array([JPEG], dtype=object))
    scores = client.infer("squeezenet", [image], headers=bearer()).as_numpy("output_alias")
    tensor = triton.InferInput("data_0", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    wanted = [triton.InferRequestedOutput(GRAPH_NAME)]
    from_pixels = client.infer("squeezenet", [tensor], outputs=wanted, headers=bearer())
    np.testing.assert_allclose(scores[0], ours, rtol=0, atol=1e-6)
    np.testing.assert_allclose(from_pixels.as_numpy(GRAPH_NAME)[0], ours, rtol=0, atol=1e-6)
    assert int(np.argmax(scores)) in CAT_CLASSES


def test_tritonclient_http_with_the_key_binary_and_json_alike(server, ours, pixels):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    assert client.is_server_live() and client.is_server_ready()
    with pytest.raises(InferenceServerException, match="needs an API key"):
        client.get_model_metadata("squeezenet")
    metadata = client.get_model_metadata("squeezenet", headers=bearer())
    assert [i["name"] for i in metadata["inputs"]] == ["images", "data_0"]
    image = triton.InferInput("images", [1], "BYTES")
    image.set_data_from_numpy(np.array([JPEG], dtype=object))
    binary = client.infer("squeezenet", [image], headers=bearer()).as_numpy("output_alias")
    tensor = triton.InferInput("data_0", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=False)
    wanted = [triton.InferRequestedOutput("output_alias", binary_data=False)]
    as_json = client.infer("squeezenet", [tensor], outputs=wanted, headers=bearer())
    np.testing.assert_allclose(binary[0], ours, rtol=0, atol=1e-6)
    np.testing.assert_allclose(as_json.as_numpy("output_alias")[0], ours, rtol=0, atol=1e-6)


def _post(server, path: str, body: dict, key: str | None = KEY) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}"} if key else {},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_v2_rest_json_takes_a_base64_image_and_explains_refusals(server, ours):
    image = {"b64": base64.b64encode(JPEG).decode()}
    good = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [image]}]}
    status, body = _post(server, "/v2/models/squeezenet/infer", good)
    assert status == 200 and body["outputs"][0]["name"] == "output_alias"
    np.testing.assert_allclose(body["outputs"][0]["data"], ours, rtol=0, atol=1e-6)

    refusals = {
        "nope": (
            {"inputs": [{"name": "nope", "datatype": "BYTES", "shape": [1], "data": [image]}]},
            400,
            "has no input 'nope'; inputs are 'images'",
        ),
        "datatype": (
            {"inputs": [{"name": "images", "datatype": "FP8", "shape": [1], "data": [1]}]},
            400,
            "use BYTES for encoded images",
        ),
        "shape": (
            {"inputs": [{"name": "data_0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}]},
            400,
            "has 3 elements by its shape, but its data holds 2",
        ),
        "wrong rank": (
            {
                "inputs": [
                    {"name": "data_0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
                ]
            },
            400,
            "takes [1, 3, 224, 224]",
        ),
        "output": ({**good, "outputs": [{"name": "probs"}]}, 400, "has no output 'probs'"),
    }
    for what, (body, code, words) in refusals.items():
        status, answer = _post(server, "/v2/models/squeezenet/infer", body)
        assert (status, words in answer["error"]) == (code, True), (what, answer)
    status, answer = _post(server, "/v2/models/resnet50/infer", good)
    assert status == 404 and "no model 'resnet50'" in answer["error"]
    status, answer = _post(server, "/v2/models/squeezenet/infer", good, key=None)
    assert status == 401 and "authorization: Bearer <key>" in answer["error"]


def test_v2_grpc_refusals_are_statuses_with_sentences(server):
    with grpc.insecure_channel(server.target) as channel:
        infer = channel.unary_unary(f"/{protocol.INFERENCE_SERVICE}/ModelInfer")
        metadata = tuple(bearer().items())
        with pytest.raises(grpc.RpcError) as info:
            infer(b"\xff\xff not a protobuf", metadata=metadata, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid ModelInferRequest protobuf" in info.value.details()
        request = protocol.ModelInferRequest(model_name="squeezenet")
        request.inputs.add(name="images", datatype="BYTES", shape=[2])
        request.raw_input_contents.append(b"\x03\x00\x00\x00abc")
        with pytest.raises(grpc.RpcError) as info:
            infer(request.SerializeToString(), metadata=metadata, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "has 2 elements by its shape, but its data holds 1" in info.value.details()
        request = protocol.ModelInferRequest(model_name="squeezenet", model_version="7")
        with pytest.raises(grpc.RpcError) as info:
            infer(request.SerializeToString(), metadata=metadata, timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "has version 1 here, not 7" in info.value.details()


def test_v2_grpc_typed_contents_in_typed_contents_out(server, ours, pixels):
    """Without raw_input_contents: BYTES in bytes_contents, FP32 in fp32_contents."""
    with grpc.insecure_channel(server.target) as channel:
        infer = channel.unary_unary(
            f"/{protocol.INFERENCE_SERVICE}/ModelInfer",
            request_serializer=protocol.ModelInferRequest.SerializeToString,
            response_deserializer=protocol.ModelInferResponse.FromString,
        )
        images = protocol.ModelInferRequest(model_name="squeezenet", id="typed-1")
        entry = images.inputs.add(name="images", datatype="BYTES", shape=[1])
        entry.contents.bytes_contents.append(JPEG)
        tensor = protocol.ModelInferRequest(model_name="squeezenet", model_version="1")
        entry = tensor.inputs.add(name="data_0", datatype="FP32", shape=list(pixels.shape))
        entry.contents.fp32_contents.extend(pixels.ravel().tolist())
        tensor.outputs.add(name=GRAPH_NAME)
        metadata = tuple(bearer().items())
        by_image = infer(images, metadata=metadata, timeout=30)
        by_tensor = infer(tensor, metadata=metadata, timeout=30)
    assert by_image.id == "typed-1" and not by_image.raw_output_contents
    [out] = by_image.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("output_alias", "FP32", [1, 1000])
    np.testing.assert_allclose(out.contents.fp32_contents, ours, rtol=0, atol=1e-6)
    assert by_tensor.outputs[0].name == GRAPH_NAME
    np.testing.assert_allclose(by_tensor.outputs[0].contents.fp32_contents, ours, atol=1e-6)


def test_a_client_of_the_original_service_reads_the_graph_name_without_a_filter(server, ours):
    """What the retired Azure SDK did: no output_filter, Placeholder:0, its route header."""
    with grpc.insecure_channel(server.target) as channel:
        predict = channel.unary_unary(
            protocol.PREDICT_METHOD,
            request_serializer=protocol.PredictRequest.SerializeToString,
            response_deserializer=protocol.PredictResponse.FromString,
        )
        request = protocol.PredictRequest()
        request.inputs["Placeholder:0"].CopyFrom(make_tensor_proto([JPEG]))
        metadata = (("authorization", KEY), ("x-ms-aml-grpc-service-route", "/cats"))
        response = predict(request, metadata=metadata, timeout=30)
    assert sorted(response.outputs) == sorted(["output_alias", GRAPH_NAME])
    for key in response.outputs:
        np.testing.assert_allclose(tensor_to_numpy(response.outputs[key])[0], ours, atol=1e-6)


def test_metrics_are_valid_prometheus_by_protocol_and_status(server):
    from prometheus_client.parser import text_string_to_metric_families

    # At least one refusal per protocol, so the error series exist as well.
    _post(server, "/v2/models/squeezenet/infer", {"inputs": []})
    urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/metrics", timeout=30)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/metrics", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    requests = families["accel_widgets_requests"]
    assert requests.type == "counter"
    counted = {(s.labels["protocol"], s.labels["code"]) for s in requests.samples}
    assert {("grpc", "OK"), ("v2_grpc", "OK"), ("v2_rest", "OK")} <= counted
    assert {("v2_grpc", "INVALID_ARGUMENT"), ("v2_rest", "INVALID_ARGUMENT")} <= counted
    assert ("v2_rest", "UNAUTHENTICATED") in counted and ("v2_grpc", "NOT_FOUND") in counted
    latency = families["accel_widgets_request_duration_seconds"]
    assert latency.type == "histogram"
    buckets = [
        s
        for s in latency.samples
        if s.name.endswith("_bucket")
        and s.labels["protocol"] == "v2_grpc"
        and s.labels["code"] == "OK"
        and s.labels["model"] == "squeezenet"
    ]
    assert buckets and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value >= 2
    assert [b.value for b in buckets] == sorted(b.value for b in buckets)  # cumulative


@pytest.mark.parametrize(
    "message",
    [
        "ServerLiveRequest",
        "ServerLiveResponse",
        "ServerReadyRequest",
        "ServerReadyResponse",
        "ModelReadyRequest",
        "ModelReadyResponse",
        "ServerMetadataRequest",
        "ServerMetadataResponse",
        "ModelMetadataRequest",
        "ModelMetadataResponse",
        "ModelInferRequest",
        "ModelInferResponse",
        "InferParameter",
        "InferTensorContents",
    ],
)
def test_v2_messages_match_tritonclients_own_field_for_field(message):
    """Our descriptors (built in Python) against tritonclient's generated ones, nested too."""
    from tritonclient.grpc import service_pb2

    def fields(descriptor, path=""):
        for field in descriptor.fields:
            repeated = getattr(field, "is_repeated", None)
            kind = (field.number, field.type, repeated if repeated is not None else field.label)
            yield path + field.name, kind
            if field.message_type is not None and path.count(".") < 3:
                yield from fields(field.message_type, f"{path}{field.name}.")

    ours = dict(fields(protocol.POOL.FindMessageTypeByName(f"inference.{message}")))
    theirs = dict(fields(service_pb2.DESCRIPTOR.message_types_by_name[message]))
    assert ours or not theirs, message  # an empty message only where theirs is empty too
    # Triton's messages may have more fields (its extensions); ours must be a wire-exact subset.
    assert {name: theirs.get(name) for name in ours} == ours
