"""Dynamic batching: requests that arrive together share one run, and each keeps its own
result and its own error.

In-process tests drive a real ONNX Runtime session of a lookup model whose runs fail for an
out-of-range index (the one way a well-formed request can spoil a combined run); a real
server with the shared MobileNetV2 INT8 shows concurrent clients' photos come back as their
own answers with batching on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from serving_fixtures import (
    CAT_CLASSES,
    ESPRESSO,
    jpeg_bytes,
    running_server,
    squeezenet_model,
    weights_path,
    write_config,
)

from accel_widgets.engine.clients.grpc_client import PredictionClient
from accel_widgets.errors import ScoringError
from accel_widgets.serving import runtime
from accel_widgets.serving.batching import DynamicBatcher
from accel_widgets.serving.config import BatchingConfig, ServerConfig
from accel_widgets.serving.model import LoadedModel
from accel_widgets.serving.status import RequestError

TABLE = np.arange(30, dtype=np.float32).reshape(10, 3)
TORCH_NORM = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def lookup_model(path: Path) -> Path:
    """int64 [N, 1] indices -> float32 [N, 3] rows of TABLE; an index >= 10 fails the run."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "index"], ["picked"], axis=0),
            helper.make_node("Squeeze", ["picked", "axis1"], ["rows"]),
        ],
        "lookup",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            numpy_helper.from_array(TABLE, "table"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def load_lookup(tmp_path: Path, batching: dict | None) -> LoadedModel:
    config = ServerConfig.from_dict(
        {
            "models": [
                {
                    "name": "lookup",
                    "onnx": str(lookup_model(tmp_path / "lookup.onnx")),
                }
            ],
            "batching": batching,
        }
    )
    session = runtime.create_session(config.models[0].onnx)
    model = LoadedModel(config.models[0], session, max_pixels=10**6, max_batch=32)
    if config.batching:
        model.start_batching(config.batching)
    return model


def predict_together(model: LoadedModel, requests: list[np.ndarray]) -> list[object]:
    """Send every request from its own thread at the same moment; result or exception each."""
    start = threading.Barrier(len(requests))

    def one(indices: np.ndarray) -> object:
        start.wait()
        try:
            return model.predict("index", indices, [])["output_alias"]
        except RequestError as exc:
            return exc

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def queue_behind_a_held_run(
    model: LoadedModel,
    predict: Callable[[object], object],
    first: object,
    rest: list[object],
    max_queue_delay_us: int,
) -> tuple[list[object], list[int]]:
    """Batch ``model`` with its first run held until the ``rest`` requests are queued behind
    it; each request's result, and the rows of every run in order.

    Batching is then proven by construction, not by thread timing: left alone, a tiny
    model's runs can each end before the next request arrives (seen once in CI).
    """
    rows_per_run: list[int] = []
    release = threading.Event()

    def run(batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        rows_per_run.append(batch.shape[0])
        if len(rows_per_run) == 1:
            release.wait(30)  # the first request holds the model while the others queue
        return model._run_session(batch, names)

    model.batcher = DynamicBatcher(run, max_batch_size=16, max_queue_delay_us=max_queue_delay_us)
    with ThreadPoolExecutor(1 + len(rest)) as pool:
        held = pool.submit(predict, first)
        wait_until(lambda: model.batcher.busy)
        queued = [pool.submit(predict, request) for request in rest]
        wait_until(lambda: model.batcher.queued == len(rest))
        release.set()
        return [held.result(), *(f.result() for f in queued)], rows_per_run


def test_requests_that_arrive_together_run_as_one_batch_and_keep_their_rows(tmp_path):
    """Five requests (of 1 or 2 rows) queue behind a running one and then share one run;
    each gets its own rows back."""
    model = load_lookup(tmp_path, None)
    requests = [np.array([[i], [(i + 1) % 10]][: 1 + i % 2], dtype=np.int64) for i in range(6)]

    def predict(indices: np.ndarray) -> object:
        return model.predict("index", indices, [])["output_alias"]

    results, rows_per_run = queue_behind_a_held_run(
        model, predict, requests[0], requests[1:], max_queue_delay_us=300_000
    )
    for indices, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result, TABLE[indices[:, 0]])
    assert model.batcher.requests == 6
    assert rows_per_run == [len(requests[0]), sum(len(r) for r in requests[1:])]
    model.close()


def test_a_bad_request_in_a_batch_fails_alone(tmp_path):
    """Three requests queue behind a running one; the batch of three holds an index the
    model refuses, so it is run again request by request: only that one fails."""
    model = load_lookup(tmp_path, None)

    def predict(index: int) -> object:
        try:
            return model.predict("index", np.array([[index]], dtype=np.int64), [])["output_alias"]
        except RequestError as exc:
            return exc

    results, rows_per_run = queue_behind_a_held_run(
        model, predict, 1, [2, 99, 3], max_queue_delay_us=0
    )
    assert rows_per_run == [1, 3, 1, 1, 1], "the batch was not tried together, then alone"
    bad = results[2]
    assert isinstance(bad, RequestError) and bad.code == "INVALID_ARGUMENT"
    assert "refused the input" in bad.message
    for index, result in zip((1, 2, 3), (results[0], results[1], results[3]), strict=True):
        np.testing.assert_array_equal(result, TABLE[[index]])
    model.close()


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the batcher"
        time.sleep(0.005)


def test_batching_is_off_by_default_and_for_models_that_take_one_row(tmp_path):
    assert ServerConfig.from_dict({"models": [{"name": "m", "onnx": "m.onnx"}]}).batching is None
    assert load_lookup(tmp_path, None).batcher is None
    config = ServerConfig.from_dict({"models": [squeezenet_model()], "batching": {}})
    squeeze = LoadedModel.load(
        config.models[0], threads=None, max_pixels=10**7, max_batch=4, batching=config.batching
    )
    assert squeeze.batcher is None  # its input is [1, 3, 224, 224]


def test_served_with_batching_each_client_gets_its_own_photo_scored(tmp_path):
    model = {
        "name": "mobilenet",
        "onnx": str(weights_path() / "mobilenetv2-12-int8.onnx"),
        "precision": "int8",
        "preprocessing": {**TORCH_NORM, "layout": "NCHW"},
        "outputs": [{"alias": "output_alias", "onnx_output": "output", "postprocess": "softmax"}],
    }
    config = write_config(
        tmp_path, [model], batching={"max_batch_size": 8, "max_queue_delay_us": 20_000}
    )
    photos = {"chelsea": jpeg_bytes("chelsea"), "coffee": jpeg_bytes("coffee"), "bad": b"no jpeg"}
    order = ["chelsea", "coffee", "bad", "coffee", "chelsea", "coffee"]
    with running_server(tmp_path, config) as server:
        start = threading.Barrier(len(order))

        def score(name: str) -> object:
            with PredictionClient("127.0.0.1", server.port, timeout=30) as client:
                start.wait()
                try:
                    return int(
                        np.asarray(
                            client.score_image(photos[name], outputs="output_alias")
                        ).argmax()
                    )
                except ScoringError as exc:
                    return exc

        with ThreadPoolExecutor(len(order)) as pool:
            results = list(pool.map(score, order))
    for name, result in zip(order, results, strict=True):
        if name == "bad":
            assert isinstance(result, ScoringError), result
        elif name == "coffee":
            assert result == ESPRESSO
        else:
            assert result in CAT_CLASSES


def test_openvino_runs_a_batch_on_its_dynamic_compile_and_keeps_the_rows(tmp_path):
    pytest.importorskip("openvino")
    from accel_widgets.serving.openvino_runtime import OpenVinoSession

    path = lookup_model(tmp_path / "lookup.onnx")
    config = ServerConfig.from_dict({"models": [{"name": "lookup", "onnx": str(path)}]})
    session = OpenVinoSession(path, threads=1, dynamic_batch=16)
    assert session.max_batch_compiled == 16
    model = LoadedModel(config.models[0], session, max_pixels=10**6, max_batch=32)
    model.start_batching(BatchingConfig(max_batch_size=16, max_queue_delay_us=300_000))
    requests = [np.array([[i], [9 - i]], dtype=np.int64) for i in range(5)]
    results = predict_together(model, requests)
    for indices, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result, TABLE[indices[:, 0]])
    assert model.batcher.runs < 5
    model.close()
