"""Train your own classes: pick a folder (or a bundled set), see it, train live, see the result.

:class:`TrainWidget` is the step; :class:`TrainWalk` chains it with the main walk's Convert
step fed the trained model (:class:`ConvertTrainedWidget`, a
:class:`~accel_widgets.widgets.convert.ConvertStep`) and its Deploy, Score and Clean up
steps, so the new model ends as a service answering with the user's class names. The walk is
a :class:`~accel_widgets.widgets.chain.StepChain` like the main walk: the same links, locks,
poll while on screen and Run All; a model deleted elsewhere reopens Train (Convert cannot
bring it back). This is the second notebook (``notebooks/train-your-own.ipynb``).

Like the main walk, the step never starts on weights it cannot have: when ImageNet weights
for the featurizer are neither in the Keras cache nor downloadable (offline), it opens on
random weights and says why, in the words of its own controls; choosing ImageNet anyway is
refused at once with the same words, instead of after a download's time-out.

The training curve is redrawn after every epoch from the engine's ``on_epoch`` callback on
the training thread; like the other charts it is an SVG in an ``Image`` widget (see
:mod:`~accel_widgets.widgets.charts` for why not pyplot or an ``Output`` widget).
"""

from __future__ import annotations

import base64
import html
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import traitlets
from matplotlib.figure import Figure

from accel_widgets.engine.models.build import keras_cache_dir
from accel_widgets.engine.models.catalog import get_spec, list_specs
from accel_widgets.engine.store.workspace import ArtifactRecord, ModelRecord, Workspace
from accel_widgets.engine.training.train import DEFAULT_FEATURIZER, TrainResult, train_classifier
from accel_widgets.engine.training.train_data import sample_counts, sample_examples, scan_folder
from accel_widgets.engine.walk.choices import imagenet_weights_available
from accel_widgets.errors import AccelError
from accel_widgets.progress import CancelToken
from accel_widgets.widgets.base import ProgressPanel, Step, button, html_table, image
from accel_widgets.widgets.chain import StepChain
from accel_widgets.widgets.charts import figure_svg, show_chart
from accel_widgets.widgets.convert import ConvertStep
from accel_widgets.widgets.deploy import DeployWidget
from accel_widgets.widgets.score import ScoreWidget

SOURCES = [
    ("hand-written digits (scikit-learn, bundled)", "digits"),
    ("faces or not (scikit-image LFW subset, bundled)", "lfw"),
    ("my folder (one sub-folder per class)", "folder"),
]


WEIGHTS_OPTIONS = [("ImageNet (download once)", "imagenet"), ("random (offline)", "random")]
WEIGHTS_WORDS = {value: words for words, value in WEIGHTS_OPTIONS}


def _imagenet_missing(featurizer: str) -> str:
    return (
        f"ImageNet weights for {get_spec(featurizer).title} cannot be had here (offline, and "
        "not in the Keras cache)"
    )


def curve_chart(curve: list[dict[str, Any]]) -> bytes:
    """Loss and accuracy per epoch, training and validation (SVG, 576 x 216 px)."""
    figure = Figure(figsize=(6, 2.25), layout="constrained")
    loss_ax, acc_ax = figure.subplots(1, 2)
    epochs = [p["epoch"] for p in curve]
    for ax, key, title in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy")):
        ax.plot(epochs, [p[key] for p in curve], marker=".", label="training")
        if curve and curve[0].get(f"val_{key}") is not None:
            ax.plot(epochs, [p[f"val_{key}"] for p in curve], marker=".", label="validation")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=8)
    acc_ax.set_ylim(0, 1.02)
    acc_ax.legend(fontsize=8, loc="lower right", frameon=False)
    return figure_svg(figure)


def confusion_chart(classes: list[str], matrix: list[list[int]]) -> bytes:
    """The held-out confusion matrix with its counts written in (SVG)."""
    n = len(classes)
    side = min(6.0, 1.6 + 0.38 * n)
    figure = Figure(figsize=(side, side * 0.85), layout="constrained")
    ax = figure.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, fontsize=8, rotation=45 if n > 6 else 0)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true class", fontsize=9)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                color = "white" if count > peak / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
    return figure_svg(figure)


