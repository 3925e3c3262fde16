"""The validation reports tell the truth: crafted outputs give exactly the expected numbers.

Every converted artifact carries a report ("top-1 agrees on 6/6 photos", "max |difference|
2e-07") that users trust instead of checking themselves. These tests feed the comparison
outputs that disagree in known places, and run the INT8 and TF-vs-ONNX report builders on
small real models whose disagreement is computed here independently, so a report that says
"agrees" without looking fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accel_widgets.engine.conversion.reports import report_row
from accel_widgets.engine.conversion.validate import compare
from accel_widgets.engine.store.workspace import ArtifactRecord
from accel_widgets.errors import ConversionError
from accel_widgets.preprocess import Preprocessing

# -- compare() on crafted outputs ---------------------------------------------------------------


def _crafted() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Four images, 8 classes, no ties. The candidate agrees on images 0 and 2 and differs:

    * image 1: top 1 moves from class 3 to class 5 (the largest difference, 0.40, is here),
      and the top 5 stays the same set;
    * image 3: top 1 moves from class 7 to class 0, and only classes 0 and 7 of its top 5
      survive.
    """
    reference = np.array(
        [
            [0.40, 0.15, 0.12, 0.10, 0.08, 0.07, 0.05, 0.03],
            [0.04, 0.06, 0.08, 0.50, 0.10, 0.12, 0.07, 0.03],
            [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.72],
            [0.20, 0.15, 0.14, 0.13, 0.12, 0.02, 0.01, 0.23],
        ]
    )
    candidate = reference.copy()
    candidate[0, 0] = 0.35  # still top 1: agrees, |diff| 0.05
    candidate[1, 3], candidate[1, 5] = 0.11, 0.52  # |diff| 0.39 and 0.40
    candidate[3] = [0.30, 0.01, 0.015, 0.005, 0.02, 0.22, 0.21, 0.18]
    # One [1, 8] array per image, as ONNX Runtime returns them.
    return [r[np.newaxis] for r in reference], [c[np.newaxis] for c in candidate]


def test_compare_counts_the_known_disagreements_exactly():
    reference, candidate = _crafted()
    result = compare(reference, candidate)
    assert result["n_images"] == 4
    assert result["reference_top1"] == [0, 3, 7, 7]
    assert result["candidate_top1"] == [0, 5, 7, 0]
    assert result["top1_agree_count"] == 2
    assert result["top1_agreement"] == 0.5
    assert result["max_abs_diff"] == pytest.approx(0.40, abs=1e-12)
    assert result["max_rel_diff"] == pytest.approx(0.40 / 0.72, abs=1e-12)
    ref, cand = np.concatenate(reference), np.concatenate(candidate)
    assert result["mean_abs_diff"] == pytest.approx(np.abs(ref - cand).sum() / 32, abs=1e-12)
    # Top-5 overlap: images 0, 1, 2 keep all five; image 3 keeps {0, 7} of {7, 0, 1, 2, 3}.
    assert result["top5_overlap"] == pytest.approx((1 + 1 + 1 + 2 / 5) / 4, abs=1e-12)


def test_compare_of_identical_outputs_is_perfect_and_of_opposites_is_zero():
    reference, _ = _crafted()
    same = compare(reference, reference)
    assert (same["top1_agree_count"], same["max_abs_diff"]) == (4, 0.0)
    reversed_scores = [r[:, ::-1] for r in reference]
    opposite = compare(reference, reversed_scores)
    assert opposite["top1_agree_count"] == 0 and opposite["top1_agreement"] == 0.0


def test_compare_refuses_outputs_of_different_shapes():
    reference, candidate = _crafted()
    with pytest.raises(ConversionError, match="output shapes differ"):
        compare(reference, candidate[:3])
    with pytest.raises(ConversionError, match="output shapes differ"):
        compare(reference, [c[:, :7] for c in candidate])


def test_compare_refuses_no_outputs_in_words():
    with pytest.raises(ConversionError, match="no outputs to compare"):
        compare([], [])


def _artifact(precision: str, report: dict) -> ArtifactRecord:
    return ArtifactRecord(
        id=1,
        model_id=1,
        model_name="m",
        model_version=1,
        precision=precision,
        format="onnx",
        path=Path("/nowhere"),
        size_bytes=2**20,
        report=report,
        created_at=0.0,
    )


def test_report_row_shows_the_counts_and_difference_it_was_given():
    reference, candidate = _crafted()
    row = report_row(_artifact("int8", {"vs_fp32": compare(reference, candidate)}))
    assert row[2:5] == ["FP32 ONNX", "4.00e-01", "2/4 photos"]
    row = report_row(_artifact("fp32", {"vs_tensorflow": compare(reference, candidate[:1] * 4)}))
    assert row[2] == "TensorFlow" and row[4] == "1/4 photos"


# -- the report builders on small real models ---------------------------------------------------

CLASSES = 10


def _colour_weights() -> np.ndarray:
    """Mean R, G, B (0..255) -> 10 logits: class 0 follows red, 1 green, 2 blue, 3..9 are flat.

    Divided by 255 and scaled by 8, so a photo's dominant colour wins clearly.
    """
    weights = np.zeros((3, CLASSES), np.float32)
    weights[0, 0] = weights[1, 1] = weights[2, 2] = 8 / 255
    return weights


