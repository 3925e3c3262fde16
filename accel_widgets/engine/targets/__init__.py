"""Deployment targets behind one interface: deploy, status, logs, delete.

``local`` (a server process on this machine) is the embedded default and needs no account;
``container`` runs a packaged image on this machine's Docker engine. Each is a
:class:`~accel_widgets.engine.targets.base.Target` in one registry; every call here looks the
service's recorded target up there, so widgets, the command line, the clean-up step and the
JupyterLab sidebar never care which target a service runs on. A package can add a target
through the ``accel_widgets.targets`` entry point group (an object or a class to
instantiate), as MLflow's deployment plugins do.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from accel_widgets.engine.targets.base import LIVE_STATES, Setting, Target
from accel_widgets.engine.targets.container import ContainerTarget
from accel_widgets.engine.targets.local import LocalTarget
from accel_widgets.engine.verdicts import artifact_check
from accel_widgets.engine.workspace import ImageRecord, ServiceRecord, Workspace
from accel_widgets.errors import AccelError, ServingError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

__all__ = [
    "LIVE_STATES",
    "ServiceStatus",
    "Setting",
    "Target",
    "delete_service",
    "deploy",
    "deploy_or_reuse",
    "get_target",
    "list_services",
    "manifests",
    "register_target",
    "service_logs",
    "service_status",
    "target_names",
    "targets",
]

log = logging.getLogger(__name__)

_REGISTRY: dict[str, Target] = {}
_PLUGINS_LOADED = False


def register_target(target: Target) -> Target:
    """Add a target to the registry (a later registration of the same name replaces it)."""
    if not isinstance(target, Target):
        raise TypeError(f"{target!r} is not a Target")
    _REGISTRY[target.name] = target
    return target


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for entry in importlib.metadata.entry_points(group="accel_widgets.targets"):
        try:
            loaded = entry.load()
            register_target(loaded() if isinstance(loaded, type) else loaded)
        except Exception as exc:  # a broken plugin must not take the built-in targets down
            log.warning("target plugin %s could not be loaded: %s", entry.name, exc)


def targets() -> list[Target]:
    """Every registered target, the embedded default first."""
    _load_plugins()
    return list(_REGISTRY.values())


def target_names() -> tuple[str, ...]:
    return tuple(t.name for t in targets())


def get_target(name: str) -> Target:
    """The target called ``name``, or an error listing the ones available here."""
    _load_plugins()
    target = _REGISTRY.get(name.strip().lower() if isinstance(name, str) else name)
    if target is None:
        raise ServingError(f"unknown target {name!r}; available here: {', '.join(target_names())}")
    return target


register_target(LocalTarget())
register_target(ContainerTarget())
# Targets that talk to remote engines live in their own modules, each exposing ``TARGET``;
# their client libraries (kubernetes, azure-*) are imported only when a call needs them.
for _module in ("kubernetes", "kserve", "azureml"):
    try:
        _loaded = importlib.import_module(f"accel_widgets.engine.targets.{_module}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"accel_widgets.engine.targets.{_module}":
            raise
        continue
    register_target(_loaded.TARGET)

#: The registered target names (kept for callers that only need the list).
TARGETS = target_names()


def deploy(
    model: str,
    *,
    version: int | None = None,
    precision: str | None = None,
    name: str | None = None,
    target: str = "local",
    image: str | ImageRecord | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
    **settings: Any,
) -> ServiceRecord:
    """Deploy a converted model as a gRPC service on ``target`` and wait until it answers.

    Parameters
    ----------
    model, version, precision:
        The workspace model and which artifact; when ``precision`` is None, the best that
        passed its checks (``Workspace.get_artifact``). An INT8 artifact that was not
        recommended is still deployed when asked for, with a warning event.
    name:
        The service name (lowercase); defaults to the model name.
    target:
        A registered target (:func:`target_names`): ``local`` (default), ``container``,
        ``kubernetes``, ``kserve`` or ``azureml``.
    image:
        For targets that run an image: ``"name:version"``, ``"name"`` (latest) or an
        :class:`ImageRecord`; default: the newest image packaged from the same artifact.
    settings:
        The target's own settings (``get_target(target).settings``), e.g. ``host``,
        ``port``, ``auth`` for both built-in targets. A setting the target does not take
        is refused with the list it does take.

    Returns
    -------
    ServiceRecord
        With ``address``, ``port``, ``key`` and ``info["ready_seconds"]``.
    """
    report = as_reporter(progress, cancel)
    chosen = get_target(target)
    resolved = chosen.resolve(settings)
    workspace = workspace or Workspace()
    artifact = workspace.get_artifact(model, version, precision)
    check = artifact_check(artifact.report, artifact.precision)
    if check.mark == "warn":
        report(
            "deploy",
            None,
            f"warning: {artifact.precision} of {artifact.model_name} is {check.text}",
        )
    record = _image_for(workspace, artifact, image) if chosen.needs_image else None
    if image is not None and not chosen.needs_image:
        raise ServingError(
            f"the {chosen.name} target runs the converted model itself and takes no image; "
            "leave the image out, or choose a target that runs images (container)"
        )
    return chosen.deploy(
        workspace,
        artifact,
        name or artifact.model_name,
        image=record,
        settings=resolved,
        report=report,
        image_reference=image if isinstance(image, str) and "/" in image else None,
    )


def _image_for(workspace: Workspace, artifact, image: str | ImageRecord | None) -> ImageRecord:
    """The image to run: the one named (workspace ``name[:version]``, or a registry reference
    it was pushed as), or the newest packaged from ``artifact``."""
    if isinstance(image, ImageRecord):
        record = image
    elif image and "/" in image:
        pushed = [
            i
            for i in workspace.list_images()
            if image == i.tag or image in [p["ref"] for p in i.info.get("pushed", [])]
        ]
        if not pushed:
            raise ServingError(
                f"no image in the workspace was pushed as {image}; package and push it first "
                f"(`accel-widgets package {artifact.model_name} --push REGISTRY/PATH`), or "
                "name a workspace image (`accel-widgets images`)"
            )
        record = pushed[-1]
    elif image:
        image_name, _, version = image.partition(":")
        record = workspace.get_image(image_name, int(version) if version.isdigit() else None)
    else:
        made = [i for i in workspace.list_images() if i.artifact_id == artifact.id]
        if not made:
            raise ServingError(
                f"no image holds the {artifact.precision} artifact of {artifact.model_name}:"
                f"{artifact.model_version}; package it first (`accel-widgets package "
                f"{artifact.model_name}`, or the Package step)"
            )
        record = max(made, key=lambda i: (i.created_at, i.version))
    if record.artifact_id != artifact.id:
        held = workspace.get_artifact_by_id(record.artifact_id)
        raise ServingError(
            f"image {record.name}:{record.version} holds {held.model_name}:{held.model_version} "
            f"{held.precision}, not {artifact.model_name}:{artifact.model_version} "
            f"{artifact.precision}; package that model, or deploy the model the image holds"
        )
    return record


def manifests(
    model: str,
    *,
    version: int | None = None,
    precision: str | None = None,
    name: str | None = None,
    target: str = "kubernetes",
    image: str | ImageRecord | None = None,
    workspace: Workspace | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """The objects ``deploy`` would create on ``target``, without contacting anything."""
    chosen = get_target(target)
    resolved = chosen.resolve(settings)
    workspace = workspace or Workspace()
    artifact = workspace.get_artifact(model, version, precision)
    record = _image_for(workspace, artifact, image) if chosen.needs_image else None
    return chosen.manifests(
        workspace,
        artifact,
        name or artifact.model_name,
        image=record,
        settings=resolved,
        image_reference=image if isinstance(image, str) and "/" in image else None,
    )


@dataclass(frozen=True)
class ServiceStatus:
    """A service as recorded, with its live state checked now."""

    service: ServiceRecord
    live: str  # running | starting | unhealthy | dead | unknown

    @property
    def healthy(self) -> bool:
        return self.live == "running"


def _live(workspace: Workspace, service: ServiceRecord) -> str:
    """The target's answer; ``unknown`` when its plugin is gone or it cannot be asked."""
    try:
        return get_target(service.target).status(workspace, service)
    except AccelError as exc:
        log.warning("cannot check service %s: %s", service.name, exc)
        return "unknown"


