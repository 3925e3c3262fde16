"""The container target: a packaged image running on this machine's Docker engine.

``deploy`` runs the image made by the package step (pulling it back from its registry when
it was removed from the engine), with host networking where the engine has no bridge
network and a published loopback port where it has one. Port and API key reach the server
through its environment, never through the image or a log. Readiness is the server's own
gRPC health service, as a Kubernetes probe would see it; a container that exits while
starting is reported with its last log lines.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

from accel_widgets.engine import docker_engine
from accel_widgets.engine.package import ensure_local
from accel_widgets.engine.package_context import GRPC_PORT, LABEL, REST_PORT, workspace_label
from accel_widgets.engine.targets.base import (
    RUNTIME_SETTING,
    Setting,
    Target,
    check_exposure,
    free_port,
    health_state,
)
from accel_widgets.engine.targets.local import check_port
from accel_widgets.engine.workspace import (
    ArtifactRecord,
    ImageRecord,
    ServiceRecord,
    Workspace,
    check_name,
)
from accel_widgets.errors import ServingError
from accel_widgets.progress import Reporter

NETWORKS = ("auto", "host", "bridge")


def container_name(service: str) -> str:
    return f"accel-widgets-{service}"


def _has_bridge(client: Any) -> bool:
    return any(n.attrs.get("Driver") == "bridge" for n in client.networks.list(names=["bridge"]))


def _logs(container: Any, lines: int = 15) -> str:
    with contextlib.suppress(Exception):
        return container.logs(tail=lines).decode(errors="replace").rstrip()
    return ""


def _remove(container: Any, grace: int = 10) -> None:
    """SIGTERM (the server drains requests in flight), SIGKILL after ``grace`` s, remove."""
    import docker

    with contextlib.suppress(docker.errors.NotFound):
        if container.status == "running":
            container.stop(timeout=grace)
        container.remove(v=True, force=True)


def _clear_leftover(client: Any, workspace: Workspace, name: str) -> None:
    """A container of ours with this name but no service row (a crash): remove it."""
    import docker

    try:
        old = client.containers.get(container_name(name))
    except docker.errors.NotFound:
        return
    labels = old.labels or {}
    if labels.get(f"{LABEL}.workspace") != workspace_label(workspace):
        raise ServingError(
            f"a container named {old.name} exists and was not started by this workspace; "
            f"remove it (`docker rm -f {old.name}`) or choose another service name"
        )
    _remove(old, grace=2)


class ContainerTarget(Target):
    """The packaged image on this machine's Docker engine."""

    name = "container"
    title = "Container (Docker)"
    description = "the packaged image, run by this machine's Docker engine"
    capacity = "local"
    needs_image = True
    settings = (
        Setting("host", str, "127.0.0.1", "host address the service answers on"),
        Setting("port", int, 0, "gRPC port on the host; 0 picks a free one"),
        Setting("auth", bool, None, "require an API key (always on beyond loopback)"),
        Setting(
            "network",
            str,
            "auto",
            "host: share the host's network; bridge: publish the ports; auto: bridge when "
            "the engine has one",
            choices=NETWORKS,
        ),
        Setting("ready_timeout", float, 120.0, "seconds to wait for the model to load"),
        RUNTIME_SETTING,
        Setting("key", str, None, "use this API key instead of a generated one", ui=False),
    )

    def deploy(
        self,
        workspace: Workspace,
        artifact: ArtifactRecord,
        name: str,
        *,
        image: ImageRecord | None,
        settings: dict[str, Any],
        report: Reporter,
        image_reference: str | None = None,
    ) -> ServiceRecord:
        check_name(name, "service")
        if image is None:
            raise ServingError("the container target needs an image: package the model first")
        if name in {s.name for s in workspace.list_services()}:
            raise ServingError(
                f"a service named {name!r} already exists; delete it first "
                f"(`accel-widgets delete service {name}`) or choose another name"
            )
        host, port = settings["host"], settings["port"]
        auth = check_exposure(host, settings["auth"])
        check_port(host, port)
        client = docker_engine.connect()
        local_image = ensure_local(client, image, report)
        network = settings["network"]
        if network == "auto":
            network = "bridge" if _has_bridge(client) else "host"
        elif network == "bridge" and not _has_bridge(client):
            raise ServingError(
                "this Docker engine has no bridge network (dockerd --bridge=none); "
                "use network='host' (or 'auto')"
            )
        port = port or free_port(host)
        rest_port = free_port(host)
        key = (settings["key"] or secrets.token_urlsafe(32)) if auth else None
        _clear_leftover(client, workspace, name)
        recorded = {k: v for k, v in settings.items() if k not in ("key", "ready_timeout")}
        service = workspace.add_service(
            name,
            artifact,
            target=self.name,
            image=image,
            state="starting",
            address=host,
            port=port,
            key=key,
            info={
                "container": container_name(name),
                "image": image.tag,
                "network": network,
                "rest_port": rest_port,
                "auth": auth,
                "tls": False,
                "settings": {**recorded, "auth": auth},
            },
        )
        environment = {
            "ACCEL_WIDGETS_HOST": host if network == "host" else "0.0.0.0",
            "ACCEL_WIDGETS_RUNTIME": settings["runtime"],  # the image's config says "auto"
        }
        run: dict[str, Any] = {}
        command: list[str] = []
        if network == "host":
            environment |= {
                "ACCEL_WIDGETS_PORT": str(port),
                "ACCEL_WIDGETS_REST_PORT": str(rest_port),
            }
            run["network_mode"] = "host"
        else:
            run["ports"] = {f"{GRPC_PORT}/tcp": (host, port), f"{REST_PORT}/tcp": (host, rest_port)}
            if not auth:
                command.append("--insecure-no-auth")  # published on loopback only
        if key:
            environment["ACCEL_WIDGETS_API_KEYS"] = key
        container = None
        started = time.monotonic()
        try:
            report("deploy", 0.05, f"starting {image.tag} as {container_name(name)}")
            container = client.containers.run(
                local_image.id,
                command=command,
                name=container_name(name),
                detach=True,
                environment=environment,
                labels={
                    f"{LABEL}.service": name,
                    f"{LABEL}.workspace": workspace_label(workspace),
                    f"{LABEL}.image": image.ref,
                },
                stop_signal="SIGTERM",
                **run,
            )
            service = workspace.update_service(
                name, info={**service.info, "container_id": container.id}
            )
            self._wait_ready(container, service, settings["ready_timeout"], report, started)
        except BaseException:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.reload()
                    _remove(container, grace=2)
            workspace.remove_service(name)
            raise
        seconds = round(time.monotonic() - started, 2)
        report("deploy", 1.0, f"{name} ready on {host}:{port} in {seconds:.1f} s (container)")
        return workspace.update_service(
            name, state="running", info={**service.info, "ready_seconds": seconds}
        )

    @staticmethod
    def _wait_ready(
        container: Any, service: ServiceRecord, timeout: float, report: Reporter, started: float
    ) -> None:
        deadline = started + timeout
        while True:
            report.check()
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                raise ServingError(
                    f"the container {container.name} stopped while starting (exit code {code})."
                    f" Its last log lines:\n{_logs(container)}"
                )
            if container.status == "running" and health_state(service, timeout=1.0) == "running":
                return
            if time.monotonic() > deadline:
                raise ServingError(
                    f"the container {container.name} was not ready after {timeout:.0f} s "
                    f"(loading and warming up the model). Its log so far:\n{_logs(container)}"
                )
            elapsed = time.monotonic() - started
            report("deploy", None, f"loading and warming up the model ({elapsed:.1f} s)")
            time.sleep(0.05)

    def _container(self, service: ServiceRecord) -> Any | None:
        import docker

        client = docker_engine.connect(timeout=30)
        try:
            return client.containers.get(
                service.info.get("container_id") or container_name(service.name)
            )
        except docker.errors.NotFound:
            return None

    def status(self, workspace: Workspace, service: ServiceRecord) -> str:
        container = self._container(service)
        if container is None or container.status != "running":
            return "dead"
        if service.state == "starting":
            return "starting"
        return health_state(service)

    def logs(self, workspace: Workspace, service: ServiceRecord, lines: int = 50) -> str:
        container = self._container(service)
        return "" if container is None else _logs(container, lines)

    def delete(self, workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
        container = self._container(service)
        if container is not None:
            _remove(container)
        return workspace.remove_service(service.name)
