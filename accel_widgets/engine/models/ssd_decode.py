"""SSD box decoding and per-class NMS: in the TensorFlow graph, and a NumPy reference.

The graph version (:func:`detect_tf`) is what the converted model runs: TensorFlow's
``combined_non_max_suppression`` converts to ONNX ``NonMaxSuppression`` (docs/FINDINGS.md), so
decoding runs inside the ONNX model and the server stays generic. The NumPy version
(:func:`detect_numpy`) is the written-out algorithm the tests hold the graph to, and what a
client that only has the 12 raw tensors of the original service can run.

Raw tensors follow the original model: per map, box offsets ``[B, H, W, A, 4]`` in the order
(dx, dy, dw, dh) (the SSD-TensorFlow convention) and class logits ``[B, H, W, A, 21]``
(background first). Decoding: ``cx = dx * 0.1 * w_a + cx_a``, ``cy = dy * 0.1 * h_a + cy_a``,
``w = w_a * exp(dw * 0.2)``, ``h = h_a * exp(dh * 0.2)``. Then softmax over the 21 classes,
background dropped; per class the boxes scoring above 0.5, greedy NMS at IoU 0.45, at most
400 per class; all classes merged by score, the best 400 kept, boxes clipped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from accel_widgets.engine.models.ssd_anchors import NUM_ANCHORS, VARIANCES, anchors

NUM_CLASSES = 21  # background + 20 Pascal VOC classes
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.45
TOP_K = 400

#: Output names of the converted model (and keys of the SavedModel's outputs).
DETECTION_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


@dataclass(frozen=True)
class DetectionSettings:
    """Post-processing thresholds; the defaults are the original service's."""

    score_threshold: float = SCORE_THRESHOLD
    nms_iou: float = NMS_IOU
    top_k: int = TOP_K


# -- TensorFlow (in the graph) ---------------------------------------------------------------


def detect_tf(
    tf, locations: Sequence, logits: Sequence, settings: DetectionSettings = DetectionSettings()
) -> dict:
    """Raw per-map tensors -> the four detection outputs, as TensorFlow ops.

    ``detection_boxes`` is ``[B, N, 4]`` (ymin, xmin, ymax, xmax fractions) where N is the
    most detections any image of the batch has; rows past an image's ``num_detections`` are
    zeros. ``detection_classes`` holds VOC class ids 1..20 (0 is background, never returned)
    as float32, like TensorFlow's Object Detection API.
    """
    batch = tf.shape(locations[0])[0]
    loc = tf.concat([tf.reshape(t, [batch, -1, 4]) for t in locations], axis=1)
    cls = tf.concat([tf.reshape(t, [batch, -1, NUM_CLASSES]) for t in logits], axis=1)
    boxes = decode_boxes_tf(tf, loc)
    scores = tf.nn.softmax(cls, axis=-1)[:, :, 1:]
    nmsed_boxes, nmsed_scores, nmsed_classes, valid = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        scores,
        max_output_size_per_class=settings.top_k,
        max_total_size=settings.top_k,
        iou_threshold=settings.nms_iou,
        score_threshold=settings.score_threshold,
        clip_boxes=True,
    )
    count = tf.reduce_max(valid)
    return {
        "detection_boxes": nmsed_boxes[:, :count],
        "detection_classes": nmsed_classes[:, :count] + 1.0,
        "detection_scores": nmsed_scores[:, :count],
        "num_detections": tf.cast(valid, tf.float32),
    }


def decode_boxes_tf(tf, loc):
    """``[B, 8432, 4]`` offsets -> ``[B, 8432, 4]`` (ymin, xmin, ymax, xmax) fractions."""
    prior = tf.constant(anchors())  # made inside the traced function: a constant, not an input
    cy, cx, h, w = prior[:, 0], prior[:, 1], prior[:, 2], prior[:, 3]
    centre_x = loc[..., 0] * VARIANCES[1] * w + cx
    centre_y = loc[..., 1] * VARIANCES[0] * h + cy
    width = w * tf.exp(loc[..., 2] * VARIANCES[3])
    height = h * tf.exp(loc[..., 3] * VARIANCES[2])
    return tf.stack(
        [
            centre_y - height / 2,
            centre_x - width / 2,
            centre_y + height / 2,
            centre_x + width / 2,
        ],
        axis=-1,
    )


