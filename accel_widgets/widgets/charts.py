"""Charts as SVG bytes of a fixed size, drawn with matplotlib's object API (no pyplot state).

Scoring runs on a background thread; pyplot's global figure manager is not thread-safe and
an ``Output`` widget captures the wrong cell when written from a thread. A ``Figure`` drawn
on the SVG canvas and handed to an ``Image`` widget (format ``svg+xml``) is neither: it
renders the same in JupyterLab, in Voila and in a notebook saved with its widget state.

Why SVG and a fixed size: a PNG in an ``Image`` widget was stretched to the cell's width (a
565 px PNG shown 964 px wide in JupyterLab, 1366 px in Voila: blurry and taller than a laptop
screen). An SVG is sharp at any device pixel ratio, and :func:`show_chart` fixes the widget's
layout to the chart's own size in CSS pixels, so it is shown exactly as drawn.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

#: CSS pixels per inch: a figure of 6 x 2.5 inches is shown 576 x 240 px.
CSS_DPI = 96
_SIZE = re.compile(rb'<svg([^>]*?) width="([\d.]+)pt" height="([\d.]+)pt"')


def _svg(figure: Figure) -> bytes:
    """The figure as an SVG whose width and height are in CSS pixels (its natural size)."""
    FigureCanvasSVG(figure)
    buffer = io.BytesIO()
    # Text as <text> (the browser's font rasteriser, sharp at any device pixel ratio and
    # selectable), not as outline paths.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    width, height = (round(v * CSS_DPI) for v in figure.get_size_inches())
    # matplotlib writes the size in pt (1/72 in); the viewBox keeps the drawing in pt, so
    # the browser scales it uniformly by 96/72 and fonts keep their point sizes.
    return _SIZE.sub(
        lambda m: b'<svg%s width="%dpx" height="%dpx"' % (m.group(1), width, height),
        buffer.getvalue(),
        count=1,
    )


def svg_size(svg: bytes) -> tuple[int, int]:
    """The natural (width, height) in CSS pixels of an SVG made here."""
    match = re.search(rb'<svg[^>]*? width="(\d+)px" height="(\d+)px"', svg)
    if match is None:
        raise ValueError("not an SVG drawn by accel_widgets.widgets.charts")
    return int(match.group(1)), int(match.group(2))


def show_chart(picture: Any, svg: bytes) -> None:
    """Put ``svg`` in an ``Image`` widget at its natural size (never stretched to the cell)."""
    width, height = svg_size(svg)
    picture.format = "svg+xml"
    picture.layout.width = f"{width}px"
    picture.layout.height = f"{height}px"
    picture.layout.max_width = "100%"  # a narrower screen may shrink it, never stretch it
    picture.layout.object_fit = "contain"
    picture.value = svg


def top_k_chart(labels: Sequence[str], scores: Sequence[float], title: str = "") -> bytes:
    """Horizontal bars, best class on top, each bar labelled with its confidence (SVG).

    The walk shows its top 5 as a table with inline bars; this chart is for reports and
    for code that wants a picture.
    """
    figure = Figure(figsize=(5.5, 0.32 * max(1, len(labels)) + 0.7), layout="constrained")
    ax = figure.add_subplot()
    positions = list(range(len(labels)))[::-1]
    bars = ax.barh(positions, scores, color="#2f6fb0")
    ax.set_yticks(positions, [str(label) for label in labels])
    ax.set_xlim(0, max(1.0, max(scores, default=0) * 1.15))
    ax.bar_label(bars, labels=[f"{s:.3f}" for s in scores], padding=3, fontsize=9)
    ax.set_xlabel("confidence", fontsize=9)
    ax.tick_params(labelsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    return _svg(figure)


def latency_histogram(latencies_ms: Sequence[float], p50: float, p99: float) -> bytes:
    """The latency distribution with p50 and p99 marked and labelled (SVG, 576 x 240 px)."""
    return _svg(histogram_figure(latencies_ms, p50, p99))


def histogram_figure(latencies_ms: Sequence[float], p50: float, p99: float) -> Figure:
    """The figure :func:`latency_histogram` draws (tests measure where its legend sits)."""
    figure = Figure(figsize=(6, 2.5), layout="constrained")
    ax = figure.add_subplot()
    ax.hist(latencies_ms, bins=min(40, max(5, len(latencies_ms) // 5)), color="#8fb3d9")
    ax.axvline(p50, color="black", linestyle="--", linewidth=1.5, label=f"p50 {p50:.1f} ms")
    ax.axvline(p99, color="#b00020", linestyle=":", linewidth=2, label=f"p99 {p99:.1f} ms")
    ax.set_xlabel("latency per request (ms)", fontsize=9)
    ax.set_ylabel("requests", fontsize=9)
    ax.tick_params(labelsize=9)
    # Above the plot, not in it: a p99 far to the right ran through legend text drawn inside.
    figure.legend(fontsize=9, loc="outside upper right", ncols=2, frameon=False)
    return figure
