"""The whole walk in one widget: each step opens when the one before it is done.

Steps pass their results forward with traitlets links (model choice -> convert -> deploy ->
score), so there is no hand-written refresh code, and each step stays usable on its own.
The walk is a :class:`~accel_widgets.widgets.chain.StepChain` of its steps, like the train
walk (:mod:`~accel_widgets.widgets.train`): this module only declares them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.engine.targets import get_target
from accel_widgets.widgets.base import Step
from accel_widgets.widgets.chain import StepChain
from accel_widgets.widgets.convert import ConvertWidget
from accel_widgets.widgets.deploy import DeployWidget
from accel_widgets.widgets.model import ModelWidget
from accel_widgets.widgets.package import PackageWidget
from accel_widgets.widgets.quota import QuotaWidget
from accel_widgets.widgets.score import ScoreWidget


def in_voila() -> bool:
    """Whether this kernel serves a Voila page (Voila sets these in the kernel's environment):
    there is no notebook, no cell to re-run, no kernel menu, only the widgets."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith("voila/") or bool(
        os.environ.get("VOILA_KERNEL_ID")
    )


#: What the notebook's own text says about kernels, Run All and the code notebook, in the
#: words of a Voila page (Voila leaves those cells out: metadata transient.remove_source).
VOILA_GUIDE = (
    "<div class='accel-voila-guide' style='margin-top:0.8em;color:#555;line-height:1.4'>"
    "Closed this page by mistake? Reloading this page starts the walk again on the same "
    "workspace. The same steps as plain code are in the notebook "
    "<code>walkthrough-code.ipynb</code>, for JupyterLab.</div>"
)


class Walkthrough(StepChain):
    """Capacity -> model -> convert -> (package) -> deploy -> score -> clean up, in order.

    Package is optional: it opens with Deploy once the model is converted, and only the
    targets that run an image need it (the local default does not).

    Parameters
    ----------
    model:
        The model to preselect: ``"squeezenet"`` (the real pretrained sample), a catalog name,
        or the path of an ``.onnx`` file.
    workspace:
        Where models and services are recorded (default: the user's workspace).
    poll:
        Seconds between reads of the workspace and the services, while a front end shows
        the walk, for changes made elsewhere (the sidebar, a terminal); ``None`` or 0: no
        poll (see :class:`~accel_widgets.widgets.chain.StepChain`).
    """

    def __init__(
        self,
        model: str | None = "squeezenet",
        workspace: Workspace | None = None,
        poll: float | None = 2.0,
        **kwargs: Any,
    ) -> None:
        workspace = workspace or Workspace()
        self.quota = QuotaWidget()
        self.model = ModelWidget(model=model)
        self.convert = ConvertWidget(workspace=workspace)
        self.package = PackageWidget(workspace=workspace)
        self.deploy = DeployWidget(workspace=workspace)
        self.score = ScoreWidget(workspace=workspace)
        # On a Voila page, what the notebook's text would have said, in that page's words.
        self.guide = widgets.HTML(VOILA_GUIDE if in_voila() else "")
        super().__init__(
            workspace,
            [self.quota, self.model, self.convert, self.package, self.deploy, self.score],
            links=[
                ((self.model, "selection"), (self.convert, "selection")),
                ((self.convert, "model"), (self.package, "model")),
                ((self.convert, "model"), (self.deploy, "model")),
                ((self.deploy, "service"), (self.score, "service")),
            ],
            # Package and Deploy both need only the converted model.
            needs=[
                (self.quota, self.model),
                (self.model, self.convert),
                (self.convert, self.package),
                (self.convert, self.deploy),
                (self.deploy, self.score),
            ],
            poll=poll,
            below=[self.guide],
            **kwargs,
        )
        self.add_class("accel-walkthrough")

    def actions(self) -> list[tuple[Step, Callable[[], object]]]:
        """Quota, Model, Convert, Package where the target runs an image, Deploy, Score."""
        actions: list[tuple[Step, Callable[[], object]]] = [
            (self.quota, self.quota.run),
            (self.model, self.model.confirm),
            (self.convert, self.convert.run),
        ]
        if get_target(self.deploy.target.value).needs_image:
            actions.append((self.package, self.package.run))
        return [*actions, (self.deploy, self.deploy.run), (self.score, self.score.run)]
