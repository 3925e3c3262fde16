"""Thousands of malformed requests through one channel; the server answers each and lives on."""

from __future__ import annotations

import collections
import json
import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_fixtures import CAT_CLASSES, jpeg_bytes, running_server, write_config

from accel_widgets.engine.clients.grpc_client import PredictionClient
from accel_widgets.serving import protocol

#: Codes a malformed request may get: each names the client's mistake. INTERNAL or UNKNOWN
#: would mean the server tripped over the request.
CLIENT_ERRORS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

NAMES = st.one_of(
    st.sampled_from(["images", "Placeholder:0", "data_0", "output_alias", "softmaxout_1", ""]),
    st.text(max_size=12),
)
JPEG = jpeg_bytes()


@st.composite
def tensors(draw):
    tensor = protocol.TensorProto()
    tensor.dtype = draw(st.sampled_from([*range(0, 24), 99, 101]))
    shape = draw(
        st.one_of(
            st.lists(st.integers(-2, 300), max_size=5),
            st.just([1, 3, 224, 224]),
            st.just([1]),
        )
    )
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    kind = draw(st.sampled_from(["content", "float", "half", "int", "int64", "string", "none"]))
    if kind == "content":
        tensor.tensor_content = draw(st.binary(max_size=2048))
    elif kind == "float":
        tensor.float_val.extend(draw(st.lists(st.floats(width=32), max_size=64)))
    elif kind == "half":
        tensor.half_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=64)))
    elif kind == "int":
        tensor.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=64)))
    elif kind == "int64":
        tensor.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=64)))
    elif kind == "string":
        pieces = st.one_of(
            st.binary(max_size=256),
            st.just(JPEG[: len(JPEG) // 3]),
            st.binary(max_size=64).map(lambda b: b"\xff\xd8\xff" + b),
            st.binary(max_size=64).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
        )
        tensor.string_val.extend(draw(st.lists(pieces, max_size=3)))
    return tensor


@st.composite
def predict_requests(draw) -> bytes:
    request = protocol.PredictRequest()
    request.model_spec.name = draw(st.sampled_from(["", "squeezenet", "resnet50", "x" * 300]))
    if draw(st.booleans()):
        request.model_spec.version.value = draw(st.integers(-5, 5))
    request.model_spec.signature_name = draw(st.sampled_from(["", "serving_default", "nope"]))
    for _ in range(draw(st.integers(0, 2))):
        request.inputs[draw(NAMES)].CopyFrom(draw(tensors()))
    request.output_filter.extend(draw(st.lists(NAMES, max_size=3)))
    body = request.SerializeToString()
    if draw(st.integers(0, 9)) == 0:  # now and then, damage the serialized bytes
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=8)) + body[cut + 4 :]
    return body


REQUESTS = st.one_of(st.binary(max_size=512), predict_requests())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzzed-server")
    with running_server(folder, write_config(folder)) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server):
    channel = grpc.insecure_channel(server.target)
    yield channel
    channel.close()


@pytest.mark.timeout(240)
def test_two_thousand_malformed_requests_then_a_cat(server, channel):
    predict = channel.unary_unary(protocol.PREDICT_METHOD)
    codes: collections.Counter = collections.Counter()
    started = time.monotonic()

    @settings(
        max_examples=2000,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=REQUESTS)
    def send(body: bytes) -> None:
        try:
            predict(body, timeout=20)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            assert code in CLIENT_ERRORS, (code, exc.details())
            assert exc.details(), "every refusal says why"
        codes[code] += 1

    send()
    elapsed = time.monotonic() - started
    assert sum(codes.values()) >= 2000
    assert codes[grpc.StatusCode.INVALID_ARGUMENT] > 500, codes
    assert server.process.poll() is None, "the server died"
    with PredictionClient("127.0.0.1", server.port, timeout=30) as client:
        assert int(np.argmax(client.score_image(JPEG))) in CAT_CLASSES
    assert elapsed < 180, f"fuzzing took {elapsed:.0f} s"


# -- the Open Inference Protocol (KServe v2) ---------------------------------------------------

V2_DATATYPES = st.sampled_from(
    ["BYTES", "FP32", "FP16", "FP64", "UINT8", "INT64", "BOOL", "BF16", "", "fp32"]
)
V2_MODELS = st.sampled_from(["", "squeezenet", "resnet50", "x" * 300])
V2_SHAPES = st.one_of(
    st.lists(st.integers(-2, 300), max_size=5),
    st.just([1, 3, 224, 224]),
    st.just([1]),
    st.just([2**40, 2**40]),
)


