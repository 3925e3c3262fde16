"""Step 1, capacity: can this target take a deployment, and if not, what to do next."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.engine.catalog import get_spec
from accel_widgets.engine.choices import model_choices
from accel_widgets.engine.quota import DEFAULT_MODEL_NEEDS, ModelNeeds, QuotaReport, check_quota
from accel_widgets.engine.targets import get_target, targets
from accel_widgets.widgets.base import ProgressPanel, Step, button, html_table


def offered_needs() -> dict[str, ModelNeeds]:
    """What each model the Model step offers needs here, by the key the Model step uses.

    Catalog models (float and INT8) need what the catalog measured for their network; the
    sample ONNX file is registered as is: ONNX Runtime runs it on the photos (no TensorFlow,
    no converter) and it is copied once into the workspace.
    """
    from accel_widgets.widgets.model import listed_choices  # the Model step's list, as shown

    needs: dict[str, ModelNeeds] = {}
    for choice in listed_choices(model_choices()):
        if choice.kind == "catalog":
            base = get_spec(choice.key).base_name
            if base in DEFAULT_MODEL_NEEDS:
                needs[choice.key] = DEFAULT_MODEL_NEEDS[base]
        else:
            needs[choice.key] = ModelNeeds(
                convert_gib=0.5, serve_gib=0.25, disk_mib=max(1.0, 3 * choice.file_mb)
            )
    return needs


class QuotaWidget(Step):
    """Target (this machine, or an Azure region and VM family) -> the capacity table."""

    css_name = "quota"
    report = traitlets.Any(None, allow_none=True, help="the last QuotaReport")

    def __init__(self, *, credential: Any = None, endpoint: str | None = None, **kwargs: Any):
        self._azure_options: dict[str, Any] = {"credential": credential}
        if endpoint:
            self._azure_options["endpoint"] = endpoint
        # Every deployment target (its capacity check), then Azure's regional vCPU quota.
        self.target = widgets.ToggleButtons(
            options=[(t.title, t.name) for t in targets()] + [("Azure quota", "azure")],
            value="local",
            # Each button as wide as its words: one row, "Azure ML online endpoint" whole.
            style={"button_width": "auto"},
        )
        self.target.add_class("accel-quota-target")
        self.region = widgets.Text(value="eastus", description="region")
        self.family = widgets.Text(value="standardPBSFamily", description="VM family")
        self.azure_box = widgets.HBox([self.region, self.family])
        self.azure_box.layout.display = "none"
        self.check_button = button("Check capacity", "quota-check", "primary", "search")
        self.progress = ProgressPanel()
        self.table = widgets.HTML()
        self.table.add_class("accel-quota-table")
        self.verdict = widgets.HTML()
        self.verdict.add_class("accel-quota-verdict")
        super().__init__(
            [
                self.target,
                self.azure_box,
                self.check_button,
                self.progress,
                self.table,
                self.verdict,
            ],
            **kwargs,
        )
        self.title = "1. Capacity"
        self.target.observe(self._on_target, "value")
        self.check_button.on_click(lambda _: self._start(self.run))

    def _on_target(self, change: Any) -> None:
        self.azure_box.layout.display = "" if self._azure(change["new"]) else "none"

    @staticmethod
    def _azure(target: str) -> bool:
        """Azure's quota itself, or a target whose capacity is an Azure quota (Azure ML)."""
        return target == "azure" or get_target(target).capacity == "azure"

    def _set_enabled(self, enabled: bool) -> None:
        for control in (self.target, self.region, self.family, self.check_button):
            control.disabled = not enabled

    def run(self) -> QuotaReport | None:
        """Check now (synchronously); the table and verdict show the answer."""
        return self._guarded(self._check)

    def _check(self) -> QuotaReport:
        self.progress.reset()
        self.status = "checking..."
        if self._azure(self.target.value):
            report = check_quota(
                self.target.value,
                region=self.region.value.strip(),
                family=self.family.value.strip(),
                progress=self.progress,
                cancel=self._new_cancel(),
                **self._azure_options,
            )
        else:
            # Judged one by one: exactly the models the Model step offers, nothing else.
            report = check_quota(
                self.target.value,
                models=offered_needs(),
                progress=self.progress,
                cancel=self._new_cancel(),
            )
        self.progress.finish(True)
        self._show(report)
        self.report = report
        self.status = "enough capacity" if report.verdict else "not enough capacity"
        self.done = True  # a "no" is an answer too: the walk may go on to a smaller model
        return report

    def _show(self, report: QuotaReport) -> None:
        table = report.to_table()
        self.table.value = html_table(table[0], table[1:], css="accel-quota-rows")
        color = "#1b7f3b" if report.verdict else "#b00020"
        word = "Enough" if report.verdict else "Not enough"
        models = report.details.get("models") or {}
        fits = [name for name, verdict in models.items() if verdict.get("ok")]
        extra = ""
        if models:
            extra = (
                "<br>Models that fit here now (of those offered in the Model step): "
                f"{html.escape(', '.join(fits) or 'none')}."
            )
        self.verdict.value = (
            f"<b style='color:{color}'>{word} capacity.</b> {html.escape(report.advice)}{extra}"
        )
