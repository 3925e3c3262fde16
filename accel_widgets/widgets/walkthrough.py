"""The whole walk in one widget: each step opens when the one before it is done.

Steps pass their results forward with traitlets links (model choice -> convert -> deploy ->
score), so there is no hand-written refresh code, and each step stays usable on its own.
"""

from __future__ import annotations

import os
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.engine.targets import get_target
from accel_widgets.engine.workspace import Workspace
from accel_widgets.errors import AccelError
from accel_widgets.widgets.cleanup import CleanupWidget
from accel_widgets.widgets.convert import ConvertWidget
from accel_widgets.widgets.deploy import DeployWidget
from accel_widgets.widgets.model import ModelWidget
from accel_widgets.widgets.package import PackageWidget
from accel_widgets.widgets.quota import QuotaWidget
from accel_widgets.widgets.score import ScoreWidget
from accel_widgets.widgets.state import WalkState


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


class Walkthrough(widgets.VBox):
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
        Seconds between reads of the workspace and of the walk's services' health, for
        changes made elsewhere (the sidebar, a terminal); ``None`` or 0: no poll (tests call
        ``walk.state.refresh()``). The poll runs while a front end shows the walk (ipywidgets'
        view count): re-running the cell or clearing its output stops the old walk's poll,
        and so does closing the widget.
    """

    def __init__(
        self,
        model: str | None = "squeezenet",
        workspace: Workspace | None = None,
        poll: float | None = 2.0,
        **kwargs: Any,
    ) -> None:
        workspace = workspace or Workspace()
        self.workspace = workspace
        # One source of truth: every step shows what the workspace and the services say now.
        self.state = WalkState(workspace)
        self.quota = QuotaWidget()
        self.model = ModelWidget(model=model)
        self.convert = ConvertWidget(workspace=workspace)
        self.package = PackageWidget(workspace=workspace)
        self.deploy = DeployWidget(workspace=workspace)
        self.score = ScoreWidget(workspace=workspace)
        self.cleanup = CleanupWidget(workspace=workspace)
        self.steps = [
            self.quota,
            self.model,
            self.convert,
            self.package,
            self.deploy,
            self.score,
            self.cleanup,
        ]
        # Results flow forward...
        traitlets.dlink((self.model, "selection"), (self.convert, "selection"))
        traitlets.dlink((self.convert, "model"), (self.package, "model"))
        traitlets.dlink((self.convert, "model"), (self.deploy, "model"))
        traitlets.dlink((self.deploy, "service"), (self.score, "service"))
        # ...and each step opens when the one it needs is done: Package and Deploy both
        # need only the converted model.
        needs = [
            (self.quota, self.model),
            (self.model, self.convert),
            (self.convert, self.package),
            (self.convert, self.deploy),
            (self.deploy, self.score),
        ]
        for before, after in needs:
            after.locked = not before.done
            traitlets.dlink((before, "done"), (after, "locked"), transform=lambda d: not d)
        # Clean up is open whenever the workspace holds something (its own _sync says so).
        self.cleanup.locked = True
        for step in self.steps:
            step.use_state(self.state)
        # On a Voila page, what the notebook's text would have said, in that page's words.
        self.guide = widgets.HTML(VOILA_GUIDE if in_voila() else "")
        super().__init__([*self.steps, self.guide], **kwargs)
        self.add_class("accel-walkthrough")
        self.state.refresh()
        self._poll = poll
        if poll:
            # The front end counts this widget's views once the count is a number.
            self.observe(self._on_views, "_view_count")
            self._view_count = 0

    def _on_views(self, change: Any) -> None:
        """Poll only while the walk is on screen somewhere."""
        if change["new"]:
            self.state.start(self._poll or 2.0)
        else:
            self.state.stop()

    def close(self) -> None:
        """Stop the poll with the widget."""
        self.state.stop()
        super().close()

    def run_all(self) -> None:
        """Do every step with the current settings, stopping at the first error.

        What a click-through does, for headless runs of the notebook (and for impatient
        presenters). Clean-up only lists what is there: deleting stays a human decision.
        """
        actions = [
            (self.quota, self.quota.run),
            (self.model, self.model.confirm),
            (self.convert, self.convert.run),
        ]
        if get_target(self.deploy.target.value).needs_image:
            actions.append((self.package, self.package.run))
        actions += [
            (self.deploy, self.deploy.run),
            (self.score, self.score.run),
            (self.cleanup, self.cleanup.refresh),
        ]
        for step, action in actions:
            action()
            # Clean up only lists what is there (deleting is a human decision): not "done".
            if step.error or not (step.done or step is self.cleanup):
                raise AccelError(f"{step.title}: {step.error or 'not done'}")