@st.composite
def v2_infer_requests(draw) -> bytes:
    """ModelInfer requests: wrong datatypes, shapes, contents, names; now and then damaged."""
    request = protocol.ModelInferRequest()
    request.model_name = draw(V2_MODELS)
    request.model_version = draw(st.sampled_from(["", "1", "2", "-1", "one"]))
    use_raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 2))):
        entry = request.inputs.add(name=draw(NAMES), datatype=draw(V2_DATATYPES))
        entry.shape.extend(draw(V2_SHAPES))
        kind = draw(st.sampled_from(["fp32", "bytes", "int64", "none"]))
        if use_raw:
            raw = draw(
                st.one_of(
                    st.binary(max_size=1024),
                    st.just(len(JPEG).to_bytes(4, "little") + JPEG[: len(JPEG) // 2]),
                    st.just(b"\xff\xff\xff\x7f" + JPEG[:64]),
                )
            )
            request.raw_input_contents.append(raw)
        elif kind == "fp32":
            entry.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=64)))
        elif kind == "bytes":
            entry.contents.bytes_contents.extend(
                draw(st.lists(st.one_of(st.binary(max_size=128), st.just(JPEG[:500])), max_size=3))
            )
        elif kind == "int64":
            entry.contents.int64_contents.extend(
                draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=64))
            )
    if use_raw and draw(st.integers(0, 4)) == 0:
        request.raw_input_contents.append(b"extra")
    for name in draw(st.lists(NAMES, max_size=2)):
        request.outputs.add(name=name)
    body = request.SerializeToString()
    if draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=8)) + body[cut + 4 :]
    return body


@st.composite
def v2_other_requests(draw) -> tuple[str, bytes]:
    """ModelMetadata and ModelReady with unknown models and versions, or garbage bytes."""
    method = draw(st.sampled_from(["ModelMetadata", "ModelReady", "ServerMetadata", "ServerLive"]))
    message = (
        protocol.ModelMetadataRequest(
            name=draw(V2_MODELS), version=draw(st.sampled_from(["", "1", "7", "x"]))
        )
        if method == "ModelMetadata"
        else protocol.ModelReadyRequest(
            name=draw(V2_MODELS), version=draw(st.sampled_from(["", "1", "7"]))
        )
    )
    body = draw(st.one_of(st.just(message.SerializeToString()), st.binary(max_size=64)))
    return method, body


@pytest.mark.timeout(240)
def test_malformed_open_inference_protocol_requests_then_a_cat(server, channel):
    import tritonclient.grpc as triton

    codes: collections.Counter = collections.Counter()
    methods = {
        name: channel.unary_unary(f"/{protocol.INFERENCE_SERVICE}/{name}")
        for name in ("ModelInfer", "ModelMetadata", "ModelReady", "ServerMetadata", "ServerLive")
    }

    @settings(
        max_examples=1200,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        call=st.one_of(v2_infer_requests().map(lambda b: ("ModelInfer", b)), v2_other_requests())
    )
    def send(call: tuple[str, bytes]) -> None:
        method, body = call
        try:
            methods[method](body, timeout=20)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            assert code in CLIENT_ERRORS, (method, code, exc.details())
            assert exc.details(), "every refusal says why"
        codes[code] += 1

    send()
    assert codes[grpc.StatusCode.INVALID_ARGUMENT] > 300, codes
    assert codes[grpc.StatusCode.NOT_FOUND] > 50, codes
    assert server.process.poll() is None, "the server died"
    client = triton.InferenceServerClient(server.target)
    image = triton.InferInput("images", [1], "BYTES")
    image.set_data_from_numpy(np.array([JPEG], dtype=object))
    scores = client.infer("squeezenet", [image]).as_numpy("output_alias")
    assert int(np.argmax(scores)) in CAT_CLASSES


V2_JSON_BODIES = st.one_of(
    st.binary(max_size=256),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
        ),
        max_leaves=12,
    ).map(lambda value: json.dumps(value).encode()),
    st.builds(
        lambda name, datatype, shape, data, outputs: json.dumps(
            {
                "inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}],
                "outputs": outputs,
            }
        ).encode(),
        NAMES,
        V2_DATATYPES,
        V2_SHAPES,
        st.one_of(
            st.lists(st.floats(allow_nan=False), max_size=8),
            st.lists(st.text(max_size=8), max_size=3),
        ),
        st.lists(st.fixed_dictionaries({"name": NAMES}), max_size=2),
    ),
)


