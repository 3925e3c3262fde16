"""Step 6, score: a photo in, the top 5 classes out, and a latency benchmark."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.engine.benchmark import BenchmarkResult, benchmark_service
from accel_widgets.engine.client import client_from_service
from accel_widgets.engine.samples import sample_photos
from accel_widgets.engine.scoring import ScoreResult, score, service_labels
from accel_widgets.engine.workspace import Workspace
from accel_widgets.errors import AccelError, ImageError, ScoringError
from accel_widgets.widgets.base import ProgressPanel, Step, button, html_table, image
from accel_widgets.widgets.charts import latency_histogram, top_k_chart

_UPLOADED = "__uploaded__"


class ScoreWidget(Step):
    """Score an uploaded picture or a bundled sample photo with the deployed service.

    ``result`` holds the last :class:`ScoreResult` (top 5 and latency); ``benchmark`` the
    last :class:`BenchmarkResult`.
    """

    css_name = "score"
    service = traitlets.Any(None, allow_none=True, help="ServiceRecord from the Deploy step")
    result = traitlets.Any(None, allow_none=True)
    benchmark = traitlets.Any(None, allow_none=True)

    def __init__(self, workspace: Workspace | None = None, **kwargs: Any) -> None:
        self.workspace = workspace
        self._photos = {p.name: p.data for p in sample_photos()}
        self._uploaded: tuple[str, bytes] | None = None
        self._client = None
        self._labels: list[str] | None = None
        self.sample = widgets.Dropdown(
            options=[(name, name) for name in self._photos], value="chelsea", description="photo"
        )
        self.sample.add_class("accel-sample")
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.upload.add_class("accel-upload")
        self.score_button = button("Score", "score", "primary", "play")
        self.picture = image("picture", max_width="300px")
        self.top5 = widgets.HTML()
        self.top5.add_class("accel-top5")
        self.chart = image("top5-chart")
        self.latency = widgets.HTML()
        self.latency.add_class("accel-score-latency")
        self.requests = widgets.BoundedIntText(
            value=100, min=1, max=100_000, description="requests"
        )
        self.concurrency = widgets.BoundedIntText(value=1, min=1, max=64, description="clients")
        self.benchmark_button = button("Benchmark", "benchmark", "", "tachometer")
        self.progress = ProgressPanel()
        self.histogram = image("histogram")
        self.stats = widgets.HTML()
        self.stats.add_class("accel-benchmark-stats")
        super().__init__(
            [
                widgets.HBox([self.sample, self.upload, self.score_button]),
                widgets.HBox([self.picture, widgets.VBox([self.top5, self.latency])]),
                self.chart,
                widgets.HBox([self.requests, self.concurrency, self.benchmark_button]),
                self.progress,
                self.stats,
                self.histogram,
            ],
            **kwargs,
        )
        self.title = "6. Score"
        self.upload.observe(self._on_upload, "value")
        self.score_button.on_click(lambda _: self._start(self.run))
        self.benchmark_button.on_click(lambda _: self._start(self.run_benchmark))

    @traitlets.observe("service")
    def _on_service(self, change: Any) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._labels = None
        self.done = False

    def _set_enabled(self, enabled: bool) -> None:
        for control in (
            self.sample,
            self.upload,
            self.score_button,
            self.requests,
            self.concurrency,
            self.benchmark_button,
        ):
            control.disabled = not enabled

    def _on_upload(self, change: Any) -> None:
        files = change["new"]
        if not files:
            return
        first = files[0]
        self._uploaded = (first["name"], bytes(first["content"]))
        options = [(name, name) for name in self._photos]
        self.sample.options = [*options, (f"uploaded: {first['name']}", _UPLOADED)]
        self.sample.value = _UPLOADED

    def use_image(self, data: bytes, name: str = "your picture") -> None:
        """Score this picture next (what an upload does, for code and tests)."""
        self._on_upload({"new": [{"name": name, "content": data}]})

    def _image(self) -> tuple[str, bytes]:
        if self.sample.value == _UPLOADED and self._uploaded is not None:
            return self._uploaded
        return self.sample.value, self._photos[self.sample.value]

    def _connect(self):
        if self.service is None:
            raise AccelError("deploy a service in the step above first")
        if self._client is None:
            self._labels = service_labels(self.service, self.workspace)
            self._client = client_from_service(self.service)
        return self._client

    def run(self) -> ScoreResult | None:
        """Score the chosen picture (synchronously)."""
        return self._guarded(self._score)

    def _score(self) -> ScoreResult:
        client = self._connect()
        name, data = self._image()
        self.picture.format = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
        self.picture.value = data
        self.status = f"scoring {name}..."
        try:
            result = score(client, data, self._labels, k=5)
        except (ImageError, ScoringError) as exc:
            self.status = ""
            raise AccelError(f"{name} could not be scored: {exc}") from exc
        rows = [[label, f"{value:.3f}"] for _, label, value in result.top]
        self.top5.value = html_table(["class", "confidence"], rows, row_css="accel-top5-row")
        self.chart.value = top_k_chart(
            [label for _, label, _ in result.top], [value for _, _, value in result.top], name
        )
        self.latency.value = html.escape(
            f"{result.latency_ms:.1f} ms for the whole request (upload, decode, model, reply)"
        )
        self.result = result
        self.status = f"{name}: {result.top[0][1]}"
        self.done = True
        return result

    def run_benchmark(self) -> BenchmarkResult | None:
        """Send N requests (synchronously) and draw the latency histogram."""
        return self._guarded(self._benchmark)

    def _benchmark(self) -> BenchmarkResult:
        if self.service is None:
            raise AccelError("deploy a service in the step above first")
        _, data = self._image()
        self.progress.reset()
        try:
            result = benchmark_service(
                self.service,
                data,
                requests=self.requests.value,
                concurrency=self.concurrency.value,
                progress=self.progress,
                cancel=self._new_cancel(),
            )
        except BaseException:
            self.progress.finish(False)
            raise
        self.progress.finish(True)
        self.stats.value = html.escape(result.summary())
        self.histogram.value = latency_histogram(result.latencies_ms, result.p50_ms, result.p99_ms)
        self.benchmark = result
        return result
