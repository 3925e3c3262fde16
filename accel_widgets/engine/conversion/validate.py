"""Proof that a converted model computes what the original computes.

Every artifact carries a report built from these helpers: the largest absolute difference
between the reference's and the candidate's outputs on real photos, how often their top-1
class agrees, and latency measured side by side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accel_widgets.errors import ConversionError
from accel_widgets.preprocess import Preprocessing, prepare


def onnx_session(path: str | os.PathLike[str], threads: int | None = None):
    """An ONNX Runtime CPU session, or a :class:`ConversionError` that says what is wrong."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises several private exception types
        raise ConversionError(
            f"ONNX Runtime cannot load {path}: {str(exc).strip()[:400]}. The file is corrupt or "
            "not an ONNX model; convert the model again or check the file you registered."
        ) from exc


def photo_inputs(photos: Sequence[Any], pre: Preprocessing) -> list[np.ndarray]:
    """Each photo's bytes through the server's own preprocessing: ``[1, ...]`` arrays."""
    return [prepare(photo.data, pre) for photo in photos]


def compare(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, Any]:
    """Differences between two models' outputs on the same inputs.

    ``max_rel_diff`` divides by the largest reference value, so a near-uniform softmax
    (random weights) does not hide a real error behind tiny absolute numbers.
    ``reference_top1`` and ``candidate_top1`` hold each image's top-1 class on either side,
    so a stored report carries the evidence for its own agreement count.
    """
    if len(reference) == 0 or len(candidate) == 0:
        raise ConversionError(
            f"no outputs to compare ({len(reference)} reference, {len(candidate)} candidate); "
            "validation needs at least one photo"
        )
    ref = np.concatenate([np.asarray(r, np.float64).reshape(1, -1) for r in reference])
    cand = np.concatenate([np.asarray(c, np.float64).reshape(1, -1) for c in candidate])
    if ref.shape != cand.shape:
        raise ConversionError(f"output shapes differ: {ref.shape} vs {cand.shape}")
    diff = np.abs(ref - cand)
    ref_top1, cand_top1 = ref.argmax(axis=1), cand.argmax(axis=1)
    agree = int((ref_top1 == cand_top1).sum())
    top5 = [
        len(set(np.argsort(-r)[:5]) & set(np.argsort(-c)[:5])) / 5.0
        for r, c in zip(ref, cand, strict=True)
    ]
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_rel_diff": float(diff.max() / max(np.abs(ref).max(), 1e-12)),
        "top1_agreement": agree / len(ref),
        "top1_agree_count": agree,
        "top5_overlap": float(np.mean(top5)),
        "n_images": len(ref),
        "reference_top1": [int(i) for i in ref_top1],
        "candidate_top1": [int(i) for i in cand_top1],
    }


def file_mb(path: str | os.PathLike[str]) -> float:
    return round(Path(path).stat().st_size / 2**20, 2)