@pytest.mark.timeout(240)
def test_malformed_v2_rest_requests_then_a_cat(server):
    """Bad JSON, bad tensors and lying binary headers on the HTTP port: 4xx with a sentence."""
    import http.client

    codes: collections.Counter = collections.Counter()

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        model=V2_MODELS,
        body=V2_JSON_BODIES,
        header=st.one_of(st.none(), st.integers(-5, 400).map(str), st.just("x")),
    )
    def send(model: str, body: bytes, header: str | None) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=20)
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Inference-Header-Content-Length"] = header
        connection.request("POST", f"/v2/models/{model or 'squeezenet'}/infer", body, headers)
        response = connection.getresponse()
        text = response.read()
        connection.close()
        codes[response.status] += 1
        assert response.status in (200, 400, 404, 413), (response.status, text[:300])
        if response.status != 200:
            assert json.loads(text)["error"], "every refusal says why"

    send()
    assert codes[400] > 100, codes
    assert server.process.poll() is None, "the server died"
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    image = triton.InferInput("images", [1], "BYTES")
    image.set_data_from_numpy(np.array([JPEG], dtype=object))
    scores = client.infer("squeezenet", [image]).as_numpy("output_alias")
    assert int(np.argmax(scores)) in CAT_CLASSES


# -- any method, any route, JSON that Python reads but protocols refuse ----------------------

HOSTILE_TEXT = st.text(
    alphabet=st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
    max_size=8,
)
HOSTILE_NUMBERS = st.one_of(
    st.floats(),  # inf and nan become Infinity and NaN, which are not JSON
    st.integers(-(2**70), 2**70),
    st.just(10**400),
    st.sampled_from([1e308, -1e308, 5e-324]),
)
HOSTILE_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), HOSTILE_NUMBERS, HOSTILE_TEXT),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(HOSTILE_TEXT, children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def hostile_bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["v2", "v1", "nested", "raw"]))
    if kind == "nested":
        depth = draw(st.integers(1, 5000))
        return b'{"instances": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    if kind == "raw":
        return draw(st.binary(max_size=128))
    data = draw(st.lists(st.one_of(HOSTILE_NUMBERS, HOSTILE_TEXT, HOSTILE_JSON), max_size=6))
    if kind == "v1":
        return json.dumps({"instances": data}).encode()
    entry = {
        "name": draw(st.sampled_from(["images", "data_0", "Placeholder:0"])),
        "datatype": draw(V2_DATATYPES),
        "shape": draw(st.sampled_from([[1], [len(data)], [1, 3, 224, 224], [-1]])),
        "data": data,
    }
    return json.dumps({"inputs": [entry], "outputs": draw(HOSTILE_JSON)}).encode()


ROUTES = st.sampled_from(
    [
        "/v2/models/squeezenet/infer",
        "/v2/models/squeezenet/versions/1/infer",
        "/v2/models/squeezenet",
        "/v2/models/squeezenet/ready",
        "/v2/models/nosuch",
        "/v2",
        "/v2/health/ready",
        "/v1/models/squeezenet:predict",
        "/v1/models/squeezenet/versions/7:predict",
        "/v1/models/squeezenet/labels/stable:predict",
        "/v1/models/squeezenet/metadata",
        "/metrics",
        "/healthz",
        "/",
        "/v3/x",
        "/v1/models/%ff%fe:predict",
    ]
)
METHODS = st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])


@pytest.mark.timeout(240)
def test_any_method_route_and_hostile_json_gets_a_json_4xx_never_5xx(server):
    """Deep nesting, lone surrogates, NaN, 1e400, huge integers, every method: 4xx in JSON."""
    import http.client

    codes: collections.Counter = collections.Counter()

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(method=METHODS, path=ROUTES, body=hostile_bodies())
    def send(method: str, path: str, body: bytes) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=20)
        connection.request(method, path, body if method != "GET" else None)
        response = connection.getresponse()
        text = response.read()
        connection.close()
        codes[response.status] += 1
        assert response.status < 500 or (response.status == 503 and path.endswith("ready")), (
            method,
            path,
            response.status,
            text[:300],
        )
        if response.status >= 400:
            assert json.loads(text)["error"], "every refusal says why, in JSON"

    send()
    assert codes[400] > 10 and codes[405] > 20 and codes[404] > 5, codes
    assert server.process.poll() is None, "the server died"
    with PredictionClient("127.0.0.1", server.port, timeout=30) as client:
        assert int(np.argmax(client.score_image(JPEG))) in CAT_CLASSES
