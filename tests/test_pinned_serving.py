"""The serving rules a small change could break unnoticed, pinned as what a client sees.

Each test states one fact a client relies on: which routes need the key (a table of every
gRPC method and HTTP route, checked both ways), the request limits (a batch of exactly
``max_batch`` images is served and one more is refused, on every way of sending images),
and byte counts (raw tensor data of exactly the size the shape needs is served; one byte
more or one byte less is INVALID_ARGUMENT naming both counts, never INTERNAL).

The server is the real one (gRPC and HTTP ports on loopback, the real pipeline, a real ONNX
model) run on threads of the test process: see tests/pinned_support.py for why.
"""

from __future__ import annotations

import base64
import json
import struct
import time

import grpc
import numpy as np
import pytest
from pinned_support import (
    CLASSES,
    COLOUR_MODEL,
    colour_config,
    grpc_call,
    http,
    inprocess_server,
    png,
)

from accel_widgets.errors import ServingError
from accel_widgets.serving import protocol, v2
from accel_widgets.serving.auth import MISSING_KEY, WRONG_KEY, KeyChecker, load_keys
from accel_widgets.serving.metrics import Metrics
from accel_widgets.serving.pipeline import Pipeline, note_model
from accel_widgets.serving.status import RequestError
from accel_widgets.serving.tensors import make_tensor_proto
from accel_widgets.serving.v2 import flatten, join_bytes

