"""Thousands of malformed requests through one channel; the server answers each and lives on."""

from __future__ import annotations

import collections
import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_fixtures import CAT_CLASSES, jpeg_bytes, running_server, write_config

from accel_widgets.engine.client import PredictionClient
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
