"""A detector's answer on the photo: boxes in a colour per class, label and score on each.

The Score step calls :func:`show_detections` for a service whose model is a detector (the
classifiers keep their top-5 table). The photo is drawn with Pillow onto PNG bytes for the
``Image`` widget, like the charts (no pyplot: the step runs on a background thread), and a
table lists the same detections, so what is drawn is exactly what the service returned.
"""

from __future__ import annotations

import colorsys
import html
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from accel_widgets.engine.clients.detection import Detection, detections_from_outputs
from accel_widgets.engine.models.ssd_decode import DETECTION_OUTPUTS


@dataclass(frozen=True)
class DetectionResult:
    """The Score step's result for a detector: the boxes and the request's latency."""

    detections: list[Detection]
    latency_ms: float


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A saturated colour per class id, the same on every photo (golden-angle hues)."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def draw_detections(data: bytes, detections: Sequence[Detection], line: int = 0) -> bytes:
    """The photo with each detection's box and ``label score`` drawn on it, as PNG bytes."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = picture.size
    line = line or max(2, round(min(width, height) / 200))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(11, round(min(width, height) / 32)))
    for detection in detections:
        colour = class_colour(detection.class_id)
        left, top, right, bottom = detection.pixel_box(width, height)
        draw.rectangle([left, top, right, bottom], outline=colour, width=line)
        text = f"{detection.label} {detection.score:.2f}"
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = x1 - x0 + 6, y1 - y0 + 4
        # The label sits on the box's top edge (inside when the box touches the top).
        label_top = top - text_h if top - text_h >= 0 else top
        label_left = min(left, max(0, width - text_w))
        draw.rectangle(
            [label_left, label_top, label_left + text_w, label_top + text_h], fill=colour
        )
        draw.text((label_left + 3 - x0, label_top + 2 - y0), text, fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def detections_table(detections: Sequence[Detection], photo: str) -> str:
    """One row per box (``accel-detection-row``), best first, in the box's colour."""
    rows = "".join(
        "<tr class='accel-detection-row'>"
        f"<td style='padding:1px 6px'><span style='display:inline-block;width:0.8em;"
        f"height:0.8em;background:rgb{class_colour(d.class_id)}'></span> "
        f"{html.escape(d.label)}</td>"
        f"<td style='padding:1px 6px'>{d.score:.3f}</td>"
        f"<td style='padding:1px 6px'>[{', '.join(f'{v:.2f}' for v in d.box)}]</td></tr>"
        for d in detections
    )
    caption = f"{len(detections)} object(s) in <b>{html.escape(photo)}</b>"
    if not detections:
        caption += " (none scored above 0.5)"
    return (
        "<table class='accel-detections'>"
        f"<caption style='text-align:left;padding:0 6px 2px'>{caption}</caption>"
        "<thead><tr><th style='text-align:left;padding:1px 6px'>class</th>"
        "<th style='text-align:left;padding:1px 6px'>score</th>"
        "<th style='text-align:left;padding:1px 6px'>box [ymin, xmin, ymax, xmax]</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )


def is_detector_service(service: Any, workspace: Any) -> bool:
    """Whether ``service`` serves a detector (its model's spec says ``task: detection``)."""
    from accel_widgets.engine.store.workspace import Workspace

    workspace = workspace or Workspace()
    artifact = workspace.get_artifact_by_id(service.artifact_id)
    model = workspace.get_model(artifact.model_name, artifact.model_version)
    return model.spec.get("task") == "detection"


def show_detections(step: Any, client: Any, data: bytes, name: str) -> DetectionResult:
    """Score ``data`` with a detector and fill the Score step: photo with boxes, table, latency."""
    started = time.perf_counter()
    arrays = client.score_image(data, outputs=list(DETECTION_OUTPUTS))
    latency_ms = (time.perf_counter() - started) * 1000
    found = detections_from_outputs(arrays, step._labels)
    step.picture.format = "png"
    step.picture.value = draw_detections(data, found)
    step.top5.value = detections_table(found, name)
    step.latency.value = html.escape(
        f"{latency_ms:.1f} ms for the whole request (upload, decode, model, box decoding and "
        "NMS, reply)"
    )
    result = DetectionResult(found, latency_ms)
    step.result = result
    step.status = f"{name}: {len(found)} object(s)" + (f", best {found[0].label}" if found else "")
    step.done = True
    return result
