"""Step 2, the model: a catalog model, the real pretrained sample, or a file of your own."""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.engine.catalog import get_spec
from accel_widgets.engine.choices import (
    SAMPLE_NAME,
    ModelChoice,
    get_choice,
    get_sample,
    model_choices,
    preselect,
)
from accel_widgets.errors import AccelError
from accel_widgets.sizes import mb_text
from accel_widgets.widgets.base import ProgressPanel, Step, button

_OWN = "__own__"


@functools.lru_cache(maxsize=16)
def _onnx_precision(path: str, stamp: float) -> str | None:
    """How an ONNX file stores its numbers (fp32, fp16 or int8), read from its graph."""
    try:
        import onnx

        model = onnx.load(path, load_external_data=False)
    except Exception:  # a broken file is the Convert step's to explain
        return None
    quantized = {"QLinearConv", "QuantizeLinear", "ConvInteger", "QLinearMatMul"}
    if any(node.op_type in quantized for node in model.graph.node):
        return "int8"
    elem = model.graph.input[0].type.tensor_type.elem_type if model.graph.input else 0
    return {1: "fp32", 10: "fp16"}.get(elem)


def file_precision(path: Path | None) -> str | None:
    """The precision an ONNX file ships in, or None when it cannot be read."""
    if path is None or not path.is_file():
        return None
    return _onnx_precision(str(path), path.stat().st_mtime)


def choice_label(choice: ModelChoice) -> str:
    """One line for the drop-down; a latency that was not measured here says so."""
    latency = f", ~{choice.latency_ms:.0f} ms catalog estimate" if choice.latency_ms else ""
    return f"{choice.title} ({mb_text(choice.file_mb)}{latency})"


def listed_choices(choices: list[ModelChoice]) -> list[ModelChoice]:
    """Each model once: a catalog INT8 entry ("ResNet-50 (INT8)") is its float model with
    the precision toggle on INT8, so the list does not offer it beside the toggle."""
    keys = {c.key for c in choices}
    return [c for c in choices if not (c.quantized and _float_key(c.key) in keys)]


def _float_key(key: str) -> str:
    """``quantized-resnet50`` -> ``resnet50``: the float model an INT8 catalog entry builds."""
    return key.removeprefix("quantized-")


def int8_figures(choice: ModelChoice) -> tuple[float | None, float | None]:
    """(size in MB, latency in ms) the catalog gives for the INT8 build; None where unknown."""
    if choice.kind != "catalog":
        return None, None
    spec = get_spec(choice.key)
    return spec.int8_mb, spec.latency_ms_int8


def float_words(choice: ModelChoice | None) -> str:
    """What "float" means for this choice, named as it is."""
    if choice is None:
        return "as the file is"
    if choice.kind == "catalog":
        return "fp32"
    found = file_precision(choice.path)
    if choice.kind == "sample":
        return f"{found or 'float'}, as the sample ships"
    return f"{found}, as the file is" if found else "as the file is"