def service_status(name: str, workspace: Workspace | None = None) -> ServiceStatus:
    workspace = workspace or Workspace()
    service = workspace.get_service(name)
    return ServiceStatus(service, _live(workspace, service))


def list_services(workspace: Workspace | None = None) -> list[ServiceStatus]:
    """Every recorded service with its live state (a dead process shows as dead)."""
    workspace = workspace or Workspace()
    statuses = []
    for service in workspace.list_services():
        live = _live(workspace, service)
        if live == "dead" and service.state != "dead":
            with contextlib.suppress(AccelError):  # deleted meanwhile by another process
                service = workspace.update_service(service.name, state="dead")
        statuses.append(ServiceStatus(replace(service), live))
    return statuses


def live_states(workspace: Workspace | None = None, check: Iterable[str] = ()) -> dict[str, str]:
    """Every recorded service's name -> its state, cheaply: the target is asked (a health
    call) only for the services named in ``check``; the others read as recorded.

    A service that is not recorded any more (deleted by the sidebar, the CLI or clean-up)
    is simply absent: see :func:`service_live`.
    """
    workspace = workspace or Workspace()
    wanted = set(check)
    return {
        service.name: _live(workspace, service) if service.name in wanted else service.state
        for service in workspace.list_services()
    }


def service_live(name: str, workspace: Workspace | None = None) -> str:
    """The live state of service ``name`` now; ``gone`` when it is not recorded any more."""
    return live_states(workspace, [name]).get(name, "gone")


