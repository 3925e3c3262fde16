"""Charts as PNG bytes, drawn with matplotlib's object API (no pyplot state).

Scoring runs on a background thread; pyplot's global figure manager is not thread-safe and
an ``Output`` widget captures the wrong cell when written from a thread. A ``Figure`` drawn
on the Agg canvas and handed to an ``Image`` widget is neither: it also renders the same in
JupyterLab, in Voila and in a notebook saved with its widget state.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return buffer.getvalue()


def top_k_chart(labels: Sequence[str], scores: Sequence[float], title: str = "") -> bytes:
    """Horizontal bars, best class on top, each bar labelled with its confidence."""
    figure = Figure(figsize=(6, 0.45 * max(1, len(labels)) + 0.8))
    ax = figure.add_subplot()
    positions = list(range(len(labels)))[::-1]
    bars = ax.barh(positions, scores, color="#2f6fb0")
    ax.set_yticks(positions, [str(label) for label in labels])
    ax.set_xlim(0, max(1.0, max(scores, default=0) * 1.15))
    ax.bar_label(bars, labels=[f"{s:.3f}" for s in scores], padding=3)
    ax.set_xlabel("confidence")
    if title:
        ax.set_title(title)
    return _png(figure)


def latency_histogram(latencies_ms: Sequence[float], p50: float, p99: float) -> bytes:
    """The latency distribution with p50 and p99 marked."""
    figure = Figure(figsize=(6, 2.8))
    ax = figure.add_subplot()
    ax.hist(latencies_ms, bins=min(40, max(5, len(latencies_ms) // 5)), color="#2f6fb0")
    ax.axvline(p50, color="black", linestyle="--", label=f"p50 {p50:.1f} ms")
    ax.axvline(p99, color="#b00020", linestyle=":", label=f"p99 {p99:.1f} ms")
    ax.set_xlabel("latency per request (ms)")
    ax.set_ylabel("requests")
    ax.legend()
    return _png(figure)