class ModelWidget(Step):
    """Pick what to deploy and how: weights source, float or INT8.

    ``selection`` holds the confirmed choice as a dict ``{"choice", "weights", "quantize"}``
    once "Use this model" is clicked; the Convert step reads it.
    """

    css_name = "model"
    selection = traitlets.Dict(allow_none=True, default_value=None)

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        # What can work here: the sample when its file is found, else a catalog model with
        # the weights this machine can have, and a note saying so (engine/choices.py).
        pick = preselect(model) if model else None
        if pick is not None:
            model = pick.key
        self.choices = model_choices()
        int8_asked = False
        if model and model != _float_key(model) and _float_key(model) in self._keys():
            model, int8_asked = _float_key(model), True  # "quantized-resnet50": float + INT8
        options = self._options()
        default = model if model in {c.key for c in self.choices} else options[0][1]
        self.choice = widgets.Dropdown(options=options, value=default, description="model")
        self.choice.layout.width = "46em"
        self.choice.add_class("accel-model-choice")
        self.path = widgets.Text(placeholder="/path/to/model.onnx", description="file")
        self.path.add_class("accel-model-path")
        self.weights = widgets.ToggleButtons(
            options=[("ImageNet", "imagenet"), ("Random (dry run)", "random"), ("File", "file")],
            value="imagenet",
            description="weights",
        )
        self.weights.add_class("accel-weights")
        self.weights_file = widgets.Text(placeholder="/path/to/weights.h5", description="file")
        self.precision = widgets.ToggleButtons(
            options=[("Float", "float"), ("Quantized (INT8)", "int8")],
            value="float",
            description="precision",
            style={"button_width": "auto"},
        )
        self.precision.add_class("accel-precision")
        if int8_asked:
            self.precision.value = "int8"
        self.facts = widgets.HTML()
        self.facts.add_class("accel-model-facts")
        self.note = widgets.HTML(
            f"<i>{html.escape(pick.note)}</i>" if pick is not None and pick.note else ""
        )
        self.note.add_class("accel-model-note")
        # Offered only when the walk asked for the sample and its file is not here: a
        # verified download (engine/sample_model.py) with live progress and Cancel.
        self.sample_button = button("Get the sample", "get-sample", "info", "download")
        self.sample_cancel = button("Cancel", "cancel-sample", "warning", "stop")
        self.sample_cancel.on_click(lambda _: self.cancel())
        self.sample_box = widgets.HBox([self.sample_button, self.sample_cancel])
        offer = pick is not None and pick.sample_missing
        self.sample_box.layout.display = "" if offer else "none"
        self.progress = ProgressPanel()
        self.use_button = button("Use this model", "use-model", "primary", "check")
        super().__init__(
            [
                self.note,
                self.sample_box,
                self.progress,
                self.choice,
                self.path,
                self.weights,
                self.weights_file,
                self.precision,
                self.facts,
                self.use_button,
            ],
            **kwargs,
        )
        self.title = "2. Model"
        if model and model not in {c.key for c in self.choices}:
            self.choice.value = _OWN
            self.path.value = model
        if pick is not None and pick.weights in ("imagenet", "random"):
            self.weights.value = pick.weights
        for control in (self.choice, self.weights):
            control.observe(self._refresh, "value")
        self.precision.observe(self._refresh, "value")
        self.path.observe(self._unconfirm, "value")
        self.weights_file.observe(self._unconfirm, "value")
        self.use_button.on_click(lambda _: self.confirm())
        self.sample_button.on_click(lambda _: self._start(self.get_sample))
        self._refresh()

    def _keys(self) -> set[str]:
        return {c.key for c in self.choices}

    def _options(self) -> list[tuple[str, str]]:
        options = [(choice_label(c), c.key) for c in listed_choices(self.choices)]
        options.append(("Your own ONNX file...", _OWN))
        return options

    def get_sample(self) -> ModelChoice:
        """Download the real pretrained sample (checksum verified) and select it.

        Runs on the step's background thread when "Get the sample" is clicked; a failure
        (offline, a wrong checksum) becomes the step's error and leaves the choices as they
        were, with the button still offered.
        """
        self.progress.reset()
        self.status = "downloading the sample..."
        try:
            choice = get_sample(progress=self.progress, cancel=self._new_cancel())
        except BaseException:
            self.progress.finish(False)
            self.status = ""
            raise
        self.progress.finish(True)
        self.choices = model_choices()
        self.choice.options = self._options()
        self.choice.value = SAMPLE_NAME
        self.sample_box.layout.display = "none"
        self.note.value = ""
        self.status = f"downloaded {choice.title}: click 'Use this model'"
        return choice

    def _current(self) -> ModelChoice | None:
        key = self.choice.value
        if key == _OWN:
            return None
        return next(c for c in self.choices if c.key == key)

    def _refresh(self, change: Any = None) -> None:
        choice = self._current()
        own = choice is None
        catalog = choice is not None and choice.kind == "catalog"
        self.path.layout.display = "" if own else "none"
        self.weights.layout.display = "" if catalog else "none"
        file_weights = catalog and self.weights.value == "file"
        self.weights_file.layout.display = "" if file_weights else "none"
        precision = self.precision.value
        options = [(f"Float ({float_words(choice)})", "float"), ("Quantized (INT8)", "int8")]
        if list(self.precision.options) != options:
            self.precision.options = options
            self.precision.value = precision
        int8 = self.precision.value == "int8"
        if own:
            self.facts.value = "Registered as it is; it takes the picture size it declares."
        else:
            size_mb, latency_ms = choice.file_mb, choice.latency_ms
            if int8:  # the figures of what will be deployed, not of the float model
                size_mb, latency_ms = int8_figures(choice)
            latency = (
                f"about {latency_ms:.0f} ms per picture on 2 CPU cores (catalog "
                "estimate; the Convert step measures it on this machine)"
                if latency_ms
                else (
                    "no catalog estimate for INT8: the Convert step measures it on this machine"
                    if int8
                    else "latency measured on this machine when it is converted"
                )
            )
            size = f"{mb_text(size_mb)} as INT8" if int8 and size_mb else mb_text(choice.file_mb)
            if int8 and not size_mb:
                size += " as it ships (the INT8 copy is made by the Convert step)"
            where = {
                "sample": "real pretrained weights from the shared weights folder",
                "catalog": "built with TensorFlow, converted to ONNX and checked against it",
            }[choice.kind]
            self.facts.value = html.escape(
                f"{choice.input_size} x {choice.input_size} pixels, {size}, {latency}; {where}."
            )
        self._unconfirm()

    def _unconfirm(self, change: Any = None) -> None:
        """Changing anything after confirming asks for a new confirmation."""
        if self.done:
            self.done = False
            self.selection = None
            self.status = "changed: click 'Use this model' again"

    def _set_enabled(self, enabled: bool) -> None:
        for control in (
            self.choice,
            self.path,
            self.weights,
            self.weights_file,
            self.precision,
            self.use_button,
            self.sample_button,
        ):
            control.disabled = not enabled
        self.sample_cancel.disabled = not self.busy

    def confirm(self) -> dict[str, Any] | None:
        """Check the inputs and fix the selection (synchronous: it only reads files' sizes)."""
        return self._guarded(self._confirm)

    def _confirm(self) -> dict[str, Any]:
        if self.choice.value == _OWN:
            if not self.path.value.strip():
                raise AccelError("give the path of your .onnx file")
            choice = get_choice(self.path.value.strip())
        else:
            choice = get_choice(self.choice.value)
        weights = self.weights.value if choice.kind == "catalog" else "imagenet"
        if weights == "file":
            weights = self.weights_file.value.strip()
            if not weights:
                raise AccelError("give the path of the weights file, or pick ImageNet")
        quantize = "int8" if self.precision.value == "int8" else None
        self.selection = {"choice": choice, "weights": weights, "quantize": quantize}
        precision = "quantized to INT8" if quantize else float_words(choice)
        self.status = f"{choice.title}, {precision}" + (
            f", {weights} weights" if choice.kind == "catalog" else ""
        )
        self.done = True
        return self.selection
