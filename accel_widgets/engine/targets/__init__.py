"""Deployment targets behind one interface: deploy, status, logs, delete.

``local`` (a server process on this machine) is the embedded default and needs no account;
``container`` runs a packaged image on this machine's Docker engine. Each is a
:class:`~accel_widgets.engine.targets.base.Target` in one registry; every call here looks the
service's recorded target up there, so widgets, the command line, the clean-up step and the
JupyterLab sidebar never care which target a service runs on. A package can add a target
through the ``accel_widgets.targets`` entry point group (an object or a class to
instantiate), as MLflow's deployment plugins do.

Whenever a service is read here, its target first reconciles the record with what is live
(:meth:`Target.reconcile`: a deploy that died midway is finished or undone), and a target
that raises anything while it is asked shows as that service's ``unknown (error ...)``
instead of breaking the listing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from accel_widgets.engine.checks.verdicts import artifact_check
from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ImageRecord,
    ModelRecord,
    ServiceRecord,
    Workspace,
)
from accel_widgets.engine.targets.base import (
    LIVE_STATES,
    RESERVED_SETTINGS,
    Setting,
    Target,
    same_settings,
)
from accel_widgets.engine.targets.container import ContainerTarget
from accel_widgets.engine.targets.local import LocalTarget
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
    "get_service",
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
    """Add a target to the registry (a later registration of the same name replaces it).

    A setting named like a parameter of :func:`deploy` or a flag of the ``deploy``,
    ``manifests`` or ``quota`` command (:data:`~.base.RESERVED_SETTINGS`) is refused here,
    with the names to avoid: registered, it would break every command line.
    """
    if not isinstance(target, Target):
        raise TypeError(f"{target!r} is not a Target")
    taken = sorted({s.name for s in target.settings} & RESERVED_SETTINGS)
    if taken:
        raise ServingError(
            f"the target {target.name!r} ({type(target).__module__}.{type(target).__name__}) "
            f"declares the setting{'s' if len(taken) > 1 else ''} {', '.join(taken)}, which "
            f"deploy() and the command line use themselves; rename "
            f"{'them' if len(taken) > 1 else 'it'} (reserved: "
            f"{', '.join(sorted(RESERVED_SETTINGS))})"
        )
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
for _module in ("k8s.kubernetes", "k8s.kserve", "azure.azureml"):
    try:
        _loaded = importlib.import_module(f"accel_widgets.engine.targets.{_module}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"accel_widgets.engine.targets.{_module}":
            raise
        continue
    register_target(_loaded.TARGET)

#: The registered target names (kept for callers that only need the list).
TARGETS = target_names()


def _settings(settings: Mapping[str, Any] | None, more: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` and the keyword shorthand as one mapping; a name given both ways is an
    error, not a silent choice."""
    given = dict(settings or {})
    twice = sorted(set(given) & set(more))
    if twice:
        raise ServingError(
            f"the setting{'s' if len(twice) > 1 else ''} {', '.join(twice)} "
            "was given twice (in settings= and as a keyword); give each once"
        )
    return given | dict(more)


def deploy(
    model: str | ModelRecord | ArtifactRecord,
    *,
    version: int | None = None,
    precision: str | None = None,
    name: str | None = None,
    target: str = "local",
    image: str | ImageRecord | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
    settings: Mapping[str, Any] | None = None,
    **more: Any,
) -> ServiceRecord:
    """Deploy a converted model as a gRPC service on ``target`` and wait until it answers.

    Parameters
    ----------
    model, version, precision:
        The workspace model and which artifact; when ``precision`` is None, the best that
        passed its checks (``Workspace.get_artifact``); ``model`` may be the record the step
        before handed on (a ModelRecord, or the ArtifactRecord itself). An INT8 artifact that
        was not recommended is still deployed when asked for, with a warning event.
    name:
        The service name (lowercase); defaults to the model name. A recorded service of
        that name is restarted in place when it is dead, or has the new version swapped
        in while it serves, on targets that can (``local``, ``container``); other targets
        say to delete it first.
    target:
        A registered target (:func:`target_names`): ``local`` (default), ``container``,
        ``kubernetes``, ``kserve`` or ``azureml``.
    image:
        For targets that run an image: ``"name:version"``, ``"name"`` (latest) or an
        :class:`ImageRecord`; default: the newest image packaged from the same artifact.
    settings:
        The target's own settings as one mapping (``get_target(target).settings``), e.g.
        ``{"host": ..., "port": ..., "auth": ...}``. A setting the target does not take is
        refused with the list it does take.
    more:
        Shorthand for ``settings``: ``deploy("m", port=8500)``. The names of this
        function's own parameters can never be settings (:data:`~.base.RESERVED_SETTINGS`).

    Returns
    -------
    ServiceRecord
        With ``address``, ``port``, ``key`` and ``info["ready_seconds"]``.
    """
    report = as_reporter(progress, cancel)
    chosen = get_target(target)
    resolved = chosen.resolve(_settings(settings, more))
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


