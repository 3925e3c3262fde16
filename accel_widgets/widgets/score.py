"""Step 6, score: a photo in, the top 5 classes out, and a latency benchmark."""

from __future__ import annotations

import ast
import html
import re
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.engine.benchmark import BenchmarkResult, benchmark_service
from accel_widgets.engine.client import client_from_service
from accel_widgets.engine.samples import sample_photos
from accel_widgets.engine.scoring import ScoreResult, score, service_labels
from accel_widgets.engine.ssd_decode import DETECTION_OUTPUTS
from accel_widgets.engine.targets import service_live
from accel_widgets.engine.workspace import Workspace
from accel_widgets.errors import AccelError, ImageError, ScoringError
from accel_widgets.widgets.base import ProgressPanel, Step, button, image, photo_name
from accel_widgets.widgets.charts import latency_histogram, show_chart
from accel_widgets.widgets.detections import is_detector_service, show_detections

_UPLOADED = "__uploaded__"

# ipywidgets' FileUpload labels itself "<description> (<count>)"; the count of a single-file
# picker reads as noise ("Upload (0)"), so the label is drawn by CSS and the count hidden.
_UPLOAD_STYLE = """<style>
.accel-upload.jupyter-button { font-size: 0 !important; width: auto; }
.accel-upload.jupyter-button > i { font-size: var(--jp-widgets-font-size, 13px); }
.accel-upload.jupyter-button::after {
  content: "Upload your own photo"; font-size: var(--jp-widgets-font-size, 13px);
  margin-left: 4px;
}
</style>"""


_FIRST_BYTES = re.compile(r"first bytes (b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\")")


def image_error_words(message: str) -> str:
    """The decoder's "first bytes b'this is not an i'" (a Python bytes literal, the
    protocol's pinned wording) as a reader says it: the text the file starts with, or its
    first bytes in hex when they are not text."""

    def words(match: re.Match[str]) -> str:
        try:
            start = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            return match.group(0)
        text = start.decode("ascii", "replace")
        if start and all(32 <= b < 127 or b in (9, 10, 13) for b in start):
            return f'it starts with the text "{" ".join(text.split())}..."'
        return "it starts with the bytes " + " ".join(f"{b:02x}" for b in start[:8])

    # "[INVALID_ARGUMENT]" is gRPC's name for "the picture is at fault": the words say it.
    message = re.sub(r"^\[INVALID_ARGUMENT\]\s*", "", message)
    return _FIRST_BYTES.sub(words, message)


