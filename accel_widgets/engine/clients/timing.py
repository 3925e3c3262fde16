"""Latency measurement that survives a shared 2-core machine.

ONNX Runtime's worker threads spin for a while after each run, so two sessions timed back to
back slow each other down (docs/FINDINGS.md). Comparisons therefore interleave the candidates
round by round with a short idle gap, and report percentiles rather than means.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "mean_ms": round(float(values.mean()), 3),
        "n": len(samples_ms),
    }


def measure_interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    runs: int = 20,
    warmup: int = 3,
    gap_s: float = 0.02,
) -> dict[str, dict[str, float]]:
    """Time each zero-argument callable ``runs`` times, interleaved, with an idle gap between.

    Returns
    -------
    dict
        name -> ``{"p50_ms", "p99_ms", "mean_ms", "n"}``.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(runs):
        for name, fn in candidates.items():
            time.sleep(gap_s)
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: percentiles(values) for name, values in samples.items()}
