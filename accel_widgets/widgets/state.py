"""One source of truth for the walk: what the workspace holds and how its services are, now.

The steps show what :class:`WalkState` says, not what they last did: each step observes it
and reopens (with the reason) when its input disappears. It is refreshed by the steps after
each action and by a light poll (a background thread) for changes made elsewhere: the
Deployments sidebar, ``accel-widgets delete`` in a terminal, another notebook.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import traitlets

from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.engine.targets import live_states

log = logging.getLogger(__name__)

#: live states in which a service cannot answer any more: the step that deployed it reopens
LOST = ("gone", "dead")


def lost_words(name: str, live: str) -> str:
    """Why a service the walk showed is not usable any more, and what to do."""
    if live == "dead":
        return f"service {name} is dead (its process stopped); deploy again"
    return f"service {name} is gone (deleted or stopped); deploy again"


class WalkState(traitlets.HasTraits):
    """The workspace and the live state of the services the walk shows.

    ``models`` and ``images`` are the refs (``name:version``) the workspace holds;
    ``services`` maps each recorded service to its state: asked live for the ones in
    ``watched`` (the walk's own), as recorded for the others. A service that is not
    recorded is absent (:meth:`service_live` says ``gone``).
    """

    models = traitlets.List(traitlets.Unicode())
    images = traitlets.List(traitlets.Unicode())
    services = traitlets.Dict(help="service name -> live state")
    watched = traitlets.Set(traitlets.Unicode(), help="services whose health is asked")
    refreshes = traitlets.Int(0, help="refreshes done so far: tests watch it move")

    def __init__(self, workspace: Workspace | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workspace = workspace or Workspace()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading ----------------------------------------------------------------------------

    def refresh(self) -> WalkState:
        """Read the workspace and the watched services' health now; observers see changes."""
        with self._lock:
            workspace = self.workspace
            models = [m.ref for m in workspace.list_models()]
            images = [i.ref for i in workspace.list_images()]
            services = live_states(workspace, self.watched)
            self.models = models
            self.images = images
            self.services = services
            self.refreshes += 1
        return self

    def watch(self, name: str) -> None:
        """Ask this service's health at every refresh (the walk shows it)."""
        self.watched = {*self.watched, name}

    def service_live(self, name: str) -> str:
        """``running``, ``starting``, ``unhealthy``, ``dead``... or ``gone`` (not recorded)."""
        return self.services.get(name, "gone")

    def has_model(self, model: Any) -> bool:
        return model.ref in self.models

    def has_image(self, image: Any) -> bool:
        return image.ref in self.images

    @property
    def empty(self) -> bool:
        return not (self.models or self.images or self.services)

    # -- the poll ---------------------------------------------------------------------------

    def start(self, interval: float = 2.0) -> None:
        """Refresh every ``interval`` seconds on a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll, args=(interval,), daemon=True, name="accel-walk-state"
        )
        self._thread.start()

    @property
    def polling(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if not Path(self.workspace.root).exists():
                return  # the workspace was removed (a test's temp folder): nothing to watch
            try:
                self.refresh()
            except Exception as exc:  # a poll must never take the kernel down; try again
                log.debug("walk state refresh failed: %s", exc)