KEY = "pinned-key-0123456789abcdef"
MAX_BATCH = 3
PIXELS = (224, 224, 3)
PIXEL_BYTES = int(np.prod(PIXELS)) * 4
M = COLOUR_MODEL


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A server with an API key and a batch limit of :data:`MAX_BATCH`."""
    folder = tmp_path_factory.mktemp("pinned-keyed")
    with inprocess_server(colour_config(folder, max_batch=MAX_BATCH), keys=(KEY,)) as server:
        yield server


# -- requests every route can be sent -----------------------------------------------------------


def _predict(images: int = 1) -> protocol.PredictRequest:
    request = protocol.PredictRequest()
    request.model_spec.name = M
    request.inputs["images"].CopyFrom(make_tensor_proto([png()] * images))
    return request


def _metadata() -> protocol.GetModelMetadataRequest:
    request = protocol.GetModelMetadataRequest()
    request.model_spec.name = M
    request.metadata_field.append(protocol.SIGNATURE_DEF_FIELD)
    return request


def _infer_raw(images: list[bytes]) -> protocol.ModelInferRequest:
    request = protocol.ModelInferRequest(model_name=M)
    request.inputs.add(name="images", datatype="BYTES", shape=[len(images)])
    request.raw_input_contents.append(b"".join(struct.pack("<I", len(i)) + i for i in images))
    return request


def _infer_typed(images: list[bytes]) -> protocol.ModelInferRequest:
    request = protocol.ModelInferRequest(model_name=M)
    entry = request.inputs.add(name="images", datatype="BYTES", shape=[len(images)])
    entry.contents.bytes_contents.extend(images)
    return request


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def _v2_json(images: int = 1) -> dict:
    entry = {"name": "images", "datatype": "BYTES", "shape": [images]}
    return {"inputs": [{**entry, "data": [_b64(png())] * images}]}


def _v1_json(images: int = 1) -> dict:
    return {"instances": [_b64(png())] * images}


V2 = "/" + protocol.INFERENCE_SERVICE + "/"

#: Every gRPC method: (method, request, response class, needs the key).
GRPC_ROUTES = [
    (protocol.PREDICT_METHOD, _predict, protocol.PredictResponse, True),
    (protocol.GET_MODEL_METADATA_METHOD, _metadata, protocol.GetModelMetadataResponse, True),
    (V2 + "ModelInfer", lambda: _infer_raw([png()]), protocol.ModelInferResponse, True),
    (V2 + "ModelMetadata", lambda: protocol.ModelMetadataRequest(name=M), None, True),
    (V2 + "ModelReady", lambda: protocol.ModelReadyRequest(name=M), None, True),
    (V2 + "ServerMetadata", protocol.ServerMetadataRequest, None, True),
    (V2 + "ServerLive", protocol.ServerLiveRequest, None, False),
    (V2 + "ServerReady", protocol.ServerReadyRequest, None, False),
    (protocol.HEALTH_CHECK_METHOD, protocol.HealthCheckRequest, None, False),
]
RESPONSES = {
    V2 + "ModelMetadata": protocol.ModelMetadataResponse,
    V2 + "ModelReady": protocol.ModelReadyResponse,
    V2 + "ServerMetadata": protocol.ServerMetadataResponse,
    V2 + "ServerLive": protocol.ServerLiveResponse,
    V2 + "ServerReady": protocol.ServerReadyResponse,
    protocol.HEALTH_CHECK_METHOD: protocol.HealthCheckResponse,
}

#: Every HTTP route: (method, path, body, needs the key). Probes and scrapers send no key.
HTTP_ROUTES = [
    ("GET", "/v2/health/live", None, False),
    ("GET", "/v2/health/ready", None, False),
    ("GET", "/metrics", None, False),
    ("GET", "/healthz", None, False),
    ("GET", "/v2", None, True),
    ("GET", f"/v2/models/{M}", None, True),
    ("GET", f"/v2/models/{M}/versions/1", None, True),
    ("GET", f"/v2/models/{M}/ready", None, True),
    ("GET", f"/v2/models/{M}/versions/1/ready", None, True),
    ("POST", f"/v2/models/{M}/infer", _v2_json(), True),
    ("POST", f"/v2/models/{M}/versions/1/infer", _v2_json(), True),
    ("GET", f"/v1/models/{M}", None, True),
    ("GET", f"/v1/models/{M}/versions/1", None, True),
    ("GET", f"/v1/models/{M}/metadata", None, True),
    ("GET", f"/v1/models/{M}/versions/1/metadata", None, True),
    ("POST", f"/v1/models/{M}:predict", _v1_json(), True),
    ("POST", f"/v1/models/{M}/versions/1:predict", _v1_json(), True),
]


# -- who may call what ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "make", "response", "needs_key"), GRPC_ROUTES, ids=[r[0] for r in GRPC_ROUTES]
)
def test_every_grpc_method_needs_the_key_unless_it_is_a_probe(
    keyed, method, make, response, needs_key
):
    response = response or RESPONSES[method]
    code, details, _ = grpc_call(keyed.port, method, make(), response)
    if needs_key:
        assert code == grpc.StatusCode.UNAUTHENTICATED, (method, code, details)
        assert "authorization: Bearer <key>" in details
        code, details, _ = grpc_call(keyed.port, method, make(), response, key="wrong-" + KEY)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "not valid" in details
        assert KEY not in details
    else:
        assert code == grpc.StatusCode.OK, (method, code, details)
    code, details, answer = grpc_call(keyed.port, method, make(), response, key=KEY)
    assert code == grpc.StatusCode.OK, (method, code, details)
    assert answer is not None


@pytest.mark.parametrize(
    ("verb", "path", "body", "needs_key"), HTTP_ROUTES, ids=[f"{r[0]} {r[1]}" for r in HTTP_ROUTES]
)
def test_every_http_route_needs_the_key_unless_it_is_a_probe(keyed, verb, path, body, needs_key):
    status, _, answer = http(keyed.rest.port, verb, path, body)
    if needs_key:
        assert status == 401, (path, status, answer)
        assert "authorization: Bearer <key>" in json.loads(answer)["error"]
        status, _, answer = http(keyed.rest.port, verb, path, body, key="wrong-" + KEY)
        assert status == 401 and KEY.encode() not in answer
    else:
        assert status == 200, (path, status, answer)
    status, _, answer = http(keyed.rest.port, verb, path, body, key=KEY)
    assert status == 200, (path, status, answer)


def test_the_key_is_taken_with_or_without_bearer_in_any_case_and_spaces(keyed):
    for value in (f"Bearer {KEY}", f"bearer {KEY}", f"BEARER   {KEY}  ", KEY, f"  {KEY} "):
        status, _, answer = http(
            keyed.rest.port, "GET", f"/v1/models/{M}", headers={"Authorization": value}
        )
        assert status == 200, (value, answer)
    for value in (f"Bearer {KEY}x", f"Bearer{KEY}", KEY[:-1], f"Basic {KEY}", " "):
        status, _, _ = http(
            keyed.rest.port, "GET", f"/v1/models/{M}", headers={"Authorization": value}
        )
        assert status == 401, value


def test_refusals_are_counted_under_their_code_and_protocol(keyed):
    """/metrics counts each request once, by protocol and status code (the pipeline's job)."""
    before = _counts(keyed)
    grpc_call(keyed.port, protocol.PREDICT_METHOD, _predict(), protocol.PredictResponse)
    grpc_call(keyed.port, protocol.PREDICT_METHOD, _predict(), protocol.PredictResponse, key=KEY)
    http(keyed.rest.port, "GET", f"/v2/models/{M}")
    http(keyed.rest.port, "GET", f"/v2/models/{M}", key=KEY)
    http(keyed.rest.port, "GET", "/v2/health/live")
    after = _counts(keyed)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after if after[k] != before.get(k)}
    assert grew == {
        ("-", "grpc", "UNAUTHENTICATED"): 1,
        (M, "grpc", "OK"): 1,
        ("-", "v2_rest", "UNAUTHENTICATED"): 1,
        (M, "v2_rest", "OK"): 1,
        ("-", "v2_rest", "OK"): 1,
    }


