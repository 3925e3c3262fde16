"""SSD-VGG end to end with random weights: build, convert (fp32 + INT8), serve, score, draw.

One module-scoped build and conversion (the expensive part, about a minute on 2 cores) is
shared by every test; calibration uses two real photos and validation one, to keep it short.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from accel_widgets.engine.models.catalog import get_spec
from accel_widgets.engine.models.ssd_decode import DETECTION_OUTPUTS
from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.errors import AccelError

RAW_SHAPES = {
    f"ssd_300_vgg/{block}_box/Reshape{suffix}:0": (1, grid, grid, anchors, depth)
    for block, grid, anchors in (
        ("block4", 37, 4),
        ("block7", 19, 6),
        ("block8", 10, 6),
        ("block9", 5, 6),
        ("block10", 3, 4),
        ("block11", 1, 4),
    )
    for suffix, depth in (("_1", 21), ("", 4))
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    from accel_widgets.engine.checks.samples import sample_photos

    folder = tmp_path_factory.mktemp("ssd-photos")
    for photo in sample_photos(["chelsea", "astronaut"]):
        (folder / f"{photo.name}.jpg").write_bytes(photo.data)
    return {p.stem: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def converted(tmp_path_factory, photos):
    """(workspace, fp32 artifact, int8 artifact) of ssd_vgg with random weights."""
    pytest.importorskip("tensorflow")
    from accel_widgets.engine.conversion.convert import convert
    from accel_widgets.engine.models.build import build_model

    workspace = Workspace(tmp_path_factory.mktemp("ssd-ws") / "workspace")
    build_model("ssd_vgg", weights="random", workspace=workspace)
    validation = tmp_path_factory.mktemp("ssd-validation")
    (validation / "chelsea.jpg").write_bytes(photos["chelsea"].read_bytes())
    fp32, int8 = convert(
        "ssd_vgg",
        workspace=workspace,
        quantize="int8",
        validation=validation,
        calibration=photos["chelsea"].parent,
        timing_runs=1,
    )
    return workspace, fp32, int8


@pytest.fixture(scope="module")
def service(converted) -> Iterator:
    from accel_widgets.engine.targets import delete_service, deploy

    workspace, _, _ = converted
    # ONNX Runtime, as the in-process reference (``auto`` may pick OpenVINO, bf16 on AMX CPUs).
    record = deploy(
        "ssd_vgg",
        precision="fp32",
        workspace=workspace,
        ready_timeout=120,
        runtime="onnxruntime",
    )
    yield record
    with contextlib.suppress(AccelError):
        delete_service(record.name, workspace=workspace)


def _in_process(artifact, data: bytes) -> dict[str, np.ndarray]:
    """The artifact run here with ONNX Runtime on the server's own preprocessing."""
    from accel_widgets.engine.conversion.ssd_convert import run_onnx
    from accel_widgets.engine.conversion.validate import onnx_session
    from accel_widgets.preprocess import Preprocessing, prepare

    pre = Preprocessing.from_dict(artifact.report["preprocessing"])
    return run_onnx(onnx_session(artifact.file), [prepare(data, pre)])[0]