def top5_table(top: list[tuple[int, str, float]], photo: str) -> str:
    """The top classes once: a table whose confidence cells carry a bar (no second chart).

    The rows keep the ``accel-top5-row`` class and plain-text cells: class, confidence.
    """
    rows = "".join(
        "<tr class='accel-top5-row'>"
        f"<td style='padding:1px 8px'>{html.escape(label)}</td>"
        "<td style='padding:1px 8px'><div style='display:flex;align-items:center;gap:6px'>"
        f"<span style='min-width:3.2em;text-align:right'>{value:.3f}</span>"
        "<span class='accel-top5-bar' style='display:inline-block;height:0.8em;"
        f"width:{max(0.0, min(1.0, value)) * 12:.2f}em;background:#2f6fb0'></span>"
        "</div></td></tr>"
        for _, label, value in top
    )
    return (
        "<table class='accel-top5-rows'>"
        f"<caption style='text-align:left;padding:0 8px 2px'>Top {len(top)} for "
        f"<b>{html.escape(photo)}</b></caption>"
        "<thead><tr><th style='text-align:left;padding:1px 8px'>class</th>"
        "<th style='text-align:left;padding:1px 8px'>confidence</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


class ScoreWidget(Step):
    """Score an uploaded picture or a bundled sample photo with the deployed service.

    ``result`` holds the last :class:`ScoreResult` (top 5 and latency); ``benchmark`` the
    last :class:`BenchmarkResult`. A failed score or benchmark clears what the step showed
    before: the error, at the top of the step, takes the old result's place.
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
            options=self._photo_options(), value="chelsea", description="photo"
        )
        self.sample.add_class("accel-sample")
        self.upload = widgets.FileUpload(
            accept="image/*", multiple=False, description="Upload your own photo"
        )
        self.upload.add_class("accel-upload")
        self.upload.tooltip = "Score a JPEG or PNG of your own"
        self.score_button = button("Score", "score", "primary", "play")
        self.picture = image("picture", max_width="300px", max_height="220px")
        self.picture.layout.object_fit = "contain"
        self.top5 = widgets.HTML()
        self.top5.add_class("accel-top5")
        self.latency = widgets.HTML()
        self.latency.add_class("accel-score-latency")
        self.requests = widgets.BoundedIntText(
            value=100, min=1, max=100_000, description="requests"
        )
        self.concurrency = widgets.BoundedIntText(value=1, min=1, max=64, description="clients")
        self.benchmark_button = button("Benchmark", "benchmark", "", "tachometer")
        self.progress = ProgressPanel()
        self.histogram = image("histogram", "svg+xml")
        self.stats = widgets.HTML()
        self.stats.add_class("accel-benchmark-stats")
        super().__init__(
            [
                widgets.HTML(_UPLOAD_STYLE),
                widgets.HBox([self.sample, self.upload, self.score_button]),
                widgets.HBox([self.picture, widgets.VBox([self.top5, self.latency])]),
                widgets.HBox([self.requests, self.concurrency, self.benchmark_button]),
                self.progress,
                self.stats,
                self.histogram,
            ],
            **kwargs,
        )
        self.title = "6. Score"
        self.upload.observe(self._on_upload, "value")
        self.sample.observe(self._on_photo, "value")
        self.score_button.on_click(lambda _: self._start(self.run))
        self.benchmark_button.on_click(lambda _: self._start(self.run_benchmark))

    @traitlets.observe("service")
    def _on_service(self, change: Any) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._labels = None
        self.done = False
        self.clear_result()  # a score of another service is not this one's
        gone = change["old"] is not None and change["new"] is None
        self.status = "deploy a service in the step above first" if gone else ""

    def _not_running(self, exc: AccelError) -> AccelError | None:
        """When the service stopped answering because it is gone or dead, say so in words
        (not gRPC's "[UNAVAILABLE] failed to connect..." nor a count of failed requests);
        None when it still runs."""
        unavailable = not isinstance(exc, ScoringError) or exc.code == "UNAVAILABLE"
        if not unavailable or self.service is None:
            return None
        name = self.service.name
        if self.state is not None:
            live = self.state.refresh().service_live(name)
        else:
            live = service_live(name, self.workspace)
        if live in ("running", "starting", "unknown"):
            return None
        return AccelError(
            f"the service {name} is not running any more; deploy it again in the step above"
        )

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
        self.sample.options = [*self._photo_options(), (f"yours: {first['name']}", _UPLOADED)]
        self.sample.value = _UPLOADED
        self._on_photo({"old": None, "new": _UPLOADED})  # a second upload keeps the value

    def _on_photo(self, change: Any) -> None:
        """Another photo chosen (or uploaded): the last one's top 5 must not read as its own."""
        if self.busy or (change["old"] == change["new"] and change["new"] != _UPLOADED):
            return
        if self.result is not None or self.error:
            self.clear_result()
            self.error = ""
        if self.service is not None and not self.locked:
            self.status = f"{self._image()[0]}: click Score"

    def _photo_options(self) -> list[tuple[str, str]]:
        return [(photo_name(name), name) for name in self._photos]

    def clear_result(self) -> None:
        """Take the last score (and the benchmark of its photo) off the screen."""
        self.picture.value = b""
        self.top5.value = ""
        self.latency.value = ""
        self.result = None
        self.clear_benchmark()

    def clear_benchmark(self) -> None:
        self.progress.reset()
        self.stats.value = ""
        self.histogram.value = b""
        self.benchmark = None

    def use_photos(self, photos: dict[str, bytes]) -> None:
        """Offer these pictures instead of the bundled photos: a model of the user's own
        classes (digits) is scored on its own kind of picture, not on a cat or an espresso."""
        self._photos = dict(photos)
        self._uploaded = None
        options = self._photo_options()
        self.sample.options = options
        self.sample.value = options[0][1] if options else None

    def use_image(self, data: bytes, name: str = "your picture") -> None:
        """Score this picture next (what an upload does, for code and tests)."""
        self._on_upload({"new": [{"name": name, "content": data}]})

    def _image(self) -> tuple[str, bytes]:
        """(what to call it, its bytes) for the chosen photo."""
        if self.sample.value == _UPLOADED and self._uploaded is not None:
            return self._uploaded
        if self.sample.value not in self._photos:
            raise AccelError("choose a photo, or upload one of your own")
        return photo_name(self.sample.value), self._photos[self.sample.value]

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
        # A new score replaces the old one: nothing of the last photo stays on screen, so a
        # failure can never be read as this photo's result.
        self.clear_result()
        self.status = ""
        client = self._connect()
        name, data = self._image()
        self.status = f"scoring {name}..."
        try:
            if is_detector_service(self.service, self.workspace):  # boxes drawn on the photo
                return show_detections(self, client, data, name)
            result = score(client, data, self._labels, k=5)
        except ScoringError as exc:
            self.status = f"{name}: not scored"
            gone = self._not_running(exc)
            if gone is not None:
                raise gone from exc
            raise AccelError(f"{name} could not be scored: {image_error_words(str(exc))}") from exc
        except ImageError as exc:
            self.status = f"{name}: not scored"
            raise AccelError(f"{name} could not be scored: {image_error_words(str(exc))}") from exc
        except BaseException:
            self.status = f"{name}: not scored"
            raise
        self.picture.format = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
        self.picture.value = data
        self.top5.value = top5_table(result.top, name)
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
        self.clear_benchmark()
        _, data = self._image()
        try:
            detector = is_detector_service(self.service, self.workspace)
            result = benchmark_service(
                self.service,
                data,
                requests=self.requests.value,
                concurrency=self.concurrency.value,
                outputs=list(DETECTION_OUTPUTS) if detector else None,
                progress=self.progress,
                cancel=self._new_cancel(),
            )
        except AccelError as exc:  # a refused first call, or no request answered
            self.progress.finish(False)
            gone = self._not_running(exc)
            if gone is not None:
                raise gone from exc
            raise
        except BaseException:
            self.progress.finish(False)
            raise
        self.progress.finish(True)
        self.stats.value = html.escape(result.summary())
        show_chart(
            self.histogram, latency_histogram(result.latencies_ms, result.p50_ms, result.p99_ms)
        )
        self.benchmark = result
        return result
