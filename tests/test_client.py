"""The scoring client against an in-process fake server: headers, retries, errors, labels."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from PIL import Image
from serving_fixtures import jpeg_bytes

from accel_widgets.engine.clients.grpc_client import (
    PredictionClient,
    client_from_service,
    encode_image,
)
from accel_widgets.engine.models.labels import load_labels, top_k
from accel_widgets.errors import CancelledError, ScoringError, WeightsError
from accel_widgets.progress import CancelToken, EventLog
from accel_widgets.serving import protocol
from accel_widgets.serving.tensors import make_tensor_proto, tensor_to_numpy


class FakeServer:
    """A PredictionService that records every call's metadata and answers as told."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.requests: list = []
        self.failures: list[grpc.StatusCode] = []  # popped per call before answering
        self.delay = 0.0
        self.outputs = {"output_alias": np.arange(5, dtype=np.float32).reshape(1, 5)}
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    protocol.PREDICTION_SERVICE,
                    {
                        "Predict": grpc.unary_unary_rpc_method_handler(
                            self.predict,
                            request_deserializer=protocol.PredictRequest.FromString,
                            response_serializer=protocol.PredictResponse.SerializeToString,
                        ),
                        "GetModelMetadata": grpc.unary_unary_rpc_method_handler(
                            self.metadata,
                            request_deserializer=protocol.GetModelMetadataRequest.FromString,
                            response_serializer=protocol.GetModelMetadataResponse.SerializeToString,
                        ),
                    },
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _record(self, context) -> None:
        with self._lock:
            self.calls.append(dict(context.invocation_metadata()))

    def _maybe_fail(self, context) -> bool:
        with self._lock:
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            context.abort(failure, f"fake {failure.name}")
        return False

    def predict(self, request, context):
        self._record(context)
        self.requests.append(request)
        time.sleep(self.delay)
        self._maybe_fail(context)
        response = protocol.PredictResponse()
        for key, value in self.outputs.items():
            response.outputs[key].CopyFrom(make_tensor_proto(value))
        return response

    def metadata(self, request, context):
        self._record(context)
        from accel_widgets.serving.grpc_service import signature_def_map

        response = protocol.GetModelMetadataResponse()
        response.model_spec.name = "fake"
        response.model_spec.version.value = 3
        signature = {
            "inputs": {"images": {"name": "Placeholder:0", "dtype": "DT_STRING", "shape": [-1]}},
            "outputs": {"output_alias": {"name": "out:0", "dtype": "DT_FLOAT", "shape": [-1, 5]}},
        }
        response.metadata["signature_def"].Pack(signature_def_map({"serving_default": signature}))
        return response

    def stop(self) -> None:
        self.server.stop(0)


@pytest.fixture
def fake():
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    with PredictionClient(
        "127.0.0.1", fake.port, access_token="tok-123", service_name="cats", timeout=10
    ) as c:
        yield c


def test_auth_and_route_headers_arrive_on_every_call(fake, client):
    client.score_image(jpeg_bytes())
    client.score_numpy_array(np.zeros((1, 4), np.float32))
    client.metadata()
    assert len(fake.calls) == 3
    for metadata in fake.calls:
        assert metadata["authorization"] == "Bearer tok-123"
        assert metadata["x-ms-aml-grpc-service-route"] == "/api/v1/service/cats"


def test_no_token_sends_no_authorization_header(fake):
    with PredictionClient("127.0.0.1", fake.port) as anonymous:
        anonymous.score_image(jpeg_bytes())
    assert "authorization" not in fake.calls[0]


def test_request_carries_the_image_bytes_and_names(fake, client):
    data = jpeg_bytes()
    client.score_image(data, input_name="Placeholder:0", outputs="out:0", model_name="m")
    request = fake.requests[0]
    assert request.model_spec.name == "m"
    assert list(request.output_filter) == ["out:0"]
    assert tensor_to_numpy(request.inputs["Placeholder:0"]).tolist() == [data]


def test_one_output_is_an_array_without_the_batch_axis_several_are_a_dict(fake, client):
    np.testing.assert_array_equal(client.score_image(jpeg_bytes()), np.arange(5))
    assert client.score_numpy_array(np.zeros((1, 4), np.float32)).shape == (1, 5)
    fake.outputs = {"a": np.ones((1, 2), np.float32), "b": np.zeros((1, 3), np.float32)}
    both = client.score_image(jpeg_bytes())
    assert set(both) == {"a", "b"} and both["b"].shape == (3,)


def test_unavailable_is_retried_by_the_declared_policy(fake, client):
    fake.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    np.testing.assert_array_equal(client.score_image(jpeg_bytes()), np.arange(5))
    assert len(fake.calls) == 3


def test_invalid_argument_is_never_retried(fake, client):
    fake.failures = [grpc.StatusCode.INVALID_ARGUMENT]
    with pytest.raises(ScoringError) as info:
        client.score_image(jpeg_bytes())
    assert info.value.code == "INVALID_ARGUMENT"
    assert "fake INVALID_ARGUMENT" in str(info.value)
    assert len(fake.calls) == 1


def test_unavailable_after_five_attempts_gives_advice(fake, client):
    fake.failures = [grpc.StatusCode.UNAVAILABLE] * 10
    with pytest.raises(ScoringError) as info:
        client.score_image(jpeg_bytes())
    assert info.value.code == "UNAVAILABLE"
    assert "is it running?" in str(info.value)
    assert len(fake.calls) == 5


