"""Every kind of client, unchanged, gets the same scores from two deployed catalog classifiers.

ResNet-50 and DenseNet-121 are built with random weights (no downloads), converted with
tf2onnx and deployed by the local target, each in its own server process. Then, per model:

* a client of the original service: no ``output_filter``, the ``Placeholder:0`` input, and
  the response read by the graph tensor name saved at conversion
  (``classifier/resnet_v1_50/predictions/Softmax:0``); with the name as a filter too;
* the official TF Serving client (``tensorflow-serving-api``, in a subprocess): the same,
  and GetModelMetadata listing the alias and the graph names;
* ``tritonclient.grpc`` and ``tritonclient.http`` (Open Inference Protocol): the JPEG as a
  ``BYTES`` input and the preprocessed ``FP32`` tensor; model ready and metadata;
* our own client.

All must agree. The ``kserve`` SDK is not here: it does not install beside the serving set
(it pins protobuf<7 and pulls 26 packages, FastAPI and pandas among them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from accel_widgets.engine.checks.samples import sample_photos
from accel_widgets.engine.clients.grpc_client import client_from_service
from accel_widgets.engine.conversion.convert import convert
from accel_widgets.engine.models.build import build_model
from accel_widgets.engine.models.catalog import get_spec
from accel_widgets.engine.store.workspace import ServiceRecord, Workspace
from accel_widgets.engine.targets import delete_service, deploy
from accel_widgets.preprocess import Preprocessing, prepare
from accel_widgets.serving import protocol
from accel_widgets.serving.tensors import make_tensor_proto, tensor_to_numpy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODELS = ("resnet50", "densenet121")

OFFICIAL_CLIENT = textwrap.dedent(
    """
    import json, sys

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    jpeg = open(sys.argv[1], "rb").read()
    results = {}
    for target in json.loads(sys.argv[2]):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(target["address"])
        )
        request = predict_pb2.PredictRequest()
        request.model_spec.name = target["model"]
        request.inputs["Placeholder:0"].CopyFrom(tf.make_tensor_proto([jpeg]))
        response = stub.Predict(request, 60.0)  # no output_filter, as the original SDK
        metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
        metadata_request.model_spec.name = target["model"]
        metadata_request.metadata_field.append("signature_def")
        metadata = stub.GetModelMetadata(metadata_request, 60.0)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        metadata.metadata["signature_def"].Unpack(signatures)
        outputs = signatures.signature_def["serving_default"].outputs
        results[target["model"]] = {
            "scores": tf.make_ndarray(response.outputs[target["tensor"]]).ravel().tolist(),
            "alias": tf.make_ndarray(response.outputs["output_alias"]).ravel().tolist(),
            "signature_outputs": {key: outputs[key].name for key in outputs},
        }
    print("RESULT " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "chelsea.jpg"
    path.write_bytes(sample_photos(["chelsea"])[0].data)
    return path


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[dict[str, ServiceRecord]]:
    workspace = Workspace(tmp_path_factory.mktemp("original-clients") / "workspace")
    records: dict[str, ServiceRecord] = {}
    try:
        for name in MODELS:
            build_model(name, weights="random", workspace=workspace)
            convert(name, workspace=workspace, timing_runs=1)
            records[name] = deploy(name, workspace=workspace, ready_timeout=120)
        yield records
    finally:
        for record in records.values():
            delete_service(record.name, workspace=workspace)


@pytest.fixture(scope="module")
def ours(services, jpeg) -> dict[str, np.ndarray]:
    scores = {}
    for name, record in services.items():
        with client_from_service(record) as client:
            scores[name] = np.asarray(client.score_file(jpeg))
    return scores


def _graph_name(model: str) -> str:
    return get_spec(model).legacy_outputs[0]


def _address(record: ServiceRecord) -> str:
    return f"127.0.0.1:{record.port}"


def _rest_address(record: ServiceRecord) -> str:
    return f"127.0.0.1:{record.info['rest_port']}"


@pytest.mark.parametrize("model", MODELS)
def test_a_client_of_the_original_service_reads_the_graph_tensor_name(services, ours, jpeg, model):
    """No output_filter, Placeholder:0 in, the Softmax tensor name out: what the SDK did."""
    with grpc.insecure_channel(_address(services[model])) as channel:
        predict = channel.unary_unary(
            protocol.PREDICT_METHOD,
            request_serializer=protocol.PredictRequest.SerializeToString,
            response_deserializer=protocol.PredictResponse.FromString,
        )
        request = protocol.PredictRequest()
        request.model_spec.name = model
        request.inputs["Placeholder:0"].CopyFrom(make_tensor_proto([jpeg.read_bytes()]))
        response = predict(request, timeout=60)
        filtered = protocol.PredictRequest()
        filtered.CopyFrom(request)
        filtered.output_filter.append(_graph_name(model))
        only = predict(filtered, timeout=60)
    tensor = response.outputs[_graph_name(model)]
    assert tensor.dtype == protocol.DATA_TYPES["DT_FLOAT"], "a default TensorProto: not answered"
    np.testing.assert_allclose(tensor_to_numpy(tensor)[0], ours[model], rtol=0, atol=1e-6)
    assert set(response.outputs) >= {"output_alias", *get_spec(model).legacy_outputs}
    assert list(only.outputs) == [_graph_name(model)]
    np.testing.assert_allclose(
        tensor_to_numpy(only.outputs[_graph_name(model)])[0], ours[model], rtol=0, atol=1e-6
    )


@pytest.fixture(scope="module")
def official(services, jpeg) -> dict[str, Any]:
    targets = [
        {"address": _address(r), "model": name, "tensor": _graph_name(name)}
        for name, r in services.items()
    ]
    run = subprocess.run(
        [sys.executable, "-c", OFFICIAL_CLIENT, str(jpeg), json.dumps(targets)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.parametrize("model", MODELS)
def test_the_official_tf_serving_client_reads_alias_and_graph_name_alike(official, ours, model):
    result = official[model]
    np.testing.assert_allclose(result["scores"], ours[model], rtol=0, atol=1e-6)
    np.testing.assert_allclose(result["alias"], ours[model], rtol=0, atol=1e-6)
    # GetModelMetadata lists both ways of reading the output.
    assert result["signature_outputs"]["output_alias"] == _graph_name(model)
    assert result["signature_outputs"][_graph_name(model)] == _graph_name(model)


def _pixels(services: dict[str, ServiceRecord], model: str, jpeg: Path) -> np.ndarray:
    """The preprocessed tensor, made with the preprocessing the server says it uses."""
    import urllib.request

    url = f"http://{_rest_address(services[model])}/v1/models/{model}/metadata"
    with urllib.request.urlopen(url, timeout=30) as response:
        metadata = json.loads(response.read())
    pre = Preprocessing.from_dict(metadata["metadata"]["preprocessing"])
    return prepare(jpeg.read_bytes(), pre).astype(np.float32)


@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_grpc_gets_the_same_scores(services, ours, jpeg, model):
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(_address(services[model]))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model)
    metadata = client.get_model_metadata(model, as_json=True)
    assert metadata["name"] == model
    assert {"name": "images", "datatype": "BYTES", "shape": ["-1"]} in metadata["inputs"]
    assert metadata["outputs"][0]["name"] == "output_alias"

    image = triton.InferInput("images", [1], "BYTES")
    image.set_data_from_numpy(np.array([jpeg.read_bytes()], dtype=object))
    from_jpeg = client.infer(model, [image]).as_numpy("output_alias")
    pixels = _pixels(services, model, jpeg)
    tensor = triton.InferInput(metadata["inputs"][1]["name"], list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    wanted = [triton.InferRequestedOutput(_graph_name(model))]
    from_pixels = client.infer(model, [tensor], outputs=wanted).as_numpy(_graph_name(model))
    np.testing.assert_allclose(from_jpeg[0], ours[model], rtol=0, atol=1e-6)
    np.testing.assert_allclose(from_pixels[0], ours[model], rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_http_gets_the_same_scores(services, ours, jpeg, model):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(_rest_address(services[model]))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model)
    metadata = client.get_model_metadata(model)
    assert metadata["versions"] == ["1"] and metadata["outputs"][0]["datatype"] == "FP32"

    image = triton.InferInput("images", [1], "BYTES")
    image.set_data_from_numpy(np.array([jpeg.read_bytes()], dtype=object))  # binary extension
    from_jpeg = client.infer(model, [image]).as_numpy("output_alias")
    pixels = _pixels(services, model, jpeg)
    tensor = triton.InferInput(metadata["inputs"][1]["name"], list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=False)  # plain JSON numbers
    wanted = [triton.InferRequestedOutput("output_alias", binary_data=False)]
    from_pixels = client.infer(model, [tensor], outputs=wanted).as_numpy("output_alias")
    np.testing.assert_allclose(from_jpeg[0], ours[model], rtol=0, atol=1e-6)
    np.testing.assert_allclose(from_pixels[0], ours[model], rtol=0, atol=1e-5)