def service_logs(name: str, lines: int = 50, workspace: Workspace | None = None) -> str:
    """The service's last ``lines`` log lines, from wherever its target keeps them."""
    workspace = workspace or Workspace()
    service = workspace.get_service(name)
    return get_target(service.target).logs(workspace, service, lines)


def delete_service(name: str, workspace: Workspace | None = None) -> ServiceRecord:
    """Stop a service and remove it from the workspace (first step of clean-up)."""
    workspace = workspace or Workspace()
    service = workspace.get_service(name)
    return get_target(service.target).delete(workspace, service)


def _same(target: Target, existing: ServiceRecord, settings: dict[str, Any]) -> bool:
    """Whether a running service was deployed with what is asked now.

    The target's settings are resolved (what was not asked takes the target's default) and
    compared with the record: ``host`` against the address, ``port`` unless 0 (any free
    port), ``auth`` unless None (the target decides), ``tls`` as on or off, and every other
    setting against what was recorded at deploy time.
    """
    recorded = existing.info.get("settings", {})
    for key, value in target.resolve(settings).items():
        if key in ("key", "ready_timeout"):
            continue
        if key == "host":
            same = existing.address == value
        elif key == "port":
            same = value in (0, None, existing.port)
        elif key == "auth":
            same = value is None or bool(existing.key) == value
        elif key == "tls":
            same = existing.use_ssl == bool(value)
        else:
            same = value is None or recorded.get(key) == value
        if not same:
            return False
    return True


def deploy_or_reuse(
    model: str,
    *,
    version: int | None = None,
    precision: str | None = None,
    name: str | None = None,
    target: str = "local",
    image: str | ImageRecord | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
    **settings: Any,
) -> tuple[ServiceRecord, bool]:
    """Deploy, unless a healthy service of that name already serves the same artifact.

    A re-run notebook must not stop a working service and start it again, nor fail on
    "already exists". A dead service, or one that differs in artifact, target, image or a
    setting (``host``, ``port`` when one is asked for, ``auth``, ``tls``, the target's own),
    is replaced. ``settings`` are the target's, as for :func:`deploy`. Returns
    ``(service, reused)``.
    """
    report = as_reporter(progress, cancel)
    workspace = workspace or Workspace()
    artifact = workspace.get_artifact(model, version, precision)
    name = name or artifact.model_name
    chosen = get_target(target)
    settings = {k: v for k, v in settings.items() if v is not None}
    wanted_image = _image_for(workspace, artifact, image) if chosen.needs_image else None
    existing = next((s for s in workspace.list_services() if s.name == name), None)
    if existing is not None:
        same = (
            existing.artifact_id == artifact.id
            and existing.target == chosen.name
            and (wanted_image is None or existing.image_id == wanted_image.id)
            and _same(chosen, existing, settings)
        )
        if same and service_status(name, workspace).healthy:
            report("deploy", 1.0, f"service {name} already serves {artifact.model_name}; reusing")
            return existing, True
        report("deploy", 0.0, f"replacing the earlier service {name} ({existing.state})")
        delete_service(name, workspace)
    service = deploy(
        artifact.model_name,
        version=artifact.model_version,
        precision=artifact.precision,
        name=name,
        target=chosen.name,
        image=wanted_image,
        workspace=workspace,
        progress=report,
        **settings,
    )
    return service, False
