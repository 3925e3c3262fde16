"""The detector's post-processing, pinned at its edges: defaults, IoU and score thresholds.

SSD300-VGG keeps, per class, the boxes scoring above 0.5 and drops a box that overlaps a
better one of its class by more than IoU 0.45 (the original service's settings). A test on
random maps cannot tell 0.45 from 0.5: these place two boxes at a chosen IoU just under and
just over the threshold (decoded from raw offsets, the way the model's outputs are), and
check what the NumPy reference and, where TensorFlow is installed, the graph that becomes
the served ONNX model keep.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from accel_widgets.engine.models.ssd_anchors import FEATURE_MAPS, VARIANCES, anchors
from accel_widgets.engine.models.ssd_decode import (
    NUM_CLASSES,
    DetectionSettings,
    decode_boxes,
    detect_numpy,
    iou,
    nms,
    softmax,
)

CAT = 8
FIRST, SECOND = 0, 1  # two anchors of the first cell of the 37 x 37 map


def test_the_defaults_are_the_original_services():
    assert DetectionSettings() == DetectionSettings(score_threshold=0.5, nms_iou=0.45, top_k=400)


def _box_at_iou(target: float) -> tuple[np.ndarray, np.ndarray]:
    """Two boxes (ymin, xmin, ymax, xmax) of one size, side by side, at IoU ``target``."""
    first = np.array([0.2, 0.2, 0.6, 0.6])
    inter = 0.32 * target / (1 + target)  # inter / (2 * 0.16 - inter) == target
    shift = 0.4 - inter / 0.4
    return first, first + np.array([0.0, shift, 0.0, shift])


def _offsets(box: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """The raw (dx, dy, dw, dh) that decode to ``box`` at ``anchor`` (cy, cx, h, w)."""
    cy, cx, h, w = anchor
    centre_y, centre_x = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    height, width = box[2] - box[0], box[3] - box[1]
    return np.array(
        [
            (centre_x - cx) / (VARIANCES[1] * w),
            (centre_y - cy) / (VARIANCES[0] * h),
            math.log(width / w) / VARIANCES[3],
            math.log(height / h) / VARIANCES[2],
        ],
        np.float32,
    )


def _maps(boxes: list[np.ndarray], cat_logits: list[float]):
    """Raw maps (batch 1) where every anchor says background, except the first anchors,
    which decode to ``boxes`` and give the cat class the logits given."""
    priors = anchors()
    locations, logits = [], []
    for m in FEATURE_MAPS:
        shape = (1, m.grid, m.grid, m.anchors_per_cell)
        locations.append(np.zeros((*shape, 4), np.float32))
        background = np.zeros((*shape, NUM_CLASSES), np.float32)
        background[..., 0] = 12.0
        logits.append(background)
    for index, (box, logit) in enumerate(zip(boxes, cat_logits, strict=True)):
        locations[0][0, 0, 0, index] = _offsets(box, priors[index])
        logits[0][0, 0, 0, index, 0] = 0.0
        logits[0][0, 0, 0, index, CAT] = logit
    return locations, logits


def _kept(iou_wanted: float, settings: DetectionSettings | None = None) -> int:
    first, second = _box_at_iou(iou_wanted)
    locations, logits = _maps([first, second], [9.0, 8.0])
    found = detect_numpy(locations, logits, settings or DetectionSettings())[0]
    assert set(found["classes"].tolist()) <= {CAT}
    return len(found["classes"])


def test_crafted_boxes_decode_where_they_were_placed():
    first, second = _box_at_iou(0.449)
    locations, _ = _maps([first, second], [9.0, 8.0])
    loc = np.concatenate([t.reshape(1, -1, 4) for t in locations], axis=1)[0]
    decoded = decode_boxes(loc)[:2]
    np.testing.assert_allclose(decoded, [first, second], atol=1e-6)
    assert iou(decoded[0], decoded[1:])[0] == pytest.approx(0.449, abs=1e-5)


@pytest.mark.parametrize(("overlap", "kept"), [(0.44, 2), (0.449, 2), (0.451, 1), (0.46, 1)])
def test_a_second_box_of_a_class_is_dropped_only_above_iou_0_45(overlap, kept):
    assert _kept(overlap) == kept


def test_the_iou_threshold_is_a_setting():
    assert _kept(0.46, DetectionSettings(nms_iou=0.5)) == 2
    assert _kept(0.44, DetectionSettings(nms_iou=0.4)) == 1


def test_boxes_of_different_classes_never_suppress_each_other():
    first, second = _box_at_iou(0.9)
    locations, logits = _maps([first, second], [9.0, 8.0])
    logits[0][0, 0, 0, SECOND, CAT] = 0.0
    logits[0][0, 0, 0, SECOND, 12] = 8.0
    found = detect_numpy(locations, logits)[0]
    assert found["classes"].tolist() == [CAT, 12]


@pytest.mark.parametrize(("logit", "kept"), [(0.05, 1), (-0.05, 0)])
def test_a_box_is_reported_only_when_it_scores_above_0_5(logit, kept):
    """Cat logit ``l`` against one background logit of 0 and 19 zero logits: the cat's score
    is e^l / (e^l + 20), which is 0.5 at l = ln(20); just above and just below it."""
    first, _ = _box_at_iou(0.1)
    locations, logits = _maps([first], [math.log(20) + logit])
    logits[0][0, 0, 0, FIRST, 0] = 0.0
    found = detect_numpy(locations, logits)[0]
    assert len(found["classes"]) == kept
    if kept:
        assert found["scores"][0] == pytest.approx(0.5, abs=0.02)


def test_nms_keeps_at_most_top_k_best_first():
    boxes = np.array([[0.1 * i, 0.0, 0.1 * i + 0.05, 0.05] for i in range(6)], np.float32)
    scores = np.array([0.6, 0.9, 0.7, 0.95, 0.8, 0.3], np.float32)
    assert nms(boxes, scores, DetectionSettings(top_k=3)) == [3, 1, 4]
    assert nms(boxes, scores, DetectionSettings()) == [3, 1, 4, 2, 0]


def test_iou_of_touching_identical_and_empty_boxes():
    box = np.array([0.2, 0.2, 0.6, 0.6])
    others = np.array(
        [[0.2, 0.2, 0.6, 0.6], [0.6, 0.2, 0.9, 0.6], [0.4, 0.4, 0.8, 0.8], [0.3, 0.3, 0.3, 0.3]]
    )
    np.testing.assert_allclose(iou(box, others), [1.0, 0.0, 0.04 / 0.28, 0.0])
    empty = np.array([0.5, 0.5, 0.5, 0.5])
    assert iou(empty, empty[np.newaxis]).tolist() == [0.0]  # no 0/0


def test_softmax_is_per_row_in_float32_whatever_the_scale_of_other_rows():
    logits = np.array([[0.0, 1.0, 2.0], [1000.0, 1001.0, 1002.0]], np.float64)
    out = softmax(logits)
    assert out.dtype == np.float32
    expected = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    np.testing.assert_allclose(out, [expected, expected], rtol=1e-6)
    batch = softmax(np.stack([logits, logits[::-1]]))
    np.testing.assert_allclose(batch.sum(axis=-1), np.ones((2, 2)), rtol=1e-6)


def test_the_graph_keeps_what_the_reference_keeps_at_the_iou_edge():
    """The TensorFlow graph (converted into the served ONNX model) at the same edge."""
    tf = pytest.importorskip("tensorflow")
    from accel_widgets.engine.models.ssd_decode import detect_tf

    for overlap, kept in ((0.449, 2), (0.451, 1)):
        first, second = _box_at_iou(overlap)
        locations, logits = _maps([first, second], [9.0, 8.0])
        graph = detect_tf(tf, [tf.constant(t) for t in locations], [tf.constant(t) for t in logits])
        assert graph["num_detections"].numpy().tolist() == [kept], overlap
        np.testing.assert_allclose(graph["detection_boxes"].numpy()[0, 0], first, atol=1e-5)


def test_iou_of_oblong_boxes_and_of_boxes_apart_on_one_axis_only():
    """Heights and widths are read from their own coordinates, and boxes that overlap on
    one axis but are apart on the other have nothing in common (not a negative overlap)."""
    wide = np.array([0.0, 0.0, 0.5, 1.0])  # ymin, xmin, ymax, xmax: half as high as wide
    np.testing.assert_allclose(iou(wide, np.array([[0.0, 0.0, 1.0, 1.0]])), [0.5])
    np.testing.assert_allclose(iou(wide, np.array([[0.0, 0.0, 1.0, 0.25]])), [0.125 / 0.625])
    apart_in_y = np.array([[0.7, 0.0, 0.9, 1.0]])
    apart_in_x = np.array([[0.0, 0.5, 0.5, 1.0]])
    assert iou(wide, apart_in_y).tolist() == [0.0]
    assert iou(np.array([0.0, 0.0, 0.5, 0.2]), apart_in_x).tolist() == [0.0]


def test_iou_of_empty_boxes_is_zero_without_dividing_by_zero():
    empty = np.array([0.5, 0.5, 0.5, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns on 0/0 even where the result is unused
        assert iou(empty, np.array([empty, empty])).tolist() == [0.0, 0.0]
