"""The detector's side of the converter child process: tf2onnx, validation, INT8.

:mod:`~accel_widgets.engine.conversion.convert_worker` hands a job whose model spec says
``task: detection`` to these functions. The differences from the classifiers:

* conversion goes through the SavedModel's ``predict_pixels`` (stock tf2onnx, with the
  converter's gc-after-each-pass fix), not the low-memory Keras path: box decoding and NMS are
  TensorFlow ops, not Keras layers. Measured: 23 s and a 3.1 GB peak for SSD300-VGG (26.3 M
  parameters) on a 2-core AMD EPYC;
* the ONNX model has 16 outputs, named as the SavedModel's (``detection_boxes`` ... and
  ``block4_loc``/``block4_logits`` ... for the raw maps), so nothing is renamed;
* agreement is measured on detections (:func:`detection_agreement`: same class, IoU >= 0.5)
  and on the raw maps (largest absolute difference), not on a top-1 class;
* INT8 quantizes the convolution tower only: the L2 normalisation, softmax, box decoding and
  NMS stay float (8-bit box offsets through ``exp`` would move every box).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accel_widgets.engine.models.ssd_decode import DETECTION_OUTPUTS, iou

OPSET = 17
ONNX_INPUT = "pixels"
MATCH_IOU = 0.5
#: The ops INT8 quantizes; every other node of the detector stays float.
QUANTIZED_OPS = ("Conv", "Relu", "MaxPool")

Emit = Callable[[str, float | None, str], None]


def detections_of(outputs: Mapping[str, np.ndarray], row: int = 0) -> dict[str, np.ndarray]:
    """One image's detections from the model's outputs (padding dropped)."""
    count = int(np.asarray(outputs["num_detections"]).reshape(-1)[row])
    return {
        "boxes": np.asarray(outputs["detection_boxes"])[row, :count].reshape(-1, 4),
        "classes": np.asarray(outputs["detection_classes"])[row, :count].astype(np.int64),
        "scores": np.asarray(outputs["detection_scores"])[row, :count],
    }


def match_detections(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], min_iou: float
) -> int:
    """How many reference detections have a candidate of the same class at IoU >= ``min_iou``.

    Greedy, best reference score first; each candidate matches at most once.
    """
    used = np.zeros(len(candidate["classes"]), bool)
    matched = 0
    for index in np.argsort(-np.asarray(reference["scores"]), kind="stable"):
        same = np.flatnonzero((candidate["classes"] == reference["classes"][index]) & ~used)
        if same.size == 0:
            continue
        overlaps = iou(reference["boxes"][index], candidate["boxes"][same])
        best = int(np.argmax(overlaps))
        if overlaps[best] >= min_iou:
            used[same[best]] = True
            matched += 1
    return matched


def detection_agreement(
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
    min_iou: float = MATCH_IOU,
) -> dict[str, Any]:
    """Boxes-and-classes agreement of two detectors on the same photos (one output dict each).

    A detection agrees when the other model has one of the same class overlapping it at IoU
    >= ``min_iou``. ``recall`` is the share of the reference's detections the candidate
    found, ``precision`` the share of the candidate's that the reference has;
    ``top1_agree_count`` (the classifiers' column) counts photos where every detection of
    each side has its match, and ``max_abs_diff`` is over the 12 raw maps.
    """
    found_ref = found_cand = total_ref = total_cand = same_photos = 0
    for ref_out, cand_out in zip(reference, candidate, strict=True):
        ref, cand = detections_of(ref_out), detections_of(cand_out)
        a = match_detections(ref, cand, min_iou)
        b = match_detections(cand, ref, min_iou)
        found_ref, found_cand = found_ref + a, found_cand + b
        total_ref, total_cand = total_ref + len(ref["classes"]), total_cand + len(cand["classes"])
        same_photos += int(a == len(ref["classes"]) and b == len(cand["classes"]))
    diffs = [
        np.abs(np.asarray(r[key], np.float64) - np.asarray(c[key], np.float64))
        for r, c in zip(reference, candidate, strict=True)
        for key in r
        if key not in DETECTION_OUTPUTS
    ]
    return {
        "match_iou": min_iou,
        "reference_detections": total_ref,
        "candidate_detections": total_cand,
        "recall": round(found_ref / total_ref, 4) if total_ref else 1.0,
        "precision": round(found_cand / total_cand, 4) if total_cand else 1.0,
        "top1_agree_count": same_photos,
        "top1_agreement": same_photos / max(len(reference), 1),
        "n_images": len(reference),
        "max_abs_diff": float(max((d.max() for d in diffs if d.size), default=0.0)),
        "mean_abs_diff": float(np.mean([d.mean() for d in diffs if d.size])) if diffs else 0.0,
    }


def convert_detector(saved_model: Path, onnx_path: Path, size: int, emit: Emit) -> None:
    """tf2onnx on the SavedModel's ``predict_pixels``; the 16 outputs keep their names."""
    import gc

    import onnx
    import tensorflow as tf
    import tf2onnx

    from accel_widgets.engine.conversion.onnx_steps import (
        forward_tf2onnx_logs,
        patch_tf2onnx_memory,
    )

    patch_tf2onnx_memory()
    emit("convert", 0.05, "loading the SavedModel")
    loaded = tf.saved_model.load(str(saved_model))
    spec = [tf.TensorSpec([None, size, size, 3], tf.float32, name=ONNX_INPUT)]
    with forward_tf2onnx_logs(emit):
        emit("convert", 0.1, f"converting SSD with box decoding and NMS to ONNX (opset {OPSET})")
        model_proto, _ = tf2onnx.convert.from_function(
            loaded.predict_pixels, input_signature=spec, opset=OPSET
        )
    del loaded
    gc.collect()
    emit("convert", 0.8, "checking and saving the ONNX model")
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(onnx_path))