def _model_flags(artifact) -> str:
    """``resnet50 --version 2 --precision int8``: the command-line words for one artifact
    (``package`` and ``deploy`` otherwise take the newest version's int8-first default)."""
    return (
        f"{artifact.model_name} --version {artifact.model_version} --precision {artifact.precision}"
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
                f"(`accel-widgets package {_model_flags(artifact)} --push REGISTRY/PATH`), or "
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
                f"{_model_flags(artifact)}`, or the Package step)"
            )
        record = max(made, key=lambda i: (i.created_at, i.version))
    if record.artifact_id != artifact.id:
        held = workspace.get_artifact_by_id(record.artifact_id)
        raise ServingError(
            f"image {record.name}:{record.version} holds {held.model_name}:{held.model_version} "
            f"{held.precision}, not {artifact.model_name}:{artifact.model_version} "
            f"{artifact.precision}; package that model (`accel-widgets package "
            f"{_model_flags(artifact)}`), or deploy the model the image holds (`accel-widgets "
            f"deploy {_model_flags(held)} --target TARGET --image {record.ref}`)"
        )
    return record


def manifests(
    model: str | ModelRecord | ArtifactRecord,
    *,
    version: int | None = None,
    precision: str | None = None,
    name: str | None = None,
    target: str = "kubernetes",
    image: str | ImageRecord | None = None,
    workspace: Workspace | None = None,
    settings: Mapping[str, Any] | None = None,
    **more: Any,
) -> list[dict[str, Any]]:
    """The objects ``deploy`` would create on ``target``, without contacting anything.

    ``settings`` (or the keyword shorthand) as for :func:`deploy`.
    """
    chosen = get_target(target)
    resolved = chosen.resolve(_settings(settings, more))
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
    """A service as recorded, with its live state checked now.

    ``error`` says why the state is ``unknown`` when its target raised something other
    than our own errors (a plugin's bug, a library's surprise).
    """

    service: ServiceRecord
    live: str  # running | starting | unhealthy | dead | unknown
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.live == "running"

    @property
    def shown(self) -> str:
        """The state as a person reads it: ``unknown (error RuntimeError: ...)``, or
        ``stopped (idle: no request for 600 s)`` for a service that stopped by itself."""
        if self.error:
            return f"{self.live} (error {self.error})"
        if self.live == "dead" and self.service.info.get("stopped"):
            return f"stopped ({self.service.info['stopped']})"
        return self.live


def _explain(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:200]


def _read(workspace: Workspace, service: ServiceRecord) -> tuple[ServiceRecord | None, str | None]:
    """The record reconciled by its target with what is live (None: nothing is left of the
    service), and why not when the target failed at it (the record is then kept as is)."""
    try:
        return get_target(service.target).reconcile(workspace, service), None
    except AccelError as exc:
        log.warning("cannot reconcile service %s: %s", service.name, exc)
        return service, None
    except Exception as exc:  # a plugin's bug must not break the listing
        log.warning("target %s failed on service %s", service.target, service.name, exc_info=True)
        return service, _explain(exc)


def _live(workspace: Workspace, service: ServiceRecord) -> tuple[str, str | None]:
    """The target's answer; ``unknown`` when its plugin is gone or it cannot be asked, with
    the error when it raised something unexpected."""
    try:
        return get_target(service.target).status(workspace, service), None
    except AccelError as exc:
        log.warning("cannot check service %s: %s", service.name, exc)
        return "unknown", None
    except Exception as exc:  # a plugin's bug: this service's state, not everyone's
        log.warning("target %s failed on service %s", service.target, service.name, exc_info=True)
        return "unknown", _explain(exc)


def _status(workspace: Workspace, service: ServiceRecord) -> ServiceStatus | None:
    service, error = _read(workspace, service)
    if service is None:
        return None
    if error is not None:
        return ServiceStatus(service, "unknown", error)
    live, error = _live(workspace, service)
    if live == "dead" and service.state != "starting":
        stopped = _stop_reason(workspace, service)
        if service.state != "dead" or service.info.get("stopped") != stopped:
            info = {**service.info, "stopped": stopped} if stopped else service.info
            with contextlib.suppress(AccelError):  # deleted meanwhile by another process
                service = workspace.update_service(service.name, state="dead", info=info)
    return ServiceStatus(service, live, error)


def _stop_reason(workspace: Workspace, service: ServiceRecord) -> str | None:
    """Why a dead service stopped, when its target can say (a plugin's bug says nothing)."""
    try:
        return get_target(service.target).stop_reason(workspace, service)
    except Exception:
        log.warning("target %s failed on service %s", service.target, service.name, exc_info=True)
        return None