def _counts(server) -> dict[tuple[str, str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    _, _, body = http(server.rest.port, "GET", "/metrics")
    counts = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name != "accel_widgets_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                counts[(labels["model"], labels["protocol"], labels["code"])] = sample.value
    return counts


# -- the batch limit, at the edge ----------------------------------------------------------------


def _grpc_infer(server, request) -> tuple[grpc.StatusCode, str, object]:
    method = V2 + "ModelInfer"
    return grpc_call(server.port, method, request, protocol.ModelInferResponse, key=KEY)


@pytest.mark.parametrize("spelling", ["raw", "typed"])
def test_v2_grpc_bytes_input_of_exactly_max_batch_images_is_served_and_one_more_refused(
    keyed, spelling
):
    make = _infer_raw if spelling == "raw" else _infer_typed
    code, details, response = _grpc_infer(keyed, make([png()] * MAX_BATCH))
    assert code == grpc.StatusCode.OK, details
    assert list(response.outputs[0].shape) == [MAX_BATCH, CLASSES]
    code, details, _ = _grpc_infer(keyed, make([png()] * (MAX_BATCH + 1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"holds {MAX_BATCH + 1} images" in details
    assert f"at most {MAX_BATCH} per request" in details


def test_v2_rest_bytes_input_of_exactly_max_batch_images_is_served_and_one_more_refused(keyed):
    path = f"/v2/models/{M}/infer"
    status, _, answer = http(keyed.rest.port, "POST", path, _v2_json(MAX_BATCH), key=KEY)
    assert status == 200, answer
    assert json.loads(answer)["outputs"][0]["shape"] == [MAX_BATCH, CLASSES]
    status, _, answer = http(keyed.rest.port, "POST", path, _v2_json(MAX_BATCH + 1), key=KEY)
    assert status == 400
    assert f"holds {MAX_BATCH + 1} images" in json.loads(answer)["error"]


def test_v2_rest_binary_bytes_input_at_the_limit_and_one_more(keyed):
    for count, expected in ((MAX_BATCH, 200), (MAX_BATCH + 1, 400)):
        blob = b"".join(struct.pack("<I", len(i)) + i for i in [png()] * count)
        entry = {"name": "images", "datatype": "BYTES", "shape": [count]}
        header = json.dumps(
            {"inputs": [{**entry, "parameters": {"binary_data_size": len(blob)}}]}
        ).encode()
        status, _, answer = http(
            keyed.rest.port,
            "POST",
            f"/v2/models/{M}/infer",
            header + blob,
            key=KEY,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert status == expected, (count, answer)


def test_tf_serving_predict_at_the_batch_limit_and_one_more(keyed):
    code, details, response = grpc_call(
        keyed.port, protocol.PREDICT_METHOD, _predict(MAX_BATCH), protocol.PredictResponse, KEY
    )
    assert code == grpc.StatusCode.OK, details
    assert [d.size for d in response.outputs["output_alias"].tensor_shape.dim] == [MAX_BATCH, 10]
    code, details, _ = grpc_call(
        keyed.port, protocol.PREDICT_METHOD, _predict(MAX_BATCH + 1), protocol.PredictResponse, KEY
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"a batch of {MAX_BATCH + 1} is above this server's limit of {MAX_BATCH}" in details


def test_v2_numeric_input_at_the_element_limit_and_one_row_more(keyed):
    """A preprocessed tensor may hold ``max_batch`` full rows: one more row is refused before
    anything is allocated (the limit counts elements, the shape is what the client claims)."""
    fits = np.zeros((MAX_BATCH, *PIXELS), np.float32)
    request = protocol.ModelInferRequest(model_name=M)
    request.inputs.add(name="pixels", datatype="FP32", shape=list(fits.shape))
    request.raw_input_contents.append(fits.tobytes())
    code, details, response = _grpc_infer(keyed, request)
    assert code == grpc.StatusCode.OK, details
    assert list(response.outputs[0].shape) == [MAX_BATCH, CLASSES]
    over = protocol.ModelInferRequest(model_name=M)
    over.inputs.add(name="pixels", datatype="FP32", shape=[MAX_BATCH + 1, *PIXELS])
    over.raw_input_contents.append(b"")  # refused on the shape alone
    code, details, _ = _grpc_infer(keyed, over)
    elements = (MAX_BATCH + 1) * int(np.prod(PIXELS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"holds {elements:,} elements" in details
    assert f"at most {MAX_BATCH * int(np.prod(PIXELS)):,} per request" in details


# -- byte counts, exact both ways ----------------------------------------------------------------


def _pixels_predict(content: bytes) -> protocol.PredictRequest:
    request = protocol.PredictRequest()
    request.model_spec.name = M
    tensor = request.inputs["pixels"]
    tensor.dtype = protocol.DATA_TYPES["DT_FLOAT"]
    for size in (1, *PIXELS):
        tensor.tensor_shape.dim.add(size=size)
    tensor.tensor_content = content
    return request


@pytest.mark.parametrize("extra", [0, 1, -1, 4, -4])
def test_tensor_content_must_hold_exactly_the_bytes_the_shape_needs(keyed, extra):
    content = np.full((1, *PIXELS), 255, np.float32).tobytes()
    if extra > 0:
        content += b"\0" * extra
    elif extra < 0:
        content = content[:extra]
    code, details, response = grpc_call(
        keyed.port,
        protocol.PREDICT_METHOD,
        _pixels_predict(content),
        protocol.PredictResponse,
        KEY,
    )
    if extra == 0:
        assert code == grpc.StatusCode.OK, details
        scores = response.outputs["output_alias"].float_val
        assert len(scores) == CLASSES and int(np.argmax(scores)) in (0, 1, 2)
        return
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert f"tensor_content has {PIXEL_BYTES + extra:,} bytes" in details
    assert f"needs {PIXEL_BYTES:,}" in details


@pytest.mark.parametrize("extra", [0, 1, -1])
def test_v2_raw_contents_must_hold_exactly_the_bytes_the_shape_needs(keyed, extra):
    content = np.zeros((1, *PIXELS), np.float32).tobytes()
    content = content + b"\0" * extra if extra >= 0 else content[:extra]
    request = protocol.ModelInferRequest(model_name=M)
    request.inputs.add(name="pixels", datatype="FP32", shape=[1, *PIXELS])
    request.raw_input_contents.append(content)
    code, details, _ = _grpc_infer(keyed, request)
    if extra == 0:
        assert code == grpc.StatusCode.OK, details
        return
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert f"needs {PIXEL_BYTES:,} bytes of raw contents" in details
    assert f"but {PIXEL_BYTES + extra:,} came" in details


@pytest.mark.parametrize("extra", [0, 1, -1])
def test_v2_rest_binary_data_size_must_match_the_shape(keyed, extra):
    blob = np.zeros((1, *PIXELS), np.float32).tobytes()
    blob = blob + b"\0" * extra if extra >= 0 else blob[:extra]
    entry = {"name": "pixels", "datatype": "FP32", "shape": [1, *PIXELS]}
    header = json.dumps(
        {"inputs": [{**entry, "parameters": {"binary_data_size": len(blob)}}]}
    ).encode()
    status, _, answer = http(
        keyed.rest.port,
        "POST",
        f"/v2/models/{M}/infer",
        header + blob,
        key=KEY,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    if extra == 0:
        assert status == 200, answer
    else:
        assert status == 400, answer
        assert f"but {PIXEL_BYTES + extra:,} came" in json.loads(answer)["error"]


def test_raw_bytes_elements_must_account_for_every_byte(keyed):
    """The raw BYTES form: each element is a 4-byte length and that many bytes. A length
    that runs past the end, a torn length prefix, or fewer elements than the shape are each
    refused with what was wrong."""
    image = png()
    whole = struct.pack("<I", len(image)) + image
    cases = {
        "a raw BYTES element says it has": struct.pack("<I", len(image) + 1) + image,
        "end inside an element's 4-byte length": whole + b"\0\0\0",
        "has 2 elements by its shape, but its data holds 1": whole,
    }
    for expected, raw in cases.items():
        request = protocol.ModelInferRequest(model_name=M)
        shape = [2] if "2 elements" in expected else [1]
        request.inputs.add(name="images", datatype="BYTES", shape=shape)
        request.raw_input_contents.append(raw)
        code, details, _ = _grpc_infer(keyed, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (expected, details)
        assert expected in details
    # and an element of length 0 at the end is an element, not a torn prefix
    request = protocol.ModelInferRequest(model_name=M)
    request.inputs.add(name="images", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(whole + struct.pack("<I", 0))
    code, details, _ = _grpc_infer(keyed, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "image 1" in details, details


def test_a_png_cut_inside_its_header_is_invalid_argument_not_internal(keyed):
    """A 20-byte PNG (magic and a torn IHDR) once crashed the header check (struct.error)
    and was answered INTERNAL; it is a bad image, in the client's words."""
    cut = png()[:20]
    code, details, _ = _grpc_infer(keyed, _infer_raw([cut]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "corrupt or truncated" in details


# -- the Open Inference Protocol's refusals and metadata, word for word --------------------------


def _v2_rest(server, body, path: str = f"/v2/models/{M}/infer") -> tuple[int, dict]:
    status, _, answer = http(server.rest.port, "POST", path, body, key=KEY)
    return status, json.loads(answer)


NUMERIC = "BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"name": "", "datatype": "BYTES", "shape": [1], "data": ["x"]},
            "every input needs a non-empty 'name'",
        ),
        (
            {"name": "images", "datatype": "FLOAT", "shape": [1], "data": [1.0]},
            f"input 'images' has datatype 'FLOAT'; use BYTES for encoded images or one of "
            f"{NUMERIC} for a preprocessed tensor",
        ),
        (
            {"name": "pixels", "datatype": "FP32", "shape": [1, -224], "data": [1.0]},
            "input 'pixels' has shape [1, -224]; a shape is a list of sizes >= 0",
        ),
        (
            {"name": "pixels", "datatype": "FP32", "shape": [True], "data": [1.0]},
            "input 'pixels' has shape [True]; a shape is a list of sizes >= 0",
        ),
        (
            {"name": "pixels", "datatype": "FP32", "shape": "1", "data": [1.0]},
            "input 'pixels' has shape '1'; a shape is a list of sizes >= 0",
        ),
        (
            {"name": "pixels", "datatype": "BYTES", "shape": [1], "data": ["x"]},
            "input 'pixels' (BYTES [1]): the metadata gives 'pixels' as FP32 (a preprocessed "
            "tensor); send encoded images as BYTES to 'images'",
        ),
        (
            {"name": "Placeholder:0", "datatype": "FP32", "shape": [1], "data": [1.0]},
            "input 'Placeholder:0' (FP32 [1]): the metadata gives 'Placeholder:0' as BYTES "
            "(encoded images); send a preprocessed tensor as FP32 to 'pixels'",
        ),
        (
            {"name": "pixels", "datatype": "FP32", "shape": [2], "data": [1.0]},
            "input 'pixels' (FP32 [2]) has 2 elements by its shape, but its data holds 1",
        ),
        (
            {"name": "images", "datatype": "BYTES", "shape": [2], "data": ["x"]},
            "input 'images' (BYTES [2]) has 2 elements by its shape, but its data holds 1",
        ),
        (
            {"name": "pixels", "datatype": "FP32", "shape": [2], "data": [1.0, "a"]},
            "input 'pixels' (FP32 [2]) holds values that are not FP32: could not convert "
            "string to float: 'a'",
        ),
    ],
    ids=lambda value: "" if isinstance(value, str) else value["name"] + " " + str(value["shape"]),
)
def test_v2_input_refusals_say_what_is_wrong(keyed, entry, message):
    status, answer = _v2_rest(keyed, {"inputs": [entry]})
    assert status == 400
    assert answer["error"] == message


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_v2_json_numbers_must_be_finite_and_fit(keyed):
    """1e400 parses as infinity in Python and 70000 is infinity as FP16: JSON has neither."""
    body = b'{"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [1e400]}]}'
    status, _, answer = http(keyed.rest.port, "POST", f"/v2/models/{M}/infer", body, key=KEY)
    assert status == 400
    assert json.loads(answer)["error"] == (
        "input 'pixels' (FP32 [1]) holds a number that is not a finite FP32 (too big for it, "
        "such as 1e400, or NaN); JSON numbers must be finite"
    )
    entry = {"name": "pixels", "datatype": "FP16", "shape": [1], "data": [70000]}
    status, answer = _v2_rest(keyed, {"inputs": [entry]})
    assert status == 400 and "not a finite FP16" in answer["error"]


def test_v2_an_input_named_twice_is_refused(keyed):
    entry = {"name": "images", "datatype": "BYTES", "shape": [1], "data": [_b64(png())]}
    status, answer = _v2_rest(keyed, {"inputs": [entry, entry]})
    assert (status, answer["error"]) == (
        400,
        "inputs ['images', 'images'] name the same input twice",
    )


def test_v2_a_version_that_is_no_number_is_refused(keyed):
    status, answer = _v2_rest(keyed, _v2_json(), f"/v2/models/{M}/versions/latest/infer")
    assert status == 400
    assert answer["error"] == (
        "model version 'latest' is not a number; leave it empty to use the one served"
    )
    status, _, _ = http(
        keyed.rest.port, "POST", f"/v2/models/{M}/versions/1/infer", _v2_json(), key=KEY
    )
    assert status == 200


def test_v2_outputs_are_named_as_asked_or_by_alias(keyed):
    body = {**_v2_json(), "outputs": [{"name": "probs:0"}]}
    status, answer = _v2_rest(keyed, body)
    assert status == 200
    assert [o["name"] for o in answer["outputs"]] == ["probs:0"]
    status, answer = _v2_rest(keyed, _v2_json())
    assert [(o["name"], o["datatype"], o["shape"]) for o in answer["outputs"]] == [
        ("output_alias", "FP32", [1, CLASSES])
    ]
    assert int(np.argmax(answer["outputs"][0]["data"])) == 0  # the red picture


def test_v2_metadata_of_the_server_and_the_model(keyed):
    from accel_widgets import __version__

    _, _, answer = http(keyed.rest.port, "GET", "/v2", key=KEY)
    assert json.loads(answer) == {
        "name": "accel-widgets",
        "version": __version__,
        "extensions": ["binary_tensor_data"],
    }
    _, _, answer = http(keyed.rest.port, "GET", f"/v2/models/{M}", key=KEY)
    assert json.loads(answer) == {
        "name": M,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "images", "datatype": "BYTES", "shape": [-1]},
            {"name": "pixels", "datatype": "FP32", "shape": [-1, 224, 224, 3]},
        ],
        "outputs": [{"name": "output_alias", "datatype": "FP32", "shape": [-1, CLASSES]}],
    }
    code, details, response = grpc_call(
        keyed.port,
        V2 + "ServerMetadata",
        protocol.ServerMetadataRequest(),
        protocol.ServerMetadataResponse,
        key=KEY,
    )
    assert code == grpc.StatusCode.OK, details

    assert (response.name, response.version, list(response.extensions)) == (
        "accel-widgets",
        __version__,
        [],
    )


def test_a_fp64_tensor_that_converts_exactly_is_taken_for_a_fp32_model(keyed):
    entry = {"name": "pixels", "datatype": "FP64", "shape": [1, *PIXELS]}
    values = np.zeros((1, *PIXELS))
    values[..., 0] = 255.0
    request = protocol.ModelInferRequest(model_name=M)
    request.inputs.add(**entry)
    request.raw_input_contents.append(values.astype("<f8").tobytes())
    code, details, response = _grpc_infer(keyed, request)
    assert code == grpc.StatusCode.OK, details
    scores = np.frombuffer(response.raw_output_contents[0], "<f4")
    assert int(np.argmax(scores)) == 0


# -- the pipeline: one status, one count, one log line per request -------------------------------


def test_an_unexpected_failure_is_internal_without_details_and_logged(keyed, monkeypatch, caplog):
    """Fault injection: the model layer raises what it never should (a bug); the client gets
    INTERNAL with no detail it should not see, and the server log gets the traceback."""

    def broken(*args, **kwargs):
        raise RuntimeError("secret path /srv/models/x.onnx")

    monkeypatch.setattr(keyed.registry, "predict", broken)
    with caplog.at_level("ERROR", logger="accel_widgets.serving"):
        code, details, _ = _grpc_infer(keyed, _infer_raw([png()]))
        status, _, answer = http(
            keyed.rest.port, "POST", f"/v2/models/{M}/infer", _v2_json(), key=KEY
        )
    assert code == grpc.StatusCode.INTERNAL
    assert details == "internal server error; see the server log"
    assert status == 500 and json.loads(answer) == {"error": details}
    failures = [r for r in caplog.records if "request failed unexpectedly" in r.getMessage()]
    assert [r.getMessage() for r in failures] == [
        "v2_grpc request failed unexpectedly",
        "v2_rest request failed unexpectedly",
    ]
    assert all("secret path" in r.exc_text for r in failures)


def test_the_route_header_of_the_retired_client_is_taken(keyed, caplog):
    request = _predict()
    metadata = (
        ("authorization", f"Bearer {KEY}"),
        ("x-ms-aml-grpc-service-route", "/api/v1/service/colours"),
    )
    with (
        caplog.at_level("DEBUG", logger="accel_widgets.serving"),
        grpc.insecure_channel(f"127.0.0.1:{keyed.port}") as channel,
    ):
        call = channel.unary_unary(
            protocol.PREDICT_METHOD,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=protocol.PredictResponse.FromString,
        )
        response = call(request, timeout=30, metadata=metadata)
    assert len(response.outputs["output_alias"].float_val) == CLASSES
    messages = [r.getMessage() for r in caplog.records]
    assert "route header /api/v1/service/colours" in messages
    assert any(m.startswith(f"grpc {M} OK ") and m.endswith(" ms") for m in messages)


# -- the keys file and the raw BYTES form, without a server -------------------------------------


def test_the_keys_file_is_read_one_key_a_line_and_a_missing_one_is_named(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# the workshop's keys\n\n  first-key  \nsecond-kéy\n", encoding="utf-8")
    path.chmod(0o600)
    assert load_keys(path) == (b"first-key", "second-kéy".encode())
    missing = tmp_path / "nowhere"
    with pytest.raises(ServingError) as refused:
        load_keys(missing)
    assert str(refused.value) == (
        f"cannot read the API keys file {missing}: No such file or directory"
    )


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o600, False), (0o400, False), (0o640, True), (0o604, True), (0o610, True)],
)
def test_a_keys_file_others_can_read_is_served_with_a_warning(tmp_path, caplog, mode, warned):
    """A Kubernetes secret volume is 0644: served (refusing would push users to turn auth
    off), with a warning that names the file and the fix; 0600 and 0400 are quiet."""
    path = tmp_path / "keys"
    path.write_text("the-key\n")
    path.chmod(mode)
    with caplog.at_level("WARNING", logger="accel_widgets.serving"):
        assert load_keys(path) == (b"the-key",)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    expected = [f"API keys file {path} is readable by other users; chmod 600 it"]
    assert warnings == (expected if warned else [])


def test_any_configured_key_is_taken_and_a_key_no_text_encoding_fits_is_just_wrong():
    checker = KeyChecker((b"first", b"second"))
    for value in ("first", "second", "Bearer first", "bEaReR second", "  Bearer   first  "):
        checker.check(value)
    for value in ("\udcff", "Bearer \udcff", "firs", "first second"):
        with pytest.raises(RequestError) as refused:
            checker.check(value)
        assert (refused.value.code, refused.value.message) == ("UNAUTHENTICATED", WRONG_KEY)
    for value in (None, ""):
        with pytest.raises(RequestError) as refused:
            checker.check(value)
        assert (refused.value.code, refused.value.message) == ("UNAUTHENTICATED", MISSING_KEY)


def test_raw_bytes_elements_are_a_little_endian_length_and_the_bytes():
    """What tritonclient sends: 4 bytes of length (unsigned, little-endian), then the element."""
    items = [b"ab", b"", b"\xff" * 300]
    raw = join_bytes(items)
    assert raw == (
        b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x2c\x01\x00\x00" + b"\xff" * 300
    )
    assert join_bytes([]) == b""


def test_a_raw_bytes_length_above_two_gigabytes_is_a_length_not_a_negative_number(keyed):
    request = protocol.ModelInferRequest(model_name=M)
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\xff\xff\xff\xff" + png())
    code, details, _ = _grpc_infer(keyed, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details == (
        "input 'images' (BYTES [1]): a raw BYTES element says it has 4,294,967,295 bytes but "
        f"only {len(png()):,} remain"
    )


def test_nested_values_are_read_in_order_at_any_depth():
    assert list(flatten([1, [2, [3, [4]]], 5, [], [[6, 7]], (8,)])) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert list(flatten([])) == [] and list(flatten([[[]]])) == []
    deep: list = [9]
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = [deep]
    assert list(flatten(deep)) == [9]


def test_v2_rest_images_may_be_nested_like_their_shape(keyed):
    red, blue = _b64(png((255, 0, 0))), _b64(png((0, 0, 255)))
    entry = {"name": "images", "datatype": "BYTES", "shape": [2, 1], "data": [[red], [blue]]}
    status, answer = _v2_rest(keyed, {"inputs": [entry]})
    assert status == 200, answer
    scores = np.asarray(answer["outputs"][0]["data"]).reshape(2, CLASSES)
    assert scores.argmax(axis=1).tolist() == [0, 2]


def test_v2_grpc_typed_floats_may_be_infinite_where_json_may_not(keyed):
    """gRPC carries IEEE floats, infinities included, and a model may take them; only JSON,
    which has no such numbers, refuses them (see the test above)."""
    pixels = np.zeros(PIXELS, np.float32)
    pixels[0, 0, 0] = np.inf
    request = protocol.ModelInferRequest(model_name=M)
    entry = request.inputs.add(name="pixels", datatype="FP32", shape=[1, *PIXELS])
    entry.contents.fp32_contents.extend(pixels.reshape(-1).tolist())
    code, details, response = _grpc_infer(keyed, request)
    assert code == grpc.StatusCode.OK, details
    assert response.outputs[0].name == "output_alias"


def test_v2_rest_numbers_of_the_pixels_input_are_scored(keyed):
    """A preprocessed tensor as JSON numbers, nested like its shape: a red picture's pixels
    score red, as the same picture sent as an image does."""
    pixels = np.zeros(PIXELS, np.float32)
    pixels[..., 0] = 255.0
    entry = {"name": "pixels", "datatype": "FP32", "shape": [1, *PIXELS]}
    status, answer = _v2_rest(keyed, {"inputs": [{**entry, "data": pixels.tolist()}]})
    assert status == 200, answer
    assert int(np.argmax(answer["outputs"][0]["data"])) == 0


def test_v2_images_must_be_bytes_whoever_calls(keyed):
    """Both wire formats hand bytes over (gRPC by type, REST after decoding each element);
    a Python caller of :func:`v2.from_values` is held to the same rule."""
    model = keyed.registry.get(M)
    spec = v2.tensor("images", "BYTES", [2])
    assert v2.from_values(model, spec, [b"a", [b"b"]]) == [b"a", b"b"]
    with pytest.raises(RequestError) as refused:
        v2.from_values(model, spec, [b"a", "b"])
    assert (refused.value.code, refused.value.message) == (
        "INVALID_ARGUMENT",
        "input 'images' (BYTES [2]) must hold bytes",
    )


def test_v2_an_empty_batch_is_refused_for_holding_nothing_not_for_its_shape(keyed):
    """A size of 0 is a size (the shape is well formed); what is wrong is that it holds no
    image or no pixels, and the refusal says that."""
    images = {"name": "images", "datatype": "BYTES", "shape": [0], "data": []}
    status, answer = _v2_rest(keyed, {"inputs": [images]})
    assert (status, answer["error"]) == (
        400,
        "the DT_STRING input holds no images; send one per element",
    )
    pixels = {"name": "pixels", "datatype": "FP32", "shape": [0, *PIXELS], "data": []}
    status, answer = _v2_rest(keyed, {"inputs": [pixels]})
    assert (status, answer["error"]) == (400, "input has an empty shape [0, 224, 224, 3]")


def test_an_unexpected_failure_is_counted_as_internal(keyed, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(keyed.registry, "predict", broken)
    before = _counts(keyed)
    code, _, _ = _grpc_infer(keyed, _infer_raw([png()]))
    assert code == grpc.StatusCode.INTERNAL
    after = _counts(keyed)
    grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k)}
    assert grew == {(M, "v2_grpc", "INTERNAL"): 1}


# -- the pipeline itself, around a handler -------------------------------------------------------


def _latency_sums(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    sums = {}
    for family in text_string_to_metric_families(metrics.render()):
        for sample in family.samples:
            if sample.name == "accel_widgets_request_duration_seconds_sum":
                labels = sample.labels
                sums[(labels["model"], labels["protocol"], labels["code"])] = sample.value
    return sums


def test_the_pipeline_times_each_request_and_logs_it_in_milliseconds(caplog):
    """The latency a scraper sees is the handler's time, and the debug log line says the
    same figure in milliseconds, under the model the handler named."""
    pipeline = Pipeline(KeyChecker(), Metrics())

    def handler() -> str:
        note_model("colours")
        time.sleep(0.25)
        return "scored"

    with caplog.at_level("DEBUG", logger="accel_widgets.serving"):
        assert pipeline.run("v2_rest", handler, authorization=None) == "scored"
    seconds = _latency_sums(pipeline.metrics)[("colours", "v2_rest", "OK")]
    assert 0.25 <= seconds < 5.0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("v2_rest ")]
    assert lines == [f"v2_rest colours OK {seconds * 1000:.1f} ms"]
    # the label is the request's own: the next request names no model
    pipeline.run("grpc", lambda: None, authorization=None)
    assert ("-", "grpc", "OK") in _latency_sums(pipeline.metrics)