def run_onnx(session, inputs: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    return [
        dict(zip(names, session.run(None, {input_name: x.astype(np.float32)}), strict=True))
        for x in inputs
    ]


def validate_detector(
    saved_model: Path, onnx_path: Path, job: dict[str, Any], emit: Emit
) -> dict[str, Any]:
    """TensorFlow vs ONNX Runtime on real photos: same pixels, and JPEG end to end."""
    import tensorflow as tf

    from accel_widgets.engine.clients.timing import measure_interleaved
    from accel_widgets.engine.conversion.onnx_steps import validation_photos
    from accel_widgets.engine.conversion.validate import file_mb, onnx_session, photo_inputs
    from accel_widgets.preprocess import Preprocessing

    photos = validation_photos(job)
    pre = Preprocessing.from_dict(job["preprocessing"])
    emit("validate", 0.1, f"running TensorFlow and ONNX Runtime on {len(photos)} photos")
    loaded = tf.saved_model.load(str(saved_model))
    pixel_fn = loaded.signatures["predict_pixels"]
    serve_fn = loaded.signatures["serving_default"]
    session = onnx_session(onnx_path)
    inputs = photo_inputs(photos, pre)
    tf_out = [{k: v.numpy() for k, v in pixel_fn(pixels=tf.constant(x)).items()} for x in inputs]
    ort_out = run_onnx(session, inputs)
    emit("validate", 0.5, "comparing with the SavedModel's own JPEG decoding")
    tf_e2e = [
        {k: v.numpy() for k, v in serve_fn(images=tf.constant([p.data])).items()} for p in photos
    ]
    emit("validate", 0.7, "timing ONNX Runtime against TensorFlow, batch 1")
    x = inputs[0]
    constant = tf.constant(x)
    timings = measure_interleaved(
        {
            "onnxruntime": lambda: session.run(None, {ONNX_INPUT: x}),
            "tensorflow": lambda: pixel_fn(pixels=constant),
        },
        runs=int(job.get("timing_runs", 15)),
    )
    report = {
        "task": "detection",
        "precision": "fp32",
        "format": "onnx",
        "opset": OPSET,
        "size_mb": file_mb(onnx_path),
        "photos": [p.name for p in photos],
        "vs_tensorflow": detection_agreement(tf_out, ort_out),
        "vs_tensorflow_jpeg": detection_agreement(tf_e2e, ort_out),
        "latency": timings,
        "latency_ratio_ort_vs_tf": round(
            timings["onnxruntime"]["p50_ms"] / timings["tensorflow"]["p50_ms"], 3
        ),
        "detections_per_photo": [
            int(np.asarray(o["num_detections"]).reshape(-1)[0]) for o in ort_out
        ],
    }
    cmp = report["vs_tensorflow"]
    emit(
        "validate",
        1.0,
        f"max |TF - ONNX| {cmp['max_abs_diff']:.2e} on the raw maps; detections agree "
        f"(IoU >= {MATCH_IOU}, same class) on {cmp['top1_agree_count']}/{cmp['n_images']} "
        f"photos; ONNX Runtime {timings['onnxruntime']['p50_ms']:.1f} ms p50",
    )
    return report


def quantize_detector(
    fp32_path: Path, int8_path: Path, job: dict[str, Any], emit: Emit
) -> dict[str, Any]:
    """INT8 of the conv tower calibrated on real photos, then compared with fp32."""
    from accel_widgets.engine.conversion.onnx_steps import quantize_and_run

    report, fp32_out, int8_out = quantize_and_run(
        fp32_path,
        int8_path,
        job,
        emit,
        what="the conv tower",
        quantization="static QDQ of the conv tower (Conv/Relu/MaxPool), uint8 activations, "
        "uint8 weights, per tensor, MinMax; normalisation, softmax, decoding and NMS float",
        run=run_onnx,
        op_types=QUANTIZED_OPS,
        symbolic_shapes=False,
        per_channel=False,
    )
    report = {"task": "detection", **report}
    report["vs_fp32"] = detection_agreement(fp32_out, int8_out)
    cmp = report["vs_fp32"]
    # No labelled detection photos exist here: what matched proves nothing about accuracy.
    report["gate"] = {
        "recommended": False,
        "reasons": [
            f"detections were only compared with fp32 on {cmp['n_images']} photos (recall "
            f"{cmp['recall']:.2f}, precision {cmp['precision']:.2f}); there are no labelled "
            "detection photos here to measure what INT8 costs"
        ],
        "agreement": cmp["top1_agreement"],
        "accuracy_change_points": None,
        "labelled_photos": 0,
    }
    report["detections_per_photo"] = [
        int(np.asarray(o["num_detections"]).reshape(-1)[0]) for o in int8_out
    ]
    cmp = report["vs_fp32"]
    emit(
        "quantize",
        1.0,
        f"INT8 {report['size_mb']} MB, {report['latency_ratio_int8_vs_fp32']:.2f}x fp32 latency; "
        f"detections vs fp32 (IoU >= {MATCH_IOU}): recall {cmp['recall']:.2f}, precision "
        f"{cmp['precision']:.2f}",
    )
    return report
