"""Validation reports as table rows: one row per artifact, the same columns for every kind.

A catalog model's FP32 artifact is compared with TensorFlow, an INT8 artifact with its FP32
parent, and a model registered as is with nothing: it is run on the real photos (what it
predicts for each is in :func:`photo_predictions`) and timed. The Convert widget and anyone
printing a summary read the same columns.
"""

from __future__ import annotations

from typing import Any

from accel_widgets.engine.workspace import ArtifactRecord

REPORT_COLUMNS = [
    "precision",
    "size (MB)",
    "compared with",
    "max |difference|",
    "top-1 agreement",
    "ONNX Runtime p50 here (ms)",
    "reference p50 (ms)",
]


def _p50(latency: dict[str, Any], key: str) -> str:
    value = latency.get(key, {}).get("p50_ms")
    return f"{value:.1f}" if isinstance(value, (int, float)) else "-"


def report_row(artifact: ArtifactRecord) -> list[str]:
    """The row for one artifact (see :data:`REPORT_COLUMNS`)."""
    report = artifact.report
    latency = report.get("latency", {})
    size = f"{artifact.size_bytes / 2**20:.1f}"
    if "vs_tensorflow" in report:
        cmp, against, ours, theirs = (
            report["vs_tensorflow"],
            "TensorFlow",
            "onnxruntime",
            "tensorflow",
        )
    elif "vs_fp32" in report:
        cmp, against, ours, theirs = report["vs_fp32"], "FP32 ONNX", "int8", "fp32"
    else:
        photos = len(report.get("predictions", []))
        return [
            artifact.precision,
            size,
            "- (registered as is)",
            "-",
            f"- (ran on {photos} photos)" if photos else "-",
            _p50(latency, "onnxruntime"),
            "-",
        ]
    return [
        artifact.precision,
        size,
        against,
        f"{cmp['max_abs_diff']:.2e}",
        f"{cmp['top1_agree_count']}/{cmp['n_images']} photos",
        _p50(latency, ours),
        _p50(latency, theirs),
    ]


def photo_predictions(artifact: ArtifactRecord) -> list[tuple[str, int]]:
    """(photo name, top-1 class index) for each real photo a registered-as-is check ran."""
    report = artifact.report
    return list(zip(report.get("photos", []), report.get("predictions", []), strict=False))