def test_deadline_is_not_retried_and_says_to_raise_the_timeout(fake, client):
    fake.delay = 1.0
    with pytest.raises(ScoringError) as info:
        client.score_image(jpeg_bytes(), timeout=0.3)
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert "timeout=" in str(info.value)
    time.sleep(1.2)
    assert len(fake.calls) == 1


def test_unauthenticated_says_to_pass_the_key(fake, client):
    fake.failures = [grpc.StatusCode.UNAUTHENTICATED]
    with pytest.raises(ScoringError, match="access_token=KEY") as info:
        client.score_image(jpeg_bytes())
    assert info.value.code == "UNAUTHENTICATED"


def test_the_stub_is_replaceable(client):
    class Refused(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.PERMISSION_DENIED

        def details(self):
            return "no"

    def refuse(request, timeout, metadata):
        raise Refused()

    client.stub.Predict = refuse
    with pytest.raises(ScoringError) as info:
        client.score_image(b"x")
    assert info.value.code == "PERMISSION_DENIED" and info.value.details == "no"


def test_metadata_is_a_plain_dict(client):
    meta = client.metadata()
    inputs = {"images": {"name": "Placeholder:0", "dtype": "DT_STRING", "shape": [-1]}}
    outputs = {"output_alias": {"name": "out:0", "dtype": "DT_FLOAT", "shape": [-1, 5]}}
    assert meta == {
        "model": "fake",
        "version": 3,
        "inputs": inputs,
        "outputs": outputs,
        "signatures": {"serving_default": {"inputs": inputs, "outputs": outputs}},
    }


def test_is_ready_falls_back_to_metadata_without_a_health_service(client):
    assert client.is_ready()  # the fake has no health service, but answers metadata


def test_score_batch_reports_progress_and_can_be_cancelled(fake, client, tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg_bytes())
        paths.append(path)
    events = EventLog()
    results = client.score_batch(paths, progress=events)
    assert len(results) == 3
    assert [e.fraction for e in events][-1] == 1.0 and events.steps() == ["score"]
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(CancelledError):
        client.score_batch(paths, cancel=cancel)


def test_pictures_are_encoded_losslessly():
    rgb = (np.random.default_rng(1).random((20, 30, 3)) * 255).astype(np.uint8)
    data = encode_image(rgb)
    assert data.startswith(b"\x89PNG")
    import io

    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)
    assert encode_image(Image.fromarray(rgb)).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="score_numpy_array"):
        encode_image(rgb.astype(np.float32))


def test_address_forms_and_service_records():
    with PredictionClient("localhost:8500") as c:
        assert (c.address, c.port) == ("localhost", 8500)
    with pytest.raises(ValueError, match="no port"):
        PredictionClient("localhost")
    record = SimpleNamespace(address="127.0.0.1", port=9000, key="k", name="svc", use_ssl=False)
    with client_from_service(record) as c:
        assert c.metadata_headers() == (
            ("authorization", "Bearer k"),
            ("x-ms-aml-grpc-service-route", "/api/v1/service/svc"),
        )
        assert "k" not in repr(c).replace("key", "")


# -- labels ----------------------------------------------------------------------------------


def test_named_label_sets_load():
    imagenet = load_labels("imagenet")
    assert len(imagenet) == 1000 and imagenet[967] == "espresso"
    voc = load_labels("voc")
    assert len(voc) == 21 and voc[0] == "background"


def test_missing_named_labels_say_where_to_put_them(tmp_path, monkeypatch):
    import accel_widgets.engine.models.labels as labels

    monkeypatch.setenv("ACCEL_WIDGETS_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(labels, "weights_dirs", lambda: [tmp_path])
    with pytest.raises(WeightsError) as info:
        load_labels("imagenet")
    assert "imagenet_classes.txt" in str(info.value) and str(tmp_path) in str(info.value)
    assert "ACCEL_WIDGETS_WEIGHTS_DIR" in str(info.value)


def test_label_file_path_and_missing_path(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n\n")
    assert load_labels(path) == ["cat", "dog"]
    with pytest.raises(WeightsError, match="does not exist"):
        load_labels(tmp_path / "nope.txt")


def test_top_k_orders_best_first():
    scores = np.array([[0.1, 0.5, 0.05, 0.35]])
    assert top_k(scores, ["a", "b", "c", "d"], k=2) == [(1, "b", 0.5), (3, "d", 0.35)]
    assert top_k(scores[0], None, k=1) == [(1, "1", 0.5)]


def test_top_k_shifts_background_first_label_files():
    labels = ["background", "a", "b"]
    assert top_k([0.2, 0.8], labels, k=1) == [(1, "b", 0.8)]
    with pytest.raises(ValueError, match="3 labels for 5 scores"):
        top_k(np.zeros(5), labels)


def test_labels_path_resolves_named_sets_for_the_deploy_step(tmp_path):
    from accel_widgets.engine.models.labels import labels_path

    assert labels_path("imagenet").name == "imagenet_classes.txt"
    own = tmp_path / "mine.txt"
    own.write_text("a\n")
    assert labels_path(str(own)) == own