def _thumbnail(data: bytes) -> str:
    """An <img> of a picture's own bytes (PNG or JPEG), shown 48 px high, crisp when tiny."""
    kind = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
    source = f"data:image/{kind};base64,{base64.b64encode(data).decode()}"
    return (
        f"<img class='accel-class-example' src='{source}' alt='' "
        "style='height:48px;margin-right:4px;image-rendering:pixelated;vertical-align:middle'>"
    )


def classes_table(counts: dict[str, int], examples: dict[str, list[bytes]]) -> str:
    """Each class, its count and a few of its pictures: what "Look at the data" shows."""
    rows = "".join(
        "<tr class='accel-class-row'>"
        f"<td style='padding:2px 8px'>{html.escape(name)}</td>"
        f"<td style='padding:2px 8px;text-align:right'>{count}</td>"
        f"<td style='padding:2px 8px'>{''.join(_thumbnail(d) for d in examples.get(name, []))}"
        "</td></tr>"
        for name, count in counts.items()
    )
    head = "".join(
        f"<th style='text-align:left;padding:2px 8px'>{h}</th>" for h in ("class", "images", "")
    )
    return (
        f"<table class='accel-class-rows'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>"
        "</table>"
    )


class TrainWidget(Step):
    """Choose data and featurizer, look at the classes, train with a live curve and Cancel.

    ``model`` is the registered trained model (read by the Convert step of
    :class:`TrainWalk`), ``result`` the :class:`~accel_widgets.engine.training.train.TrainResult`.
    """

    css_name = "train"
    lock_words = "Finish the step above first."
    model = traitlets.Any(None, allow_none=True, help="the trained ModelRecord")
    result = traitlets.Any(None, allow_none=True, help="the last TrainResult")
    epochs_seen = traitlets.Int(0, help="epochs reported by the running training")

    def __init__(
        self,
        workspace: Workspace | None = None,
        *,
        source: str = "digits",
        folder: str = "",
        name: str = "my-classes",
        featurizer: str = DEFAULT_FEATURIZER,
        weights: str = "imagenet",
        size: int | None = None,
        per_class: int | None = None,
        epochs: int = 60,
        **kwargs: Any,
    ) -> None:
        self.workspace = workspace
        self.per_class = per_class
        self.source = widgets.Dropdown(options=SOURCES, value=source, description="images")
        self.source.layout.width = "30em"  # the longest choice whole, not "(scikit-learn,"
        self.source.add_class("accel-train-source")
        self.folder = widgets.Text(
            value=str(folder), description="folder", placeholder="path/to/photos"
        )
        self.folder.add_class("accel-train-folder")
        self.model_name = widgets.Text(value=name, description="name")
        self.model_name.add_class("accel-train-name")
        featurizers = [s.name for s in list_specs(False) if s.task == "classification"]
        featurizers = [f for f in featurizers if f != "ssd_vgg"]
        self.featurizer = widgets.Dropdown(
            options=featurizers, value=featurizer, description="featurizer"
        )
        self.weights = widgets.Dropdown(
            options=WEIGHTS_OPTIONS, value=weights, description="weights"
        )
        self.weights_note = widgets.HTML()
        self.weights_note.add_class("accel-train-weights-note")
        self.size = widgets.Dropdown(
            options=[("catalog (224 px)", 0), ("96 px", 96), ("64 px", 64), ("32 px", 32)],
            value=size or 0,
            description="input",
        )
        self.epochs = widgets.BoundedIntText(value=epochs, min=1, max=1000, description="epochs")
        self.augment = widgets.Checkbox(value=False, description="also train on mirror images")
        self.look_button = button("Look at the data", "train-look", "", "search")
        self.train_button = button("Train", "train", "primary", "graduation-cap")
        self.cancel_button = button("Cancel", "train-cancel", "warning", "stop")
        self.cancel_button.disabled = True
        self.classes_table = widgets.HTML()
        self.classes_table.add_class("accel-train-classes")
        self.progress = ProgressPanel()
        self.curve = image("train-curve", "svg+xml")
        self.summary = widgets.HTML()
        self.summary.add_class("accel-train-summary")
        self.per_class_table = widgets.HTML()
        self.per_class_table.add_class("accel-train-per-class")
        self.confusion = image("train-confusion", "svg+xml")
        self._curve: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        super().__init__(
            [
                widgets.HBox([self.source, self.folder]),
                widgets.HBox([self.model_name, self.featurizer, self.weights]),
                self.weights_note,
                widgets.HBox([self.size, self.epochs, self.augment]),
                widgets.HBox([self.look_button, self.train_button, self.cancel_button]),
                self.classes_table,
                self.progress,
                self.curve,
                self.summary,
                widgets.HBox([self.per_class_table, self.confusion]),
            ],
            **kwargs,
        )
        self.title = "1. Train"
        if weights == "imagenet" and not imagenet_weights_available(featurizer):
            self.weights.value = "random"
            self.weights_note.value = (
                f"<i>{_imagenet_missing(featurizer)}, so the weights are set to "
                f"<b>{WEIGHTS_WORDS['random']}</b>: a fixed random feature map, enough for "
                "simple pictures such as the digits, far from enough for photos. Choose "
                f"<b>{WEIGHTS_WORDS['imagenet']}</b> when this machine is online.</i>"
            )
        self.weights.observe(lambda _: self._forget_note(), "value")
        self.source.observe(lambda _: self._show_folder(), "value")
        self._show_folder()
        self.look_button.on_click(lambda _: self._start(self.look))
        self.train_button.on_click(lambda _: self._start(self.run))
        self.cancel_button.on_click(lambda _: self._on_cancel())

    def _forget_note(self) -> None:
        """The note explains the weights the step chose; a choice of the user's ends it."""
        self.weights_note.value = ""

    def _check_weights(self) -> None:
        """Refuse ImageNet weights that cannot be had, in the words of this step's controls
        (the engine's error names Python arguments, and comes after a download time-out)."""
        featurizer = self.featurizer.value
        if self.weights.value == "imagenet" and not imagenet_weights_available(featurizer):
            file = get_spec(featurizer).keras_weights_file
            raise AccelError(
                f"{_imagenet_missing(featurizer)}. Choose {WEIGHTS_WORDS['random']!r} in the "
                f"weights list, or copy {file} into {keras_cache_dir()} from a machine that "
                "has it (it is Keras' standard download) and train again."
            )

    def _show_folder(self) -> None:
        self.folder.layout.display = "" if self.source.value == "folder" else "none"

    def _set_enabled(self, enabled: bool) -> None:
        for control in (self.look_button, self.train_button, self.source, self.folder):
            control.disabled = not enabled
        self.cancel_button.disabled = not self.busy
        self.cancel_button.description = "Cancel"

    def _on_cancel(self) -> None:
        self.cancel()
        if self.busy:
            self.cancel_button.disabled = True
            self.cancel_button.description = "Cancelling..."

    def _sync(self) -> None:
        """Reopen when the trained model is deleted elsewhere (clean-up, the sidebar, the
        CLI): what was trained is gone, so the held-out report goes with it and Convert,
        which cannot bring it back, locks until the model is trained again."""
        if self.busy or self.state is None or self.model is None:
            return
        if not self.state.has_model(self.model):
            ref = self.model.ref
            self.model = None
            self.result = None
            self.summary.value = ""
            self.per_class_table.value = ""
            self.confusion.value = b""
            self.done = False
            self.status = f"model {ref} was deleted; train it again"

    def _data(self) -> dict[str, Any]:
        """The engine's data arguments for the chosen source, checked in the widget's words."""
        if self.source.value != "folder":
            return {"sample": self.source.value, "sample_per_class": self.per_class}
        folder = self.folder.value.strip()
        if not folder:
            raise AccelError("type the path of a folder with one sub-folder per class")
        return {"data": folder}

    def look(self) -> dict[str, int] | None:
        """Show the classes and how many images each has (bundled sets: what will be written)."""
        return self._guarded(self._look)

    def _look(self) -> dict[str, int]:
        data = self._data()
        if "data" in data:
            folder = scan_folder(data["data"])
            counts = folder.counts
            examples = {
                name: [p.read_bytes() for p in folder.files if p.parent.name == name][:4]
                for name in folder.classes
            }
        else:
            counts = sample_counts(data["sample"], self.per_class)
            examples = sample_examples(data["sample"])
        self.classes_table.value = classes_table(counts, examples)
        self.status = f"{len(counts)} classes, {sum(counts.values())} images"
        return counts

    def run(self) -> TrainResult | None:
        """Train (synchronously); the curve, the held-out report and ``model`` show the result."""
        return self._guarded(self._train)

    def _on_epoch(self, point: dict[str, Any]) -> None:
        with self._lock:
            self._curve.append(point)
            show_chart(self.curve, curve_chart(self._curve))
            self.epochs_seen = len(self._curve)

    def _train(self) -> TrainResult:
        self._check_weights()
        self._look()
        self.progress.reset()
        self._curve = []
        self.epochs_seen = 0
        self.curve.value = b""
        self.summary.value = ""
        self.per_class_table.value = ""
        self.confusion.value = b""
        self.done = False
        self.status = "training..."
        try:
            result = train_classifier(
                self.model_name.value.strip(),
                **self._data(),
                featurizer=self.featurizer.value,
                weights=self.weights.value,
                size=self.size.value or None,
                epochs=self.epochs.value,
                augment=self.augment.value,
                workspace=self.workspace,
                progress=self.progress,
                cancel=self._new_cancel(),
                on_epoch=self._on_epoch,
            )
        except BaseException:
            self.progress.finish(False)
            self.status = "not trained; nothing was kept"
            raise
        self.progress.finish(True)
        self._show_result(result)
        self.result = result
        self.model = result.model
        self.status = (
            f"trained {result.model.ref}: held-out accuracy {result.accuracy:.3f}; convert it next"
        )
        self.done = True
        self._refresh_state()
        return result

    def _show_result(self, result: TrainResult) -> None:
        report = result.report
        held = report["holdout"]
        feat = report["featurizer"]
        words = (
            f"<b>Held-out accuracy {held['accuracy']:.3f}</b> on {held['n_images']} images "
            f"the model never trained on ({feat['title']}, {feat['weights']} weights, "
            f"{feat['size']} px; stopped after {report['head']['epochs_run']} epochs, "
            f"kept epoch {report['head']['best_epoch']})."
        )
        if feat["weights"] == "random":
            words += (
                " <i>Random weights: a fixed random feature map, enough for simple pictures; "
                "use ImageNet weights for photos.</i>"
            )
        self.summary.value = words
        self.per_class_table.value = html_table(
            ["class", "precision", "recall", "held out"],
            [
                [c["class"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", c["support"]]
                for c in held["per_class"]
            ],
            css="accel-per-class-rows",
            row_css="accel-per-class-row",
        )
        show_chart(self.confusion, confusion_chart(report["classes"], held["confusion"]))


class ConvertTrainedWidget(ConvertStep):
    """The walk's Convert step for the trained model: ``trained`` in from the Train step,
    ``model`` out to Deploy once converted to ONNX (optionally INT8), checked on its own
    pictures.

    The pictures kept with the model stand in for the bundled photos
    (engine/checks/check_photos.py): INT8 calibrates on its training split, and the TF-vs-ONNX
    report, the INT8 agreement and the accuracy are measured on its held-out pictures.
    """

    css_name = "convert-trained"
    #: the Convert step cannot bring back a deleted trained model: training can
    again_words = "train it again in the step above"
    trained = traitlets.Any(None, allow_none=True, help="the trained ModelRecord (input)")

    def __init__(self, workspace: Workspace | None = None, **kwargs: Any) -> None:
        self.quantize = widgets.Checkbox(value=True, description="also quantize to INT8")
        super().__init__(workspace, **kwargs)
        self.controls.children = (self.quantize, *self.controls.children)
        self.title = "2. Convert"

    @traitlets.observe("trained")
    def _on_trained(self, change: Any) -> None:
        self._new_input()

    def _set_enabled(self, enabled: bool) -> None:
        super()._set_enabled(enabled)
        self.quantize.disabled = not enabled

    def _plan(self) -> str:
        if self.trained is None:
            return "<i>Train a model above.</i>"
        return (
            f"<b>{html.escape(self.trained.ref)}</b>: convert to ONNX and check it against "
            "TensorFlow on its held-out pictures."
        )

    def _starting(self) -> str:
        if self.trained is None:
            raise AccelError("train a model in the step above first")
        return f"converting {self.trained.ref}..."

    def _prepare(self, cancel: CancelToken) -> tuple[ModelRecord, list[ArtifactRecord], str]:
        from accel_widgets.engine.conversion.convert import convert

        model = self.trained
        artifacts = convert(
            model.name,
            version=model.version,
            quantize="int8" if self.quantize.value else None,
            workspace=self.workspace,
            progress=self.progress,
            cancel=cancel,
        )
        words = (
            f"converted {model.ref} to ONNX ({', '.join(a.precision for a in artifacts)}), "
            "checked on its held-out pictures; ready to deploy"
        )
        return model, list(artifacts), words


class TrainWalk(StepChain):
    """Train -> convert -> deploy -> score (a held-out picture) -> clean up, in order.

    Keyword arguments go to :class:`TrainWidget` (``source``, ``folder``, ``name``,
    ``featurizer``, ``weights``, ``size``, ``per_class``, ``epochs``); ``poll`` is the main
    walk's (:class:`~accel_widgets.widgets.chain.StepChain`): while the walk is on screen, a
    model or service deleted elsewhere reopens the step that made it.
    """

    def __init__(
        self,
        workspace: Workspace | None = None,
        *,
        poll: float | None = 2.0,
        **train_options: Any,
    ) -> None:
        workspace = workspace or Workspace()
        self.train = TrainWidget(workspace=workspace, **train_options)
        self.convert = ConvertTrainedWidget(workspace=workspace)
        self.deploy = DeployWidget(workspace=workspace)
        self.score = ScoreWidget(workspace=workspace)
        # Numbered for this walk (the steps borrowed from the main walk carry its numbers).
        self.deploy.title, self.score.title = "3. Deploy", "4. Score"
        self.score.use_photos({})  # its own classes' pictures arrive with the training
        super().__init__(
            workspace,
            [self.train, self.convert, self.deploy, self.score],
            links=[
                ((self.train, "model"), (self.convert, "trained")),
                ((self.convert, "model"), (self.deploy, "model")),
                ((self.deploy, "service"), (self.score, "service")),
            ],
            needs=[
                (self.train, self.convert),
                (self.convert, self.deploy),
                (self.deploy, self.score),
            ],
            poll=poll,
        )
        self.cleanup.title = "5. Clean up"
        self.add_class("accel-train-walk")
        self.train.observe(self._offer_example, "result")

    def _offer_example(self, change: Any) -> None:
        """Score starts on a held-out picture of the user's own classes (not the cat)."""
        result = change["new"]
        if result is None:
            return
        # A few held-out pictures of each class (never trained on), not the ImageNet photos.
        photos: dict[str, bytes] = {}
        taken: dict[str, int] = {}
        for held in result.report["holdout"]["predictions"]:
            if taken.get(held["truth"], 0) >= 2:
                continue
            taken[held["truth"]] = taken.get(held["truth"], 0) + 1
            path = Path(result.report["data"]) / held["file"]
            photos[f"held-out {held['truth']} ({path.name})"] = path.read_bytes()
        self.score.use_photos(photos)

    def actions(self) -> list[tuple[Step, Callable[[], object]]]:
        """Train, Convert, Deploy, Score."""
        return [
            (self.train, self.train.run),
            (self.convert, self.convert.run),
            (self.deploy, self.deploy.run),
            (self.score, self.score.run),
        ]
