"""A detector's answer as labelled boxes: what the client returns and the widgets draw.

Plain NumPy (no TensorFlow): the service returns ``detection_boxes`` ``[1, N, 4]``
(ymin, xmin, ymax, xmax fractions), ``detection_classes`` (VOC ids 1..20, as floats),
``detection_scores`` and ``num_detections``; this turns one image's rows into
:class:`Detection` objects, best score first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from accel_widgets.engine.models.ssd_decode import DETECTION_OUTPUTS


@dataclass(frozen=True)
class Detection:
    """One labelled box; ``box`` is (ymin, xmin, ymax, xmax) as fractions of the image."""

    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "class_id": self.class_id,
            "label": self.label,
            "score": self.score,
            "box": list(self.box),
        }

    def pixel_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in pixels of a ``width`` x ``height`` image."""
        ymin, xmin, ymax, xmax = self.box
        return (
            round(xmin * (width - 1)),
            round(ymin * (height - 1)),
            round(xmax * (width - 1)),
            round(ymax * (height - 1)),
        )


def is_detector_output(outputs: Mapping[str, Any]) -> bool:
    return all(name in outputs for name in DETECTION_OUTPUTS)


def detections_from_outputs(
    outputs: Mapping[str, np.ndarray], labels: Sequence[str] | None = None, row: int = 0
) -> list[Detection]:
    """One image's detections; ``outputs`` may keep the batch axis or have it removed."""
    count_array = np.asarray(outputs["num_detections"]).reshape(-1)
    count = int(count_array[row if count_array.size > 1 else 0])
    boxes = np.asarray(outputs["detection_boxes"], np.float64)
    classes = np.asarray(outputs["detection_classes"])
    scores = np.asarray(outputs["detection_scores"], np.float64)
    if boxes.ndim == 3:  # batch axis kept
        boxes, classes, scores = boxes[row], classes[row], scores[row]
    boxes = boxes.reshape(-1, 4)[:count]
    found = []
    for box, class_id, score in zip(
        boxes, classes.reshape(-1)[:count], scores.reshape(-1)[:count], strict=True
    ):
        index = round(float(class_id))
        label = labels[index] if labels and 0 <= index < len(labels) else f"class {index}"
        found.append(Detection(index, label, float(score), tuple(float(v) for v in box)))
    return found
