"""Report figures and verdicts, pinned as what a user reads in them.

Every figure a report stores is named after what it is (``latency_ratio_int8_vs_fp32``: INT8's
p50 over fp32's) and every verdict follows a written rule (engine/checks/verdicts.py): agreement at
least 97 % on photos the reference does not give one class, at most 1.0 point of top-1 lost
on at least 200 labelled photos, calibration photos kept apart. These tests hold each rule
at its edge (exactly at the limit passes, just past it fails, and the reason names the
figures), and the report table's cells to the words they show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accel_widgets.engine.checks.accuracy import accuracy, accuracy_text, top_k, wilson_interval
from accel_widgets.engine.checks.verdicts import (
    artifact_check,
    int8_gate,
    recommended,
    uninformative,
)
from accel_widgets.engine.conversion.reports import (
    REPORT_COLUMNS,
    accuracy_cell,
    agreement_cell,
    photo_predictions,
    report_row,
)
from accel_widgets.engine.store.workspace import ArtifactRecord
from accel_widgets.preprocess import Preprocessing

# -- the INT8 latency ratio, on a real quantization -------------------------------------------


def _conv_model(path: Path) -> Path:
    """A small convolutional classifier (pixels NHWC -> 3 convs -> mean -> 10 scores) on
    which ONNX Runtime's INT8 kernels run well under fp32's time (measured 0.14-0.52x), so a
    ratio written upside down is told apart from the right one."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, 0.05, (32, 3, 3, 3)),
        "w2": rng.normal(0, 0.05, (64, 32, 3, 3)),
        "w3": rng.normal(0, 0.05, (64, 64, 3, 3)),
        "head": rng.normal(0, 0.5, (64, 10)),
    }
    nodes = [
        helper.make_node("Transpose", ["pixels"], ["x"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("ReduceMean", ["r3"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 224, 224, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 10])],
        initializer=[
            numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_the_int8_latency_ratio_is_int8_p50_over_fp32_p50(tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    from accel_widgets.engine.conversion.convert_worker import quantize_and_validate

    said = []
    job = {"preprocessing": Preprocessing().to_dict(), "timing_runs": 7}
    report = quantize_and_validate(
        _conv_model(tmp_path / "fp32.onnx"),
        tmp_path / "int8.onnx",
        job,
        lambda step, fraction, message: said.append(message),
    )
    int8 = report["latency"]["int8"]["p50_ms"]
    fp32 = report["latency"]["fp32"]["p50_ms"]
    ratio = report["latency_ratio_int8_vs_fp32"]
    assert ratio == pytest.approx(int8 / fp32, abs=1e-3)
    assert abs(ratio - fp32 / int8) > 1e-2, "the figures must tell the two ratios apart"
    # The summary the Convert step and `accel-widgets convert` print says the same.
    assert f"{ratio:.2f}x fp32 latency" in said[-1]


# -- the INT8 gate at its edges -------------------------------------------------------------


def _comparison(agree: int, n: int, classes: int = 10) -> dict:
    """A ``validate.compare`` result: ``agree`` of ``n`` photos agree, references varied."""
    reference = [i % classes for i in range(n)]
    candidate = reference[:agree] + [(c + 1) % classes for c in reference[agree:]]
    return {
        "top1_agreement": agree / n,
        "top1_agree_count": agree,
        "n_images": n,
        "max_abs_diff": 0.01,
        "reference_top1": reference,
        "candidate_top1": candidate,
    }


def _report(agree=100, n=100, top1=0.700, fp32_top1=0.705, labelled=300, disjoint=True) -> tuple:
    report = {
        "vs_fp32": _comparison(agree, n),
        "calibration_disjoint": disjoint,
        "accuracy": {"top1": top1, "n": labelled},
    }
    return report, {"top1": fp32_top1, "n": labelled}


def test_a_gate_that_passes_says_so_with_its_figures():
    report, fp32 = _report(agree=98, top1=0.700, fp32_top1=0.705)
    gate = int8_gate(report, fp32)
    assert gate["recommended"] is True and gate["reasons"] == []
    assert gate["agreement"] == 0.98
    assert gate["accuracy_change_points"] == -0.5
    assert gate["labelled_photos"] == 300
    assert "agreement >= 97%" in gate["rule"] and ">= 200 labelled photos" in gate["rule"]
    check = artifact_check({**report, "gate": gate}, "int8")
    assert (check.mark, check.symbol) == ("ok", "✓")
    assert check.text == (
        "recommended: agrees with fp32 on 98.0% of photos, -0.5 points of top-1 on 300 "
        "labelled photos"
    )
    assert recommended({**report, "gate": gate}, "int8") is True


@pytest.mark.parametrize(("agree", "passes"), [(97, True), (96, False)])
def test_agreement_of_97_percent_passes_and_less_does_not(agree, passes):
    gate = int8_gate(*_report(agree=agree))
    assert gate["recommended"] is passes
    if not passes:
        assert gate["reasons"] == ["top-1 agrees with fp32 on 96/100 photos (96.0%); 97% is needed"]


@pytest.mark.parametrize(("top1", "passes"), [(0.695, True), (0.6949, False), (0.72, True)])
def test_one_point_of_top1_may_be_lost_and_no_more(top1, passes):
    gate = int8_gate(*_report(top1=top1, fp32_top1=0.705))
    assert gate["recommended"] is passes, gate
    assert gate["accuracy_change_points"] == round((top1 - 0.705) * 100, 2)
    if not passes:
        assert gate["reasons"] == [
            "top-1 accuracy 69.5% against fp32's 70.5%: 1.0 points lost, 1.0 allowed"
        ]


@pytest.mark.parametrize(("labelled", "passes"), [(200, True), (199, False)])
def test_accuracy_vouches_from_200_labelled_photos(labelled, passes):
    gate = int8_gate(*_report(labelled=labelled))
    assert gate["recommended"] is passes
    assert gate["labelled_photos"] == labelled
    if not passes:
        assert gate["reasons"] == [
            "accuracy was measured on 199 labelled photos; 200 are needed to vouch for it "
            "(give a labelled folder as the validation photos)"
        ]


def test_accuracy_on_other_photos_than_fp32s_is_no_measurement():
    report, fp32 = _report()
    gate = int8_gate(report, {**fp32, "n": 299})
    assert gate["recommended"] is False and gate["accuracy_change_points"] is None
    assert gate["reasons"][0].startswith("no labelled photos to measure accuracy on")
    assert int8_gate(report, None)["reasons"] == gate["reasons"]
    assert int8_gate({**report, "accuracy": None}, fp32)["labelled_photos"] == 0


def test_calibrating_on_the_validation_photos_is_never_recommended():
    for disjoint in (False, None):
        report, fp32 = _report(disjoint=disjoint)
        if disjoint is None:
            del report["calibration_disjoint"]
        gate = int8_gate(report, fp32)
        assert gate["reasons"] == ["it was calibrated on the same photos it was validated on"]


@pytest.mark.parametrize(("same", "informative"), [(90, False), (89, True), (100, False)])
def test_agreement_is_informative_below_90_percent_of_photos_in_one_class(same, informative):
    reference = [3] * same + list(range(4, 4 + 100 - same))
    why = uninformative({"reference_top1": reference})
    assert (why is None) is informative
    if same == 100:
        assert why == (
            "not informative: the reference gives all 100 photos the same class (3), so any "
            "model that does the same agrees"
        )
    elif not informative:
        assert why == "not informative: the reference gives 90 of 100 photos the same class (3)"


def test_no_photos_compared_is_said():
    assert uninformative({}) == "no photos were compared"
    assert uninformative({"reference_top1": []}) == "no photos were compared"


def test_float_artifacts_are_recommended_and_int8_only_with_a_passed_gate():
    assert recommended({}, "fp32") is True and recommended({}, "fp16") is True
    assert recommended({}, "int8") is False
    assert recommended({"gate": {"recommended": False}}, "int8") is False


# -- the verdict every screen shows ---------------------------------------------------------


def test_verdicts_for_each_kind_of_artifact():
    failed = {"gate": {"recommended": False, "reasons": ["one", "two"]}}
    check = artifact_check(failed, "int8")
    assert (check.mark, check.symbol, check.text) == ("warn", "⚠", "not recommended: one; two")
    old = artifact_check({"vs_fp32": _comparison(10, 10)}, "int8")
    assert old.mark == "warn" and "checked before the INT8 rules" in old.text
    faithful = artifact_check(
        {"vs_tensorflow": {"max_rel_diff": 1e-3, "max_abs_diff": 2.5e-7, "n_images": 32}}, "fp32"
    )
    assert faithful.mark == "ok"
    assert faithful.text == "matches TensorFlow (max |difference| 2.5e-07 on 32 photos)"
    off = artifact_check({"vs_tensorflow": {"max_rel_diff": 0.0011, "max_abs_diff": 1}}, "fp32")
    assert (off.mark, off.text) == (
        "warn",
        "differs from TensorFlow by up to 0.1% of the largest output",
    )
    registered = artifact_check({"accuracy": {"top1": 0.6126, "n": 500}}, "fp16")
    assert (registered.mark, registered.symbol) == ("", "")
    assert registered.text == "registered as is; top-1 0.613 on 500 labelled photos"
    bare = artifact_check({}, "fp32")
    assert bare.text == "registered as is; no labelled photos to measure it on"


# -- the report table ----------------------------------------------------------------------------


def _artifact(precision: str, report: dict, size_mb: float = 2.5) -> ArtifactRecord:
    return ArtifactRecord(
        id=1,
        model_id=1,
        model_name="m",
        model_version=1,
        precision=precision,
        format="onnx",
        path=Path("/nowhere"),
        size_bytes=int(size_mb * 2**20),
        report=report,
        created_at=0.0,
    )


ACCURACY = {"top1": 0.6, "top5": 0.824, "top1_ci95": (0.5567, 0.6418), "n": 500}


def test_an_int8_row_names_its_parent_and_both_latencies():
    report, fp32 = _report(agree=98)
    report.update(
        latency={"int8": {"p50_ms": 12.34}, "fp32": {"p50_ms": 40.0}},
        accuracy={**ACCURACY},
        compared_with="fp32 ONNX of m:1",
    )
    report["gate"] = int8_gate(report, {**fp32, "n": 500, "top1": 0.6})
    row = report_row(_artifact("int8", report, size_mb=25.61))
    assert len(row) == len(REPORT_COLUMNS)
    assert row[:8] == [
        "int8",
        "25.6",
        "fp32 ONNX of m:1",
        "1.00e-02",
        "98/100 photos",
        "top-1 0.600 [0.557-0.642], top-5 0.824, 500 photos",
        "12.3",
        "40.0",
    ]
    assert row[8].startswith("✓ recommended: agrees with fp32 on 98.0% of photos")


def test_a_tensorflow_checked_row_and_a_registered_row():
    cmp = {**_comparison(32, 32), "max_abs_diff": 3e-6, "max_rel_diff": 1e-5}
    report = {"vs_tensorflow": cmp, "latency": {"onnxruntime": {"p50_ms": 5}}}
    row = report_row(_artifact("fp32", report))
    assert row[2:8] == ["TensorFlow", "3.00e-06", "32/32 photos", "-", "5.0", "-"]
    assert row[8].startswith("✓ matches TensorFlow")
    registered = {
        "predictions": [3, 5],
        "photos": ["cat.jpg", "cup.jpg"],
        "latency": {"onnxruntime": {"p50_ms": 7.25}},
    }
    row = report_row(_artifact("fp16", registered))
    assert row[1:] == [
        "2.5",
        "- (registered as is)",
        "-",
        "- (ran on 2 photos)",
        "-",
        "7.2",
        "-",
        "registered as is; no labelled photos to measure it on",
    ]
    assert report_row(_artifact("fp16", {}))[4] == "-"
    assert photo_predictions(_artifact("fp16", registered)) == [("cat.jpg", 3), ("cup.jpg", 5)]
    assert photo_predictions(_artifact("fp32", report)) == []
    assert photo_predictions(_artifact("int8", {"vs_fp32": {}, "photos": ["x"]})) == []


def test_cells_say_when_agreement_proves_nothing():
    assert agreement_cell(_comparison(3, 4)) == "3/4 photos"
    one_class = {**_comparison(4, 4), "reference_top1": [1, 1, 1, 1]}
    assert agreement_cell(one_class) == (
        "4/4 photos (not informative: the reference gives nearly every photo one class)"
    )
    legacy = {k: v for k, v in one_class.items() if k != "reference_top1"}
    assert agreement_cell(legacy) == "4/4 photos"
    assert accuracy_cell({}) == "-" and accuracy_cell({"accuracy": None}) == "-"


# -- accuracy figures ---------------------------------------------------------------------------


def test_wilson_interval_at_the_ends_and_with_no_photos():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    low, high = wilson_interval(300, 500)
    assert (low, high) == (0.5565, 0.642)  # 0.55645 and 0.64202 by the textbook formula
    narrow = wilson_interval(300, 500, z=1.0)
    assert low < narrow[0] < 0.6 < narrow[1] < high


def test_top_k_is_best_first_and_never_more_than_the_classes():
    scores = np.array([[0.1, 0.6, 0.5, 0.2, 0.0, 0.3], [0.9, 0.0, 0.05, 0.02, 0.01, 0.1]])
    assert top_k(scores, 3).tolist() == [[1, 2, 5], [0, 5, 2]]
    assert top_k(scores).tolist() == [[1, 2, 5, 3, 0], [0, 5, 2, 3, 4]]
    assert top_k(scores[:, :2], 5).tolist() == [[1, 0], [0, 1]]


def test_accuracy_figures_and_their_one_line_text():
    scores = [np.eye(10)[i] for i in (4, 4, 9, 1)]
    acc = accuracy(scores, [4, 3, 9, 1], source="four photos")
    assert acc["top1_hits"] == 3 and acc["top1"] == 0.75 and acc["n"] == 4
    assert acc["top1_ci95"] == wilson_interval(3, 4)
    assert acc["top5_ci95"] == wilson_interval(acc["top5_hits"], 4)
    assert acc["predicted"] == [4, 4, 9, 1] and acc["source"] == "four photos"
    low, high = acc["top1_ci95"]
    assert accuracy_text(acc) == (
        f"top-1 0.750 [{low:.3f}, {high:.3f}], top-5 {acc['top5']:.3f} on 4 labelled photos"
    )
    with pytest.raises(ValueError, match="4 score rows but 3 labels"):
        accuracy(scores, [4, 3, 9])


# -- a detector's report --------------------------------------------------------------------


def _detections(boxes: list, classes: list) -> dict:
    return {
        "detection_boxes": np.array([boxes], np.float32).reshape(1, -1, 4),
        "detection_classes": np.array([classes], np.float32),
        "detection_scores": np.full((1, len(classes)), 0.9, np.float32),
        "num_detections": np.array([len(classes)], np.float32),
        "raw_map": np.zeros((1, 4), np.float32),
    }


def test_a_converted_detector_gets_a_verdict_and_a_row():
    """SSD-VGG's fp32 report compares detections (engine/conversion/ssd_convert.py), which have no
    relative difference: its verdict and its row in `accel-widgets list` (and deploy, which
    checks the verdict first) must not fail on the missing figure."""
    from accel_widgets.engine.conversion.ssd_convert import detection_agreement

    cat = _detections([[0.1, 0.1, 0.5, 0.5]], [8])
    dog = _detections([[0.1, 0.1, 0.5, 0.5]], [12])
    same = {"vs_tensorflow": detection_agreement([cat, cat], [cat, cat])}
    check = artifact_check(same, "fp32")
    assert check.mark == "ok"
    assert check.text == "matches TensorFlow (every detection matched at IoU >= 0.5 on 2 photos)"
    differs = {"vs_tensorflow": detection_agreement([cat, cat], [cat, dog])}
    check = artifact_check(differs, "fp32")
    assert check.mark == "warn"
    assert check.text == (
        "detections differ from TensorFlow on 1 of 2 photos (recall 0.50, precision 0.50)"
    )
    row = report_row(_artifact("fp32", differs))
    assert row[2:5] == ["TensorFlow", "0.00e+00", "1/2 photos"]
    assert row[8] == "⚠ " + check.text
