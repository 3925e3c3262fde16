"""Step 7, clean up: services, images and models, each deletable in dependency order."""

from __future__ import annotations

import contextlib
import html
from typing import Any

import ipywidgets as widgets

from accel_widgets.engine.cleanup import (
    CleanupItem,
    cleanup_plan,
    delete_everything,
    delete_item,
)
from accel_widgets.engine.workspace import Workspace
from accel_widgets.errors import AccelError
from accel_widgets.widgets.base import Step, button


class CleanupWidget(Step):
    """The workspace as rows with Delete buttons; every delete asks for a confirmation.

    A row that something else still uses (a model a service runs) names what to delete
    first, and its button stays disabled: the order service -> image -> model is kept.
    """

    css_name = "cleanup"
    lock_words = "Nothing to clean up: the workspace is empty."
    quiet_when_locked = False  # "deleted 5 item(s)" stays beside "nothing to clean up"

    def __init__(self, workspace: Workspace | None = None, **kwargs: Any) -> None:
        self.workspace = workspace
        self.items: list[CleanupItem] = []
        self.refresh_button = button("Refresh", "cleanup-refresh", "", "refresh")
        self.all_button = button("Delete everything", "cleanup-all", "danger", "trash")
        self.all_button.layout.width = "auto"  # the words in full, not "Delete everyth..."
        self._seen: tuple | None = None  # the state the rows were last built for
        self._deleted = False  # this step deleted something since the workspace last filled
        self.rows = widgets.VBox()
        self.rows.add_class("accel-cleanup-rows")
        self.confirm_box = widgets.HBox()
        self.confirm_box.add_class("accel-confirm")
        super().__init__(
            [widgets.HBox([self.refresh_button, self.all_button]), self.rows, self.confirm_box],
            **kwargs,
        )
        self.title = "7. Clean up"
        self.refresh_button.on_click(lambda _: self.refresh())
        self.all_button.on_click(lambda _: self.ask_all())

    def _sync(self) -> None:
        """In a walk: open while the workspace holds anything; rows follow the workspace."""
        if self.state is None or self.busy:
            return
        self.locked = self.state.empty
        if self._state_key() == self._seen or (self.locked and not self.items):
            return
        # The Refresh button says what failed; a background read stays quiet.
        with contextlib.suppress(AccelError):
            self._rebuild(keep_question=True)

    def _state_key(self) -> tuple | None:
        if self.state is None:
            return None
        state = self.state
        return (tuple(state.models), tuple(state.images), tuple(sorted(state.services.items())))

    def _set_enabled(self, enabled: bool) -> None:
        self.refresh_button.disabled = not enabled
        self.all_button.disabled = not enabled or not self.items
        # Rows are rebuilt after the items change: zip to the shorter, the rebuild sets the rest.
        for item, row in zip(self.items, self.rows.children, strict=False):
            row.children[-1].disabled = not enabled or bool(item.blocked_by)

    def refresh(self) -> list[CleanupItem]:
        """Read the workspace again (services' health is checked now)."""
        result = self._guarded(self._refresh)
        return result if result is not None else self.items

    def _refresh(self) -> list[CleanupItem]:
        return self._rebuild(keep_question=False)

    def _rebuild(self, keep_question: bool) -> list[CleanupItem]:
        items = cleanup_plan(self.workspace)
        if not keep_question:
            self.confirm_box.children = ()
        rows = []
        for item in items:
            text = f"<b>{html.escape(item.label)}</b> &mdash; {html.escape(item.detail)}"
            if item.blocked_by:
                text += f" <i>(delete first: {html.escape(', '.join(item.blocked_by))})</i>"
            delete = button("Delete", "delete", "danger", "trash")
            delete.on_click(lambda _, item=item: self.ask(item))
            label = widgets.HTML(text, layout=widgets.Layout(width="36em"))
            row = widgets.HBox([label, delete])
            row.add_class(f"accel-cleanup-{item.kind}")
            rows.append(row)
        self.items = items
        self.rows.children = rows
        self._set_enabled(not self.locked and not self.busy)
        self.status = (
            f"{len(items)} item(s) in the workspace" if items else "the workspace is empty"
        )
        # Done means cleaned up: a delete here left nothing behind. Listing what is there is
        # not cleaning it (no ✓ while items remain), nor is a workspace that was always empty.
        if items:
            self._deleted = False
        self.done = not items and self._deleted
        self._seen = self._state_key()
        return self.items

    def ask(self, item: CleanupItem) -> None:
        """Show "Delete <item>? [Yes, delete] [Keep it]"."""
        yes = button("Yes, delete", "confirm-delete", "danger")
        no = button("Keep it", "keep", "")
        yes.on_click(lambda _: self._start(lambda: self._delete(item)))
        no.on_click(lambda _: setattr(self.confirm_box, "children", ()))
        question = widgets.HTML(f"Delete <b>{html.escape(item.label)}</b>? This cannot be undone.")
        self.confirm_box.children = (question, yes, no)

    def ask_all(self) -> None:
        """Show "Delete everything? [Yes, delete] [Keep it]"."""
        yes = button("Yes, delete", "confirm-delete", "danger")
        no = button("Keep it", "keep", "")
        yes.on_click(lambda _: self._start(self._delete_all))
        no.on_click(lambda _: setattr(self.confirm_box, "children", ()))
        what = ", ".join(item.label for item in self.items) or "nothing"
        question = widgets.HTML(
            f"Delete <b>everything</b> ({html.escape(what)})? This cannot be undone."
        )
        self.confirm_box.children = (question, yes, no)

    def delete_all(self) -> None:
        """Delete every service, image and model without asking (for code)."""
        self._guarded(self._delete_all)

    def _delete_all(self) -> None:
        self.confirm_box.children = ()
        self.status = "deleting everything..."
        try:
            deleted = delete_everything(self.workspace)
            self._deleted = True
        finally:
            self._refresh_state()
            self._refresh()
        self.status = f"deleted {len(deleted)} item(s); the walk can start again from the top"

    def delete(self, item: CleanupItem) -> None:
        """Delete without asking (for code); the rows are read again afterwards."""
        self._guarded(lambda: self._delete(item))

    def _delete(self, item: CleanupItem) -> None:
        self.confirm_box.children = ()
        self.status = f"deleting {item.label}..."
        try:
            delete_item(item, self.workspace)
            self._deleted = True
        finally:
            self._refresh_state()
            self._refresh()
        self.status = f"deleted {item.label}; " + self.status
