"""Step 3, build and convert: build -> save -> register -> convert -> quantize, with a report.

:class:`ConvertStep` is the step itself (buttons, live log, report, Cancel, reopening when
its model is deleted elsewhere); :class:`ConvertWidget` feeds it the Model step's choice,
and the train walk's :class:`~accel_widgets.widgets.train.ConvertTrainedWidget` a trained
model, so both walks convert with the same step.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.engine.checks.verdicts import artifact_check
from accel_widgets.engine.conversion.reports import REPORT_COLUMNS, photo_predictions, report_row
from accel_widgets.engine.models.labels import load_labels
from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ModelRecord,
    Workspace,
    default_order,
)
from accel_widgets.engine.walk.choices import prepare_choice
from accel_widgets.errors import AccelError
from accel_widgets.progress import CancelToken
from accel_widgets.widgets.base import ProgressPanel, Step, button, html_table, photo_name


def what_happened(model: ModelRecord, artifacts: list[ArtifactRecord], reused: bool) -> str:
    """The Convert step's status in the words of what was done: registered as is, converted
    to ONNX, quantized to INT8, or found done already."""
    precisions = ", ".join(a.precision for a in artifacts)
    as_is = model.kind != "catalog"
    if reused:
        how = "registered as is" if as_is else "converted"
        return f"reusing {model.ref} ({precisions}), {how} earlier; ready to deploy"
    if as_is:
        source = next((a.precision for a in artifacts if a.precision != "int8"), "")
        done = f"registered {model.ref} as is ({source}, not converted)"
        if any(a.precision == "int8" for a in artifacts):
            done += " and quantized it to INT8"
        return done + "; ready to deploy"
    return f"converted {model.ref} to ONNX ({precisions}); ready to deploy"


def int8_warning(artifacts: list[ArtifactRecord]) -> str:
    """Why an INT8 artifact just made is not recommended, and what Deploy does about it;
    empty when every artifact passed its checks."""
    for artifact in artifacts:
        check = artifact_check(artifact.report, artifact.precision)
        if artifact.precision == "int8" and check.mark == "warn":
            fallback = sorted(artifacts, key=default_order)[0]
            return (
                f"INT8 is {check.text}. Deploy serves {fallback.precision} by default; "
                "choose INT8 there to deploy it anyway."
            )
    return ""


def photo_check(model: ModelRecord, artifacts: list[ArtifactRecord]) -> str:
    """What the check of a model registered as is found on the real photos, as HTML."""
    as_is = [a for a in artifacts if photo_predictions(a)]
    if not as_is:
        return ""
    found = photo_predictions(as_is[0])
    labels = None
    if model.spec.get("labels"):
        try:
            labels = load_labels(model.spec["labels"])
        except AccelError:
            labels = None

    def label(index: int) -> str:
        return labels[index] if labels and 0 <= index < len(labels) else f"class {index}"

    said = "; ".join(
        f"{html.escape(photo_name(photo))} &rarr; {html.escape(label(i))}" for photo, i in found
    )
    return (
        f"<div class='accel-photo-check'>Ran on {len(found)} bundled photos (registered as "
        f"is: there is no source model to compare it with); its top-1 answers: {said}.</div>"
    )


class ConvertStep(Step):
    """What both Convert steps are: Convert and Cancel, the live log, the report table.

    ``model`` (read by the Deploy step) and ``artifacts`` (shown in the report table) are the
    result. The step reopens when its model is deleted elsewhere (clean-up, the sidebar, the
    CLI) and answers a Cancel click at once. Where the model comes from is the subclass's:
    its input trait (calling :meth:`_new_input` when it changes) and three methods,
    :meth:`_plan`, :meth:`_starting` and :meth:`_prepare`.
    """

    css_name = "convert"
    #: what a model deleted elsewhere leaves the user to do
    again_words = "convert it again"
    model = traitlets.Any(None, allow_none=True, help="the registered ModelRecord")
    artifacts = traitlets.List(help="its ArtifactRecords (fp32, and int8 when asked)")

    def __init__(self, workspace: Workspace | None = None, **kwargs: Any) -> None:
        self.workspace = workspace
        self.summary = widgets.HTML(self._plan())
        self.convert_button = button("Convert", "convert", "primary", "cogs")
        self.cancel_button = button("Cancel", "cancel", "warning", "stop")
        self.cancel_button.disabled = True
        self.controls = widgets.HBox([self.convert_button, self.cancel_button])
        self.progress = ProgressPanel()
        self.report_table = widgets.HTML()
        self.report_table.add_class("accel-convert-report")
        super().__init__(
            [self.summary, self.controls, self.progress, self.report_table],
            **kwargs,
        )
        self.convert_button.on_click(lambda _: self._start(self.run))
        self.cancel_button.on_click(lambda _: self._on_cancel())

    # -- what a subclass says ------------------------------------------------------------------

    def _plan(self) -> str:
        """The summary (HTML): what a click on Convert will do with the input."""
        raise NotImplementedError

    def _starting(self) -> str:
        """The status while converting; raises (in the step's words) when there is no input."""
        raise NotImplementedError

    def _prepare(self, cancel: CancelToken) -> tuple[ModelRecord, list[ArtifactRecord], str]:
        """The engine call: the model, its artifacts and what was done, in words."""
        raise NotImplementedError

    # -- the step ----------------------------------------------------------------------------

    def _new_input(self) -> None:
        """A new input: the last model, its report and its log are not this one's."""
        self.done = False
        self.model = None
        self.artifacts = []
        self.report_table.value = ""
        self.progress.reset()  # the last model's log and green bars are not this one's
        self.status = ""
        self.warning = ""
        self.summary.value = self._plan()

    def _sync(self) -> None:
        """Reopen when the model is deleted elsewhere (clean-up, the sidebar, the CLI)."""
        if self.busy or self.state is None or self.model is None:
            return
        if not self.state.has_model(self.model):
            ref = self.model.ref
            self.model = None
            self.artifacts = []
            self.report_table.value = ""
            self.done = False
            self.warning = ""
            self.status = f"model {ref} was deleted; {self.again_words}"

    def _set_enabled(self, enabled: bool) -> None:
        self.convert_button.disabled = not enabled
        self.cancel_button.disabled = not self.busy
        self.cancel_button.description = "Cancel"

    def _on_cancel(self) -> None:
        """Answer the click at once; the status says when the work has stopped."""
        self.cancel()
        if self.busy:
            self.cancel_button.disabled = True
            self.cancel_button.description = "Cancelling..."

    def run(self) -> list | None:
        """Convert (synchronously); the report table shows the validation figures."""
        return self._guarded(self._convert)

    def _convert(self) -> list:
        starting = self._starting()
        self.progress.reset()
        self.report_table.value = ""  # a new run replaces the last report, even if it fails
        self.warning = ""
        self.status = starting
        try:
            model, artifacts, words = self._prepare(self._new_cancel())
        except BaseException:
            self.progress.finish(False)
            self.status = "not converted"
            raise
        self.progress.finish(True)
        self.report_table.value = html_table(
            REPORT_COLUMNS, [report_row(a) for a in artifacts], css="accel-report-rows"
        ) + photo_check(model, artifacts)
        self.model = model
        self.artifacts = artifacts
        self.status = words
        self.warning = int8_warning(artifacts)
        self.done = True
        self._refresh_state()
        return self.artifacts


class ConvertWidget(ConvertStep):
    """Get the model chosen in the Model step converted (or find it converted already).

    ``selection`` comes from the Model step. A model the workspace already holds is reused,
    not converted again.
    """

    selection = traitlets.Dict(allow_none=True, default_value=None)

    def __init__(self, workspace: Workspace | None = None, **kwargs: Any) -> None:
        super().__init__(workspace, **kwargs)
        self.title = "3. Build and convert"

    @traitlets.observe("selection")
    def _on_selection(self, change: Any) -> None:
        self._new_input()

    def _plan(self) -> str:
        selection = self.selection
        if not selection:
            return "<i>Choose a model above.</i>"
        choice = selection["choice"]
        steps = {
            "catalog": "build with TensorFlow, save, register, convert to ONNX, validate",
            "sample": "register the ONNX file as it is (no conversion) and run it on real photos",
            "onnx": "register the ONNX file as it is (no conversion) and run it on real photos",
        }[choice.kind]
        if selection["quantize"]:
            steps += ", then quantize to INT8 with real calibration photos"
        return f"<b>{choice.title}</b>: {steps}."

    def _starting(self) -> str:
        if not self.selection:
            raise AccelError("choose a model in the step above and click 'Use this model'")
        return f"working on {self.selection['choice'].title}..."

    def _prepare(self, cancel: CancelToken) -> tuple[ModelRecord, list[ArtifactRecord], str]:
        model, artifacts, reused = prepare_choice(
            self.selection["choice"],
            weights=self.selection["weights"],
            quantize=self.selection["quantize"],
            workspace=self.workspace,
            progress=self.progress,
            cancel=cancel,
        )
        return model, list(artifacts), what_happened(model, list(artifacts), reused)
