"""Top-1 / top-5 accuracy on labelled photos, with the 95 % interval the photo count allows.

Every accuracy a user sees comes with its photo count and an interval, because 0.60 on 500
photos and 0.60 on 5 are different claims: the Wilson score interval (it stays inside
[0, 1] and behaves at 0 and n, unlike the normal approximation) says how far the true rate
may lie from the one measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z95 = 1.959964


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95 % Wilson score interval of a rate of ``hits`` out of ``n``."""
    if n <= 0:
        return (0.0, 1.0)
    p = hits / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def top_k(scores: np.ndarray, k: int = 5) -> np.ndarray:
    """Each row's ``k`` best class indices, best first (``scores`` is ``[n, classes]``)."""
    k = min(k, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def accuracy(
    scores: Sequence[np.ndarray] | np.ndarray, labels: Sequence[int], **extra: Any
) -> dict[str, Any]:
    """Top-1 and top-5 accuracy of ``scores`` (one row of class scores per photo).

    Returns a JSON-ready dict: ``top1``, ``top5``, their ``*_ci95`` intervals, ``n``,
    ``top1_hits``, ``top5_hits``, and each photo's ``predicted`` top-1 (the evidence), plus
    ``extra`` (where the photos came from, what was skipped).
    """
    rows = np.concatenate([np.asarray(s, np.float64).reshape(1, -1) for s in scores])
    truth = np.asarray(labels, dtype=np.int64)
    if len(truth) != len(rows):
        raise ValueError(f"{len(rows)} score rows but {len(truth)} labels")
    best = top_k(rows, 5)
    top1 = int((best[:, 0] == truth).sum())
    top5 = int((best == truth[:, None]).any(axis=1).sum())
    n = len(truth)
    return {
        "top1": round(top1 / n, 4),
        "top5": round(top5 / n, 4),
        "top1_ci95": wilson_interval(top1, n),
        "top5_ci95": wilson_interval(top5, n),
        "top1_hits": top1,
        "top5_hits": top5,
        "n": n,
        "predicted": [int(i) for i in best[:, 0]],
        **extra,
    }


def accuracy_text(acc: dict[str, Any]) -> str:
    """``top-1 0.600 [0.556, 0.642], top-5 0.824 on 500 photos``: one line for tables."""
    low, high = acc["top1_ci95"]
    return (
        f"top-1 {acc['top1']:.3f} [{low:.3f}, {high:.3f}], top-5 {acc['top5']:.3f} "
        f"on {acc['n']} labelled photos"
    )