def get_service(name: str, workspace: Workspace | None = None) -> ServiceRecord:
    """Service ``name`` as its target finds it now (reconciled with what is live)."""
    workspace = workspace or Workspace()
    service, _ = _read(workspace, workspace.get_service(name))
    if service is None:
        workspace.get_service(name)  # the "no service ..." error, with the names there are
        raise AssertionError("unreachable")  # pragma: no cover
    return service


def service_status(name: str, workspace: Workspace | None = None) -> ServiceStatus:
    workspace = workspace or Workspace()
    status = _status(workspace, workspace.get_service(name))
    if status is None:
        workspace.get_service(name)  # gone: the "no service ..." error
        raise AssertionError("unreachable")  # pragma: no cover
    return status


def list_services(workspace: Workspace | None = None) -> list[ServiceStatus]:
    """Every recorded service with its live state (a dead process shows as dead)."""
    workspace = workspace or Workspace()
    statuses = (_status(workspace, service) for service in workspace.list_services())
    return [status for status in statuses if status is not None]


def live_states(workspace: Workspace | None = None, check: Iterable[str] = ()) -> dict[str, str]:
    """Every recorded service's name -> its state, cheaply: the target is asked (a health
    call) only for the services named in ``check``; the others read as recorded.

    A service that is not recorded any more (deleted by the sidebar, the CLI or clean-up)
    is simply absent: see :func:`service_live`.
    """
    workspace = workspace or Workspace()
    wanted = set(check)
    states = {}
    for service in workspace.list_services():
        if service.name in wanted:
            status = _status(workspace, service)
            if status is not None:
                states[service.name] = status.live
        else:
            states[service.name] = service.state
    return states


def service_live(name: str, workspace: Workspace | None = None) -> str:
    """The live state of service ``name`` now; ``gone`` when it is not recorded any more."""
    return live_states(workspace, [name]).get(name, "gone")


def service_logs(name: str, lines: int = 50, workspace: Workspace | None = None) -> str:
    """The service's last ``lines`` log lines, from wherever its target keeps them."""
    workspace = workspace or Workspace()
    service = get_service(name, workspace)
    return get_target(service.target).logs(workspace, service, lines)


def delete_service(name: str, workspace: Workspace | None = None) -> ServiceRecord:
    """Stop a service and remove it from the workspace (first step of clean-up).

    Refused while a deploy of the same name is under way (it holds the service's lock):
    deleting under it would leave its server running with no record.
    """
    workspace = workspace or Workspace()
    service = workspace.get_service(name)
    target = get_target(service.target)
    with workspace.service_lock(name) as held:
        if not held:
            holder = workspace.lock_holder(name)
            raise ServingError(
                f"service {name} is being deployed right now"
                f"{f' (by pid {holder})' if holder else ''}; wait for that to finish, or stop "
                "it (Ctrl-C), then delete the service"
            )
        return target.delete(workspace, workspace.get_service(name))


def deploy_or_reuse(
    model: str | ModelRecord | ArtifactRecord,
    *,
    version: int | None = None,
    precision: str | None = None,
    name: str | None = None,
    target: str = "local",
    image: str | ImageRecord | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
    settings: Mapping[str, Any] | None = None,
    **more: Any,
) -> tuple[ServiceRecord, bool]:
    """Deploy, unless a healthy service of that name already serves the same artifact.

    A re-run notebook must not stop a working service and start it again, nor fail on
    "already exists". A dead service, or one that differs in artifact, target, image or a
    setting (``host``, ``port`` when one is asked for, ``auth``, ``tls``, the target's own),
    is replaced: in place on targets that can (:attr:`Target.replaces_in_place`: restarted,
    or the new version swapped in while the old one serves), else deleted and deployed
    again. ``settings`` as for :func:`deploy`. Returns ``(service, reused)``.
    """
    report = as_reporter(progress, cancel)
    workspace = workspace or Workspace()
    artifact = workspace.get_artifact(model, version, precision)
    name = name or artifact.model_name
    chosen = get_target(target)
    given = {k: v for k, v in _settings(settings, more).items() if v is not None}
    wanted_image = _image_for(workspace, artifact, image) if chosen.needs_image else None
    existing = next((s for s in workspace.list_services() if s.name == name), None)
    if existing is not None:
        same = (
            existing.artifact_id == artifact.id
            and existing.target == chosen.name
            and (wanted_image is None or existing.image_id == wanted_image.id)
            and same_settings(existing, chosen.resolve(given))
        )
        if same and service_status(name, workspace).healthy:
            report("deploy", 1.0, f"service {name} already serves {artifact.model_name}; reusing")
            return workspace.get_service(name), True
        if existing.target != chosen.name or not chosen.replaces_in_place:
            report("deploy", 0.0, f"replacing the earlier service {name} ({existing.state})")
            delete_service(name, workspace)
    service = deploy(
        artifact,
        name=name,
        target=chosen.name,
        image=wanted_image,
        workspace=workspace,
        progress=report,
        settings=given,
    )
    return service, False