def _by_position(boxes, *columns):
    """Detections sorted by their box: two runtimes may order equal-score neighbours apart
    (chelsea has two boxes whose scores differ by under 1e-6), so compare as sets."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.lexsort(boxes.T[::-1])  # by ymin, then xmin, ...
    return [boxes[order], *(np.asarray(c).reshape(-1)[order] for c in columns)]


def test_converted_detector_computes_what_tensorflow_computes(converted, photos):
    import tensorflow as tf

    from accel_widgets.preprocess import Preprocessing, prepare

    workspace, fp32, _ = converted
    model = workspace.get_model("ssd_vgg")
    assert model.spec["task"] == "detection"
    report = fp32.report["vs_tensorflow"]
    assert report["reference_detections"] > 0  # random weights still find boxes
    assert report["recall"] == report["precision"] == 1.0
    # Checked here too, independently of the report: TF's function against ONNX Runtime.
    data = photos["chelsea"].read_bytes()
    ours = _in_process(fp32, data)
    pixels = prepare(data, Preprocessing.from_dict(fp32.report["preprocessing"]))
    loaded = tf.saved_model.load(str(model.path / "saved_model"))
    theirs = {k: v.numpy() for k, v in loaded.signatures["predict_pixels"](pixels=pixels).items()}
    assert set(ours) == set(theirs) and len(ours) == 16
    for key in ours:
        if key not in DETECTION_OUTPUTS:
            np.testing.assert_allclose(ours[key], theirs[key], atol=1e-4, rtol=1e-4)
    assert ours["num_detections"] == theirs["num_detections"]

    for got, want in zip(
        _by_position(*(ours[k][0] for k in DETECTION_OUTPUTS[:3])),
        _by_position(*(theirs[k][0] for k in DETECTION_OUTPUTS[:3])),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_int8_keeps_decoding_float_and_reports_agreement_with_fp32(converted):
    import onnx

    _, fp32, int8 = converted
    report = int8.report
    assert report["precision"] == "int8" and report["task"] == "detection"
    cmp = report["vs_fp32"]
    assert cmp["match_iou"] == 0.5 and cmp["n_images"] == 1
    assert 0.0 <= cmp["recall"] <= 1.0 and cmp["reference_detections"] > 0
    assert int8.size_bytes < fp32.size_bytes / 3
    graph = onnx.load(str(int8.file)).graph
    ops = [n.op_type for n in graph.node]
    assert "NonMaxSuppression" in ops and ops.count("QuantizeLinear") > 10
    produced_by = {out: n for n in graph.node for out in n.output}
    exp = [n for n in graph.node if n.op_type == "Exp"]
    assert exp and all(produced_by[n.input[0]].op_type != "DequantizeLinear" for n in exp)


def test_served_outputs_equal_in_process_and_raw_tensors_keep_original_names(
    converted, service, photos
):
    from accel_widgets.engine.clients.grpc_client import client_from_service
    from accel_widgets.engine.models.ssd import raw_output_names
    from accel_widgets.serving import protocol
    from accel_widgets.serving.tensors import make_tensor_proto, tensor_to_numpy

    _, fp32, _ = converted
    data = photos["astronaut"].read_bytes()
    expected = _in_process(fp32, data)
    with client_from_service(service) as client:
        served = client.score_image(data)  # every output, keyed by its alias
        raw = client.score_image(data, outputs=list(RAW_SHAPES))
        # A client of the original service: no output filter, reads the original names.
        request = protocol.PredictRequest()
        request.inputs["images"].CopyFrom(make_tensor_proto([data]))
        original = {k: tensor_to_numpy(v) for k, v in client.predict(request).outputs.items()}
    assert set(served) == set(expected) and len(served) == 16
    for key, value in served.items():
        if key not in DETECTION_OUTPUTS:
            np.testing.assert_allclose(value, expected[key][0], atol=1e-5, rtol=1e-5)
    assert served["num_detections"] == expected["num_detections"][0]
    for got, want in zip(
        _by_position(*(served[k] for k in DETECTION_OUTPUTS[:3])),
        _by_position(*(expected[k][0] for k in DETECTION_OUTPUTS[:3])),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert (np.diff(served["detection_scores"]) <= 1e-6).all()  # best first
    assert served["num_detections"] > 0
    for key, legacy in raw_output_names():
        assert raw[legacy].shape == RAW_SHAPES[legacy][1:]
        np.testing.assert_array_equal(raw[legacy], served[key])
        assert original[legacy].shape == RAW_SHAPES[legacy]
        np.testing.assert_array_equal(original[legacy][0], served[key])


def test_detect_file_returns_the_labelled_boxes_computed_in_process(converted, service, photos):
    from accel_widgets.engine.clients.detection import detections_from_outputs
    from accel_widgets.engine.clients.grpc_client import client_from_service
    from accel_widgets.engine.models.labels import load_labels

    _, fp32, _ = converted
    labels = load_labels("voc")
    with client_from_service(service) as client:
        found = client.detect_file(photos["chelsea"], labels)
    expected = detections_from_outputs(_in_process(fp32, photos["chelsea"].read_bytes()), labels)
    assert len(found) == len(expected) > 0
    assert all(a.score >= b.score - 1e-6 for a, b in itertools.pairwise(found))
    for got, want in zip(
        sorted(found, key=lambda d: d.box),
        sorted(expected, key=lambda d: d.box),
        strict=True,
    ):
        assert (got.class_id, got.label) == (want.class_id, want.label)
        assert got.label == labels[got.class_id] and got.label != "background"
        assert got.score == pytest.approx(want.score, abs=1e-5)
        assert got.box == pytest.approx(want.box, abs=1e-5)


def test_cli_score_prints_one_labelled_box_per_detection(converted, service, photos, capsys):
    from accel_widgets.cli import main
    from accel_widgets.engine.models.labels import load_labels

    workspace, fp32, _ = converted
    expected = _in_process(fp32, photos["chelsea"].read_bytes())
    capsys.readouterr()
    code = main(["--workspace", str(workspace.root), "score", "ssd_vgg", str(photos["chelsea"])])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["#", "class", "label", "score"]
    count = int(expected["num_detections"][0])
    rows = lines[2 : 2 + count]
    voc = load_labels("voc")
    for rank, row in enumerate(rows, 1):
        cells = row.split()
        assert cells[0] == str(rank) and cells[2] == voc[int(cells[1])]
        box = json.loads(row[row.index("[") :])
        assert len(box) == 4 and all(0.0 <= v <= 1.0 for v in box)
    assert f"{count} detection(s)" in out and "latency:" in out


def test_score_step_draws_exactly_what_the_service_returned(converted, service, photos):
    from PIL import Image

    from accel_widgets.engine.clients.detection import detections_from_outputs
    from accel_widgets.engine.models.labels import load_labels
    from accel_widgets.widgets.detections import draw_detections
    from accel_widgets.widgets.score import ScoreWidget

    workspace, fp32, _ = converted
    step = ScoreWidget(workspace=workspace)
    step.service = service
    data = photos["chelsea"].read_bytes()
    step.use_image(data, "street.jpg")
    result = step.run()
    assert step.error == "" and step.done
    expected = detections_from_outputs(_in_process(fp32, data), load_labels("voc"))
    assert len(result.detections) == len(expected) > 0
    assert step.top5.value.count("accel-detection-row") == len(expected)
    drawn = np.asarray(Image.open(io.BytesIO(step.picture.value)))
    original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert drawn.shape == original.shape and (drawn != original).any()
    np.testing.assert_array_equal(
        drawn, np.asarray(Image.open(io.BytesIO(draw_detections(data, result.detections))))
    )
    assert get_spec("ssd_vgg").graph_ready


def test_benchmark_of_a_detector_asks_for_the_detections_only(
    converted, service, photos, monkeypatch
):
    """The Score step's Benchmark on SSD: each call asks for the 4 detection outputs, not 28."""
    from accel_widgets.engine.clients import grpc_client as client_module
    from accel_widgets.engine.models.ssd_decode import DETECTION_OUTPUTS
    from accel_widgets.widgets.score import ScoreWidget

    workspace, _, _ = converted
    asked: list[list[str]] = []
    original = client_module.PredictionClient.score_image

    def recording(self, image, input_name="images", outputs=None, *args, **kwargs):
        asked.append(list(outputs or []))
        return original(self, image, input_name, outputs, *args, **kwargs)

    step = ScoreWidget(workspace=workspace)
    step.service = service
    step.use_image(photos["chelsea"].read_bytes(), "street.jpg")
    step.requests.value, step.concurrency.value = 3, 1
    monkeypatch.setattr(client_module.PredictionClient, "score_image", recording)
    result = step.run_benchmark()
    assert step.error == "" and result is not None and len(result.latencies_ms) == 3
    assert asked and all(sorted(a) == sorted(DETECTION_OUTPUTS) for a in asked)
