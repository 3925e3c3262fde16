"""Deployment targets behind one interface: deploy, status, logs, delete.

``local`` (a server process on this machine) is the embedded default and needs no account.
Widgets, the command line and the clean-up step call these functions and never care which
target a service runs on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from accel_widgets.engine.targets.local import delete_local, deploy_local, local_status
from accel_widgets.engine.workspace import ServiceRecord, Workspace
from accel_widgets.errors import ServingError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

TARGETS = ("local",)


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise ServingError(f"unknown target {target!r}; available here: {', '.join(TARGETS)}")
    return target


def deploy(
    model: str,
    *,
    version: int | None = None,
    precision: str | None = None,
    name: str | None = None,
    target: str = "local",
    host: str = "127.0.0.1",
    port: int = 0,
    auth: bool | None = None,
    key: str | None = None,
    tls: tuple[str, str] | None = None,
    ready_timeout: float = 120.0,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> ServiceRecord:
    """Deploy a converted model as a gRPC service and wait until it answers.

    Parameters
    ----------
    model, version, precision:
        The workspace model and which artifact (int8 before fp32 when ``precision`` is None).
    name:
        The service name (lowercase); defaults to the model name.
    host, port:
        Where to listen; port 0 picks a free port. Binding beyond loopback turns
        authentication on (an API key is generated unless ``key`` is given).
    auth:
        Force API-key authentication on or off (off is refused beyond loopback).
    tls:
        ``(cert_path, key_path)`` PEM files to serve over TLS.

    Returns
    -------
    ServiceRecord
        With ``address``, ``port``, ``key`` and ``info["ready_seconds"]``.
    """
    report = as_reporter(progress, cancel)
    _check_target(target)
    workspace = workspace or Workspace()
    artifact = workspace.get_artifact(model, version, precision)
    return deploy_local(
        workspace,
        artifact,
        name or artifact.model_name,
        host=host,
        port=port,
        auth=auth,
        key=key,
        tls=tls,
        ready_timeout=ready_timeout,
        report=report,
    )


@dataclass(frozen=True)
class ServiceStatus:
    """A service as recorded, with its live state checked now."""

    service: ServiceRecord
    live: str  # running | starting | unhealthy | dead

    @property
    def healthy(self) -> bool:
        return self.live == "running"


def service_status(name: str, workspace: Workspace | None = None) -> ServiceStatus:
    workspace = workspace or Workspace()
    service = workspace.get_service(name)
    return ServiceStatus(service, local_status(workspace, service))


def list_services(workspace: Workspace | None = None) -> list[ServiceStatus]:
    """Every recorded service with its live state (a dead process shows as dead)."""
    workspace = workspace or Workspace()
    statuses = []
    for service in workspace.list_services():
        live = local_status(workspace, service)
        if live == "dead" and service.state != "dead":
            service = workspace.update_service(service.name, state="dead")
        statuses.append(ServiceStatus(replace(service), live))
    return statuses


def service_logs(name: str, lines: int = 50, workspace: Workspace | None = None) -> str:
    workspace = workspace or Workspace()
    service = workspace.get_service(name)
    if service.log_path is None or not service.log_path.is_file():
        return ""
    return "\n".join(service.log_path.read_text(errors="replace").splitlines()[-lines:])


def delete_service(name: str, workspace: Workspace | None = None) -> ServiceRecord:
    """Stop a service and remove it from the workspace (first step of clean-up)."""
    workspace = workspace or Workspace()
    return delete_local(workspace, workspace.get_service(name))


def deploy_or_reuse(
    model: str,
    *,
    version: int | None = None,
    precision: str | None = None,
    name: str | None = None,
    target: str = "local",
    host: str = "127.0.0.1",
    port: int = 0,
    auth: bool | None = None,
    tls: tuple[str, str] | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
    **deploy_options,
) -> tuple[ServiceRecord, bool]:
    """Deploy, unless a healthy service of that name already serves the same artifact.

    A re-run notebook must not stop a working service and start it again, nor fail on
    "already exists". A dead service, or one that differs in artifact, target, address,
    port (when one is asked for), auth or TLS, is replaced. Returns ``(service, reused)``.
    """
    report = as_reporter(progress, cancel)
    workspace = workspace or Workspace()
    artifact = workspace.get_artifact(model, version, precision)
    name = name or artifact.model_name
    existing = next((s for s in workspace.list_services() if s.name == name), None)
    if existing is not None:
        same = (
            existing.artifact_id == artifact.id
            and existing.target == target
            and existing.address == host
            and port in (0, existing.port)
            and (auth is None or bool(existing.key) == auth)
            and existing.use_ssl == bool(tls)
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
        target=target,
        host=host,
        port=port,
        auth=auth,
        tls=tls,
        workspace=workspace,
        progress=report,
        **deploy_options,
    )
    return service, False
