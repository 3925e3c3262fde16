"""Validation reports as table rows: one row per artifact, the same columns for every kind.

A catalog model's FP32 artifact is compared with TensorFlow, an INT8 artifact with its FP32
parent, and a model registered as is with nothing: it is run on the real photos (what it
predicts for each is in :func:`photo_predictions`) and timed. Where labelled photos were
found, every row also carries its top-1 / top-5 accuracy with the photo count and a 95 %
interval, beside the speed figures. The last column is the verdict every screen shows
(:func:`accel_widgets.engine.checks.verdicts.artifact_check`). The Convert widget, ``accel-widgets
convert`` and ``list`` read the same columns, so a sentence is never written twice.
"""

from __future__ import annotations

from typing import Any

from accel_widgets.engine.checks.verdicts import artifact_check, uninformative
from accel_widgets.engine.store.workspace import ArtifactRecord

REPORT_COLUMNS = [
    "precision",
    "size (MB)",
    "compared with",
    "max |difference|",
    "top-1 agreement",
    "accuracy on labelled photos",
    "ONNX Runtime p50 here (ms)",
    "reference p50 (ms)",
    "check",
]


def _p50(latency: dict[str, Any], key: str) -> str:
    value = latency.get(key, {}).get("p50_ms")
    return f"{value:.1f}" if isinstance(value, (int, float)) else "-"


def accuracy_cell(report: dict[str, Any]) -> str:
    """``top-1 0.600 [0.557-0.642], top-5 0.824, 500 photos``, or ``-`` without labels."""
    acc = report.get("accuracy")
    if not acc:
        return "-"
    low, high = acc["top1_ci95"]
    return (
        f"top-1 {acc['top1']:.3f} [{low:.3f}-{high:.3f}], top-5 {acc['top5']:.3f}, "
        f"{acc['n']} photos"
    )


def agreement_cell(comparison: dict[str, Any]) -> str:
    """``k/n photos``, flagged when the reference's answers make it prove nothing."""
    text = f"{comparison['top1_agree_count']}/{comparison['n_images']} photos"
    if "reference_top1" in comparison and uninformative(comparison):
        text += " (not informative: the reference gives nearly every photo one class)"
    return text


def report_row(artifact: ArtifactRecord) -> list[str]:
    """The row for one artifact (see :data:`REPORT_COLUMNS`)."""
    report = artifact.report
    latency = report.get("latency", {})
    size = f"{artifact.size_bytes / 2**20:.1f}"
    check = artifact_check(report, artifact.precision)
    verdict = f"{check.symbol} {check.text}".strip()
    if "vs_tensorflow" in report:
        cmp, against, ours, theirs = (
            report["vs_tensorflow"],
            "TensorFlow",
            "onnxruntime",
            "tensorflow",
        )
    elif "vs_fp32" in report:
        against = report.get("compared_with", "FP32 ONNX")
        cmp, ours, theirs = report["vs_fp32"], "int8", "fp32"
    else:
        photos = len(report.get("predictions", []))
        return [
            artifact.precision,
            size,
            "- (registered as is)",
            "-",
            f"- (ran on {photos} photos)" if photos else "-",
            accuracy_cell(report),
            _p50(latency, "onnxruntime"),
            "-",
            verdict,
        ]
    return [
        artifact.precision,
        size,
        against,
        f"{cmp['max_abs_diff']:.2e}",
        agreement_cell(cmp),
        accuracy_cell(report),
        _p50(latency, ours),
        _p50(latency, theirs),
        verdict,
    ]


def photo_predictions(artifact: ArtifactRecord) -> list[tuple[str, int]]:
    """(photo name, top-1 class index) for each real photo a registered-as-is check ran."""
    report = artifact.report
    if "vs_tensorflow" in report or "vs_fp32" in report:
        return []  # a converted artifact's photos were compared, not merely looked at
    return list(zip(report.get("photos", []), report.get("predictions", []), strict=False))
