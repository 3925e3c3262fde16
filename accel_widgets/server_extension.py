"""The REST API behind the JupyterLab extension: services and models of the workspace.

Mounted under ``/accel-widgets/api`` by jupyter_server, behind Jupyter's own authentication
(token or password) and XSRF checks, like the contents API. Every read and change goes
through the engine (targets, workspace, cleanup, notebooks); there is no SQL here.

Every engine call runs on a worker thread (``asyncio.to_thread``), never on Jupyter's event
loop: a call may wait up to 30 s for SQLite's write lock, stop a process with a 10 s grace,
delete a model folder of gigabytes, or ask a Docker engine or a plugin's cluster, and the
loop serves every notebook, terminal and file of the session meanwhile.

Routes
------
``GET    /accel-widgets/api/services``              services with live health
``DELETE /accel-widgets/api/services/<name>``       stop the service and forget it
``GET    /accel-widgets/api/services/<name>/key``   the API key (for "copy key")
``POST   /accel-widgets/api/services/<name>/notebook`` ``{"path": folder}``: a scoring notebook
``GET    /accel-widgets/api/models``                model versions with their artifacts
``DELETE /accel-widgets/api/models/<name>/<version>`` delete a version (refused while used)
``POST   /accel-widgets/api/walkthrough``           ``{"path": folder}``: copy the walkthrough
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import psutil
import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from accel_widgets.engine.notebooks import copy_walkthrough, scoring_notebook
from accel_widgets.engine.package import delete_image, list_images
from accel_widgets.engine.targets import delete_service, get_target, list_services, targets
from accel_widgets.engine.verdicts import artifact_check
from accel_widgets.engine.workspace import Workspace, check_name, default_order, default_root
from accel_widgets.errors import (
    AccelError,
    DependencyError,
    DockerUnavailableError,
    NotFoundError,
)
from accel_widgets.sizes import FILE_MB, IMAGE_MB, round_mb

API = "accel-widgets/api"


def _status_for(exc: AccelError) -> int:
    if isinstance(exc, DockerUnavailableError):
        return 503  # the engine behind the call is down, not the request
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, DependencyError):
        return 409
    return 400


_workspaces: dict[Path, Workspace] = {}
_workspaces_lock = threading.Lock()


def shared_workspace() -> Workspace:
    """The workspace kernels use too (``$ACCEL_WIDGETS_WORKSPACE`` or the user default), once.

    Opening a :class:`Workspace` runs the schema script and a recovery sweep that may wait
    up to 30 s on SQLite's busy timeout; the sidebar polls every 5 s, so doing it per request
    (as this module once did) blocked Jupyter's event loop again and again. One instance per
    root is kept for the server's life (its methods open a connection per call, so sharing
    it between threads is safe); a workspace folder deleted meanwhile is opened afresh.
    """
    root = default_root()
    with _workspaces_lock:
        workspace = _workspaces.get(root)
        if workspace is None or not workspace.db_path.exists():
            workspace = _workspaces[root] = Workspace(root)
        return workspace


class _Handler(APIHandler):
    """JSON in and out; engine errors become 4xx answers with the engine's own words."""

    def workspace(self) -> Workspace:
        """The shared workspace (see :func:`shared_workspace`); call it off the loop."""
        return shared_workspace()

    async def engine(self, call: Any, *args: Any) -> Any:
        """``call(*args)`` on a worker thread: the event loop is never blocked by it."""
        return await asyncio.to_thread(call, *args)

    def send(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    def fail(self, exc: AccelError) -> None:
        self.send({"message": str(exc)}, _status_for(exc))

    def folder(self) -> Path:
        """The ``path`` of the JSON body, a folder inside the server's root, as a real path."""
        try:
            body = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError as exc:
            raise AccelError('the request body must be JSON like {"path": "folder"}') from exc
        relative = str(body.get("path", "") or "").strip("/")
        root = Path(self.settings["server_root_dir"]).expanduser().resolve()
        folder = (root / relative).resolve()
        if folder != root and root not in folder.parents:
            raise AccelError(f"{relative!r} is outside the folder JupyterLab serves")
        return folder

    def relative(self, path: Path) -> str:
        root = Path(self.settings["server_root_dir"]).expanduser().resolve()
        return path.resolve().relative_to(root).as_posix()


def _service_json(status, artifact) -> dict[str, Any]:
    """One service for the sidebar: where it listens, what it serves, its health now."""
    service = status.service
    try:
        title = get_target(service.target).title
    except AccelError:  # a target plugin that is no longer installed
        title = service.target
    return {
        "name": service.name,
        "target": service.target,
        "target_title": title,
        "image": service.info.get("image"),
        "address": f"{service.address}:{service.port}" if service.port else service.address,
        "state": service.state,
        "health": status.live,
        # Why the health is unknown, when the service's target (a plugin) failed at it.
        "error": status.error,
        "auth": bool(service.key),
        "pid": service.pid,
        "model": artifact.model_name,
        "version": artifact.model_version,
        "precision": artifact.precision,
        "ready_seconds": service.info.get("ready_seconds"),
    }


def _services(workspace: Workspace) -> dict[str, Any]:
    statuses = list_services(workspace)
    # A service's artifact cannot be deleted while the service exists (dependency order).
    rows = [
        _service_json(status, workspace.get_artifact_by_id(status.service.artifact_id))
        for status in statuses
    ]
    return {"services": rows, "workspace": str(workspace.root)}


class ServicesHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            payload = await self.engine(lambda: _services(self.workspace()))
        except AccelError as exc:
            return self.fail(exc)
        self.send(payload)


class ServiceHandler(_Handler):
    @tornado.web.authenticated
    async def delete(self, name: str) -> None:
        try:
            check_name(name, "service")
            removed = await self.engine(lambda: delete_service(name, self.workspace()))
        except AccelError as exc:
            return self.fail(exc)
        except (psutil.Error, OSError) as exc:  # the process table said no: say so, in JSON
            message = f"could not stop service {name}: {exc}; see `accel-widgets services`"
            return self.send({"message": message}, 500)
        self.send({"deleted": removed.name})


class ServiceKeyHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        try:
            check_name(name, "service")
            service = await self.engine(lambda: self.workspace().get_service(name))
        except AccelError as exc:
            return self.fail(exc)
        if not service.key:
            return self.fail(AccelError(f"service {name} has no key: it accepts loopback calls"))
        self.send({"name": name, "key": service.key})


class ServiceNotebookHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        try:
            check_name(name, "service")
            folder = self.folder()

            def write() -> tuple[Path, bool]:
                self.workspace().get_service(name)
                return scoring_notebook(name, folder)

            path, created = await self.engine(write)
        except AccelError as exc:
            return self.fail(exc)
        self.send({"path": self.relative(path), "created": created}, 201 if created else 200)


def _artifact_row(artifact) -> dict:
    """An artifact as the sidebar shows it: precision, size, and the check every screen
    shows (engine/verdicts.py), so no ✓ appears there that the Convert step would withhold."""
    check = artifact_check(artifact.report, artifact.precision)
    accuracy = artifact.report.get("accuracy")
    return {
        "precision": artifact.precision,
        "size_mb": round_mb(artifact.size_bytes / FILE_MB),
        "check": {"mark": check.mark, "text": check.text},
        "top1": accuracy["top1"] if accuracy else None,
        "photos": accuracy["n"] if accuracy else None,
    }


def _models(workspace: Workspace) -> list[dict[str, Any]]:
    rows = []
    for model in workspace.list_models():
        artifacts = workspace.list_artifacts(model)
        rows.append(
            {
                "name": model.name,
                "version": model.version,
                "kind": model.kind,
                "description": model.description,
                "artifacts": [_artifact_row(a) for a in sorted(artifacts, key=default_order)],
            }
        )
    return rows


class ModelsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            rows = await self.engine(lambda: _models(self.workspace()))
        except AccelError as exc:
            return self.fail(exc)
        self.send({"models": rows})


class ModelHandler(_Handler):
    @tornado.web.authenticated
    async def delete(self, name: str, version: str) -> None:
        try:
            check_name(name)
            deleted = await self.engine(lambda: self.workspace().delete_model(name, int(version)))
        except AccelError as exc:
            return self.fail(exc)
        self.send({"deleted": [m.ref for m in deleted]})


class TargetsHandler(_Handler):
    """Where services can run: the same registry the widgets and the CLI read."""

    @tornado.web.authenticated
    async def get(self) -> None:
        # The first call loads the plugins' entry points (imports): off the loop too.
        described = await self.engine(lambda: [t.describe() for t in targets()])
        self.send({"targets": described})


def _images(workspace: Workspace) -> list[dict[str, Any]]:
    return [
        {
            "name": s.image.name,
            "version": s.image.version,
            "tag": s.image.tag,
            "model": s.model,
            "model_name": s.artifact.model_name,
            "model_version": s.artifact.model_version,
            "precision": s.artifact.precision,
            "size_mb": round_mb(int(s.image.info.get("size_bytes") or 0) / IMAGE_MB),
            "base": s.image.info.get("base"),
            "present": s.present,
            "pushed": [p["ref"] for p in s.image.info.get("pushed", [])],
            "used_by": workspace.image_users(s.image),
        }
        for s in list_images(workspace)
    ]


class ImagesHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            rows = await self.engine(lambda: _images(self.workspace()))
        except AccelError as exc:
            return self.fail(exc)
        self.send({"images": rows})


class ImageHandler(_Handler):
    @tornado.web.authenticated
    async def delete(self, name: str, version: str) -> None:
        try:
            check_name(name, "image")
            deleted = await self.engine(lambda: delete_image(name, int(version), self.workspace()))
        except AccelError as exc:
            return self.fail(exc)
        self.send({"deleted": [i.ref for i in deleted]})


class WalkthroughHandler(_Handler):
    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            path, created = await self.engine(copy_walkthrough, self.folder())
        except AccelError as exc:
            return self.fail(exc)
        self.send({"path": self.relative(path), "created": created}, 201 if created else 200)


#: What the sidebar's "Stop idle" offers when the room sets no idle time-out: ten minutes.
ROOM_IDLE_SECONDS = 600.0


def room_idle_seconds() -> float:
    """The idle time the room stops services after: ``$ACCEL_WIDGETS_IDLE_TIMEOUT`` when a
    workshop set one (the same default deploys use), else :data:`ROOM_IDLE_SECONDS`."""
    try:
        value = float(os.environ.get("ACCEL_WIDGETS_IDLE_TIMEOUT") or 0)
    except ValueError:
        value = 0.0
    return value if value > 0 else ROOM_IDLE_SECONDS


def _room(workspace: Workspace) -> dict[str, Any]:
    """Every accel-widgets service on this machine this user can see, each marked when it
    is this workspace's own (the Services section above lists those)."""
    from accel_widgets.engine.targets.room import room_services

    mine = {str(workspace.root.resolve()), workspace.ident}
    rows = [{**s.to_dict(), "mine": s.workspace in mine} for s in room_services()]
    return {"services": rows, "idle_after": room_idle_seconds()}


class RoomHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            payload = await self.engine(lambda: _room(self.workspace()))
        except AccelError as exc:
            return self.fail(exc)
        self.send(payload)


class RoomStopIdleHandler(_Handler):
    """Stop the local services idle at least ``{"seconds": S}``: the sidebar asked first."""

    @tornado.web.authenticated
    async def post(self) -> None:
        from accel_widgets.engine.targets.room import room_services, stop_idle

        try:
            body = json.loads(self.request.body or b"{}")
            seconds = float(body.get("seconds", room_idle_seconds()))
        except (json.JSONDecodeError, TypeError, ValueError):
            return self.fail(AccelError('the request body must be JSON like {"seconds": 600}'))
        if not seconds > 0:
            return self.fail(AccelError(f"idle seconds must be more than 0, not {seconds:g}"))

        def stop() -> list[str]:
            return [s.name for s in stop_idle(room_services(containers=False), seconds)]

        stopped = await self.engine(stop)
        self.send({"stopped": stopped, "seconds": seconds})


_NAME = r"([^/]+)"


def _load_jupyter_server_extension(serverapp) -> None:
    """Register the routes (jupyter_server calls this when the extension is enabled)."""
    web_app = serverapp.web_app
    base = url_path_join(web_app.settings["base_url"], API)
    handlers = [
        (url_path_join(base, "services") + "/?", ServicesHandler),
        (url_path_join(base, "services", _NAME, "key"), ServiceKeyHandler),
        (url_path_join(base, "services", _NAME, "notebook"), ServiceNotebookHandler),
        (url_path_join(base, "services", _NAME), ServiceHandler),
        (url_path_join(base, "models") + "/?", ModelsHandler),
        (url_path_join(base, "models", _NAME, r"(\d+)"), ModelHandler),
        (url_path_join(base, "images") + "/?", ImagesHandler),
        (url_path_join(base, "images", _NAME, r"(\d+)"), ImageHandler),
        (url_path_join(base, "targets") + "/?", TargetsHandler),
        (url_path_join(base, "walkthrough"), WalkthroughHandler),
        (url_path_join(base, "room") + "/?", RoomHandler),
        (url_path_join(base, "room", "stop-idle"), RoomStopIdleHandler),
    ]
    web_app.add_handlers(".*$", handlers)
    # Open the workspace now, off the event loop, so the first sidebar poll does not wait.
    threading.Thread(target=_open_quietly, name="accel-widgets-workspace", daemon=True).start()
    serverapp.log.info("accel-widgets: REST API at %s", base)


def _open_quietly() -> None:
    """Warm :func:`shared_workspace`; a failure here is reported by the first request."""
    with contextlib.suppress(AccelError):
        shared_workspace()
