"""A walk as a chain of steps: results linked forward, each step open when the one it needs
is done, one source of truth polled while the walk is on screen, Run All and close.

Both walks are such a chain: :class:`~accel_widgets.widgets.walkthrough.Walkthrough` (an
ImageNet model: capacity, model, convert, package, deploy, score) and
:class:`~accel_widgets.widgets.train.TrainWalk` (the user's own classes: train, convert,
deploy, score). A walk declares its steps, its forward links, which step needs which and
what Run All does; the wiring, the poll and the stop-at-the-first-error loop live here once,
so what one walk gains (a poll that follows the sidebar, a step that reopens) the other has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.errors import AccelError
from accel_widgets.widgets.base import Step
from accel_widgets.widgets.cleanup import CleanupWidget
from accel_widgets.widgets.state import WalkState

#: ``((step, trait), (step, trait))``: the first trait's value is copied into the second
Link = tuple[tuple[Step, str], tuple[Step, str]]


class StepChain(widgets.VBox):
    """Steps in order over one :class:`~accel_widgets.widgets.state.WalkState`, ending with
    Clean up (the chain's own ``cleanup``: every walk leaves something to delete).

    Parameters
    ----------
    workspace:
        Where models and services are recorded; every step and the state read it.
    steps:
        The walk's steps before Clean up, in the order shown.
    links:
        Results passed forward (``traitlets.dlink``), so there is no hand-written refresh.
    needs:
        ``(before, after)``: ``after`` is locked until ``before`` is done, and locks again
        when ``before`` loses its result.
    poll:
        Seconds between reads of the workspace and of the walk's services' health, for
        changes made elsewhere (the sidebar, a terminal); ``None`` or 0: no poll (tests call
        ``walk.state.refresh()``). The poll runs while a front end shows the walk (ipywidgets'
        view count): re-running the cell or clearing its output stops the old walk's poll,
        and so does closing the widget.
    below:
        Widgets shown under the steps.
    """

    def __init__(
        self,
        workspace: Workspace,
        steps: Sequence[Step],
        *,
        links: Sequence[Link],
        needs: Sequence[tuple[Step, Step]],
        poll: float | None,
        below: Sequence[widgets.Widget] = (),
        **kwargs: Any,
    ) -> None:
        self.workspace = workspace
        # One source of truth: every step shows what the workspace and the services say now.
        self.state = WalkState(workspace)
        self.cleanup = CleanupWidget(workspace=workspace)
        self.steps: list[Step] = [*steps, self.cleanup]
        for source, target in links:
            traitlets.dlink(source, target)
        for before, after in needs:
            after.locked = not before.done
            traitlets.dlink((before, "done"), (after, "locked"), transform=lambda d: not d)
        # Clean up is open whenever the workspace holds something (its own _sync says so).
        self.cleanup.locked = True
        for step in self.steps:
            step.use_state(self.state)
        super().__init__([*self.steps, *below], **kwargs)
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

    def actions(self) -> list[tuple[Step, Callable[[], object]]]:
        """What :meth:`run_all` clicks, in order, before Clean up: ``(step, its action)``."""
        raise NotImplementedError

    def run_all(self) -> None:
        """Do every step with the current settings, stopping at the first error.

        What a click-through does, for headless runs of the notebook (and for impatient
        presenters). Clean up only lists what is there: deleting stays a human decision.
        """
        for step, action in [*self.actions(), (self.cleanup, self.cleanup.refresh)]:
            action()
            # Clean up only lists what is there (deleting is a human decision): not "done".
            if step.error or not (step.done or step is self.cleanup):
                raise AccelError(f"{step.title}: {step.error or 'not done'}")