# -- NumPy (the reference) -------------------------------------------------------------------


def flatten_raw(locations: Sequence[np.ndarray], logits: Sequence[np.ndarray]):
    """Per-map raw tensors of one image or a batch -> ``[B, 8432, 4]`` and ``[B, 8432, 21]``."""
    batch = np.asarray(locations[0]).shape[0]
    loc = np.concatenate([np.asarray(t).reshape(batch, -1, 4) for t in locations], axis=1)
    cls = np.concatenate([np.asarray(t).reshape(batch, -1, NUM_CLASSES) for t in logits], axis=1)
    if loc.shape[1] != NUM_ANCHORS or cls.shape[1] != NUM_ANCHORS:
        raise ValueError(
            f"the raw tensors hold {loc.shape[1]} boxes and {cls.shape[1]} score rows; "
            f"SSD300-VGG has {NUM_ANCHORS} anchors"
        )
    return loc, cls


def decode_boxes(loc: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`decode_boxes_tf` (float32, the same operation order)."""
    prior = anchors()
    cy, cx, h, w = prior[:, 0], prior[:, 1], prior[:, 2], prior[:, 3]
    loc = np.asarray(loc, np.float32)
    centre_x = loc[..., 0] * np.float32(VARIANCES[1]) * w + cx
    centre_y = loc[..., 1] * np.float32(VARIANCES[0]) * h + cy
    width = w * np.exp(loc[..., 2] * np.float32(VARIANCES[3]))
    height = h * np.exp(loc[..., 3] * np.float32(VARIANCES[2]))
    return np.stack(
        [centre_y - height / 2, centre_x - width / 2, centre_y + height / 2, centre_x + width / 2],
        axis=-1,
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax in float32, as the graph computes it (so near-equal scores sort alike)."""
    logits = np.asarray(logits, np.float32)
    exp = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (ymin, xmin, ymax, xmax) box with each row of ``others``."""
    y1 = np.maximum(box[0], others[:, 0])
    x1 = np.maximum(box[1], others[:, 1])
    y2 = np.minimum(box[2], others[:, 2])
    x2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, settings: DetectionSettings) -> list[int]:
    """Greedy NMS: indices of kept boxes, best first (scores above the threshold only)."""
    candidates = np.flatnonzero(scores > settings.score_threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    kept: list[int] = []
    for index in order:
        if len(kept) >= settings.top_k:
            break
        if not kept or np.all(iou(boxes[index], boxes[kept]) <= settings.nms_iou):
            kept.append(int(index))
    return kept


def detect_numpy(
    locations: Sequence[np.ndarray],
    logits: Sequence[np.ndarray],
    settings: DetectionSettings = DetectionSettings(),
) -> list[dict[str, np.ndarray]]:
    """The reference: one dict per image with ``boxes`` [n, 4], ``classes`` [n], ``scores`` [n]."""
    loc, cls = flatten_raw(locations, logits)
    results = []
    for image_loc, image_cls in zip(loc, cls, strict=True):
        boxes = decode_boxes(image_loc)
        scores = softmax(image_cls)
        found: list[tuple[float, int, int]] = []
        for class_id in range(1, NUM_CLASSES):
            column = scores[:, class_id]
            found.extend((float(column[i]), class_id, i) for i in nms(boxes, column, settings))
        found.sort(key=lambda item: -item[0])
        found = found[: settings.top_k]
        results.append(
            {
                "boxes": np.clip(boxes[[i for _, _, i in found]], 0.0, 1.0).reshape(-1, 4),
                "classes": np.array([c for _, c, _ in found], np.int64),
                "scores": np.array([s for s, _, _ in found], np.float32),
            }
        )
    return results