def _mean_colour_onnx(path: Path, weights: np.ndarray) -> Path:
    """ONNX: pixels [N, 224, 224, 3] -> mean colour -> MatMul(weights) -> Softmax."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["pixels"], ["colour"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["colour", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["output_alias"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mean_colour",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 224, 224, 3])],
        [helper.make_tensor_value_info("output_alias", TensorProto.FLOAT, [None, CLASSES])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _plain_scores(inputs: list[np.ndarray], weights: np.ndarray) -> list[np.ndarray]:
    """What the mean-colour model computes, in float64 numpy."""
    out = []
    for x in inputs:
        logits = x.astype(np.float64).mean(axis=(1, 2)) @ weights.astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append(exp / exp.sum(axis=1, keepdims=True))
    return out


@pytest.fixture(scope="module")
def photos_and_inputs():
    from accel_widgets.engine.checks.samples import sample_photos
    from accel_widgets.engine.conversion.validate import photo_inputs

    photos = sample_photos()
    return photos, photo_inputs(photos, Preprocessing())


def _quiet(*_args) -> None:
    return None


def test_int8_report_is_what_the_two_models_compute(tmp_path, photos_and_inputs):
    """quantize_and_validate's vs_fp32 equals a comparison made here of the two files' outputs."""
    pytest.importorskip("onnxruntime.quantization")
    from accel_widgets.engine.conversion.convert_worker import quantize_and_validate
    from accel_widgets.engine.conversion.validate import onnx_session

    photos, inputs = photos_and_inputs
    fp32 = _mean_colour_onnx(tmp_path / "fp32.onnx", _colour_weights())
    int8 = tmp_path / "int8.onnx"
    job = {"preprocessing": Preprocessing().to_dict(), "timing_runs": 2}
    report = quantize_and_validate(fp32, int8, job, _quiet)

    fp32_out = [onnx_session(fp32).run(None, {"pixels": x})[0] for x in inputs]
    int8_out = [onnx_session(int8).run(None, {"pixels": x})[0] for x in inputs]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(fp32_out, int8_out, strict=True))
    assert diff > 0  # INT8 rounds: a report saying 0 would not have looked
    cmp = report["vs_fp32"]
    assert cmp["max_abs_diff"] == pytest.approx(diff, rel=1e-6)
    assert cmp["reference_top1"] == [int(np.argmax(o)) for o in fp32_out]
    assert cmp["candidate_top1"] == [int(np.argmax(o)) for o in int8_out] == report["predictions"]
    same = sum(a == b for a, b in zip(cmp["reference_top1"], cmp["candidate_top1"], strict=True))
    assert cmp["top1_agree_count"] == same and cmp["n_images"] == len(photos)
    assert report["photos"] == [p.name for p in photos]


def test_tf_vs_onnx_report_counts_a_crafted_disagreement(tmp_path, photos_and_inputs):
    """The TF side scores by colour; the ONNX side has the green and blue classes swapped.
    Photos whose dominant colour is green or blue (the rocket's sky) must be counted as
    disagreeing, the red ones (the cat, the espresso...) as agreeing."""
    pytest.importorskip("tensorflow")
    import keras

    from accel_widgets.engine.conversion.convert_worker import validate_against_tf
    from accel_widgets.engine.models.build import make_serving_module, save_serving_module

    photos, inputs = photos_and_inputs
    weights = _colour_weights()
    swapped = weights[:, [0, 2, 1, *range(3, CLASSES)]]
    pixels = keras.Input((224, 224, 3))
    colour = keras.layers.GlobalAveragePooling2D()(pixels)
    dense = keras.layers.Dense(CLASSES, use_bias=False, activation="softmax")
    network = keras.Model(pixels, dense(colour))
    dense.set_weights([weights])
    server = Preprocessing().to_dict()
    graph = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 1.0, "to_bgr": False}
    module = make_serving_module(network, {"server": server, "graph": graph})
    save_serving_module(module, tmp_path / "saved_model")
    onnx_path = _mean_colour_onnx(tmp_path / "model.onnx", swapped)

    job = {"preprocessing": server, "timing_runs": 2}
    report, _, _ = validate_against_tf(tmp_path / "saved_model", onnx_path, job, _quiet)

    tf_expected = _plain_scores(inputs, weights)
    onnx_expected = _plain_scores(inputs, swapped)
    tf_top1 = [int(np.argmax(o)) for o in tf_expected]
    onnx_top1 = [int(np.argmax(o)) for o in onnx_expected]
    agree = sum(a == b for a, b in zip(tf_top1, onnx_top1, strict=True))
    assert 0 < agree < len(photos)  # the crafted disagreement really happens on these photos
    cmp = report["vs_tensorflow"]
    assert cmp["reference_top1"] == tf_top1 and cmp["candidate_top1"] == onnx_top1
    assert cmp["top1_agree_count"] == agree and cmp["n_images"] == len(photos)
    assert cmp["top1_agreement"] == pytest.approx(agree / len(photos))
    worst = max(float(np.abs(a - b).max()) for a, b in zip(tf_expected, onnx_expected, strict=True))
    assert cmp["max_abs_diff"] == pytest.approx(worst, rel=1e-4)
    assert report["predictions"] == onnx_top1
    # TensorFlow's own JPEG path decodes differently but ends in the same colour classes.
    jpeg = report["vs_tensorflow_jpeg"]
    assert jpeg["candidate_top1"] == onnx_top1 and jpeg["n_images"] == len(photos)
