"""The official TensorFlow Serving Python client gets the same answers from our server.

``tensorflow-serving-api`` is installed with ``pip install --no-deps`` (its declared
dependency is the full ``tensorflow`` wheel, which would replace ``tensorflow-cpu``; the
protos it imports come from either). The client runs in a subprocess, so its TensorFlow
import and protobuf registrations stay out of the pytest process.
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from accel_widgets.engine.clients.grpc_client import client_from_service
from accel_widgets.engine.models.known_files import SAMPLE_PREPROCESSING
from accel_widgets.engine.models.register import register_onnx
from accel_widgets.engine.store.workspace import ServiceRecord, Workspace
from accel_widgets.engine.targets import delete_service, deploy

pytestmark = pytest.mark.timeout(180)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat

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

    address, jpeg_path = sys.argv[1], sys.argv[2]
    with open(jpeg_path, "rb") as f:
        jpeg = f.read()
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))

    def predict(model_name, input_name):
        request = predict_pb2.PredictRequest()
        if model_name is not None:  # None: no model_spec at all, as the retired Azure client
            request.model_spec.name = model_name
            request.model_spec.signature_name = "serving_default"
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto([jpeg]))
        try:
            response = stub.Predict(request, 10.0)
        except grpc.RpcError as exc:
            return {"code": exc.code().name, "details": exc.details()}
        tensor = response.outputs["output_alias"]
        scores = tf.make_ndarray(tensor)
        return {
            "model": response.model_spec.name,
            "outputs": sorted(response.outputs),
            "dtype": tf.dtypes.as_dtype(tensor.dtype).name,
            "shape": list(scores.shape),
            "scores": scores.astype("float64").ravel().tolist(),
        }

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "squeezenet"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, 10.0)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]

    print("RESULT " + json.dumps({
        "named": predict("squeezenet", "images"),
        "empty_name": predict("", "images"),
        "no_model_spec": predict(None, "images"),
        "legacy_input": predict(None, "Placeholder:0"),
        "metadata": {
            "model": response.model_spec.name,
            "inputs": {
                key: {"name": info.name, "dtype": tf.dtypes.as_dtype(info.dtype).name}
                for key, info in signature.inputs.items()
            },
            "outputs": {
                key: {"name": info.name, "dtype": tf.dtypes.as_dtype(info.dtype).name}
                for key, info in signature.outputs.items()
            },
        },
    }))
    """
)


@pytest.fixture(scope="module")
def cat_jpeg(tmp_path_factory) -> Path:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, format="JPEG", quality=90)
    path = tmp_path_factory.mktemp("photos") / "chelsea.jpg"
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory, weights_dir) -> Iterator[ServiceRecord]:
    """The real SqueezeNet deployed on 127.0.0.1 for this module, deleted afterwards."""
    workspace = Workspace(tmp_path_factory.mktemp("official") / "workspace")
    register_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        "squeezenet",
        preprocessing=SAMPLE_PREPROCESSING,
        workspace=workspace,
    )
    record = deploy("squeezenet", workspace=workspace, ready_timeout=60)
    try:
        yield record
    finally:
        delete_service(record.name, workspace=workspace)


@pytest.fixture(scope="module")
def official(service, cat_jpeg) -> dict[str, Any]:
    """What the official client got: Predict three ways, and GetModelMetadata."""
    if importlib.util.find_spec("tensorflow_serving") is None:
        pytest.fail(
            "tensorflow-serving-api is not installed: "
            'python -m pip install --no-deps "tensorflow-serving-api>=2.16" '
            "(scripts/test.sh does this)"
        )
    run = subprocess.run(
        [sys.executable, "-c", OFFICIAL_CLIENT, f"127.0.0.1:{service.port}", str(cat_jpeg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.fixture(scope="module")
def our_scores(service, cat_jpeg) -> np.ndarray:
    with client_from_service(service) as client:
        return client.score_file(cat_jpeg)


def test_official_client_gets_the_same_scores_as_our_client(official, our_scores):
    named = official["named"]

    assert named["model"] == "squeezenet"
    # No output_filter: the alias and the graph's own output name (what a client of the
    # original service reads), the same tensor under both.
    assert named["outputs"] == ["output_alias", "softmaxout_1"]
    assert named["shape"] == [1, 1000]
    np.testing.assert_allclose(named["scores"], our_scores, rtol=1e-6, atol=1e-7)
    assert int(np.argmax(named["scores"])) in CAT_CLASSES


def test_official_client_with_an_empty_model_name_gets_tf_servings_refusal(official):
    """TF Serving answers INVALID_ARGUMENT "ModelSpec has no name specified" (issue 22)."""
    unnamed = official["empty_name"]

    assert unnamed["code"] == "INVALID_ARGUMENT"
    assert "ModelSpec has no name specified" in unnamed["details"]
    assert "'squeezenet'" in unnamed["details"]  # and the name to use


def test_official_client_without_a_model_spec_reaches_the_served_model(official, our_scores):
    """What the retired Azure client sends (no model_spec): the default model answers."""
    unnamed = official["no_model_spec"]

    assert unnamed["model"] == "squeezenet"
    assert unnamed["shape"] == [1, 1000]
    np.testing.assert_allclose(unnamed["scores"], our_scores, rtol=1e-6, atol=1e-7)


def test_official_client_with_the_legacy_placeholder_input_name_scores_the_same(
    official, our_scores
):
    legacy = official["legacy_input"]

    assert legacy["outputs"] == ["output_alias", "softmaxout_1"]
    np.testing.assert_allclose(legacy["scores"], our_scores, rtol=1e-6, atol=1e-7)
    assert int(np.argmax(legacy["scores"])) in CAT_CLASSES


def test_official_metadata_call_shows_the_images_input(official):
    metadata = official["metadata"]

    assert metadata["model"] == "squeezenet"
    assert metadata["inputs"]["images"] == {"name": "Placeholder:0", "dtype": "string"}
    assert sorted(metadata["outputs"]) == ["output_alias", "softmaxout_1"]
    assert metadata["outputs"]["softmaxout_1"]["name"] == "softmaxout_1"


def test_official_metadata_output_dtype_matches_what_predict_returns(official):
    declared = official["metadata"]["outputs"]["output_alias"]["dtype"]

    assert official["named"]["dtype"] == declared
