"""The container target: a packaged image running on this machine's Docker engine.

``deploy`` runs the image made by the package step (found by its recorded id, or pulled back
from its registry when it was removed from the engine), with host networking where the
engine has no bridge network and a published loopback port where it has one. Readiness is
the server's own health: its REST ``/v2/health/ready`` on the container's own REST port; a
container that exits while starting is reported with its last log lines.

Keys and names
--------------
The API key reaches the server as a read-only file mounted at
``/run/secrets/accel-widgets-api-keys`` (``ACCEL_WIDGETS_API_KEYS_FILE`` names it), never
through the image, the environment or a log, so ``docker inspect`` shows a path, not a key.
The file must be readable by the container's user and nobody else: when this user is not
root the container runs as this user (uid:gid) and mounts the service's own 0600 key file;
when it is root, the container keeps the image's unprivileged user and mounts a copy owned
by that uid (0400) in the service's 0700 folder; on a rootless engine, the container's root
is this user. Container names carry the workspace's id (``accel-widgets-<id>-<service>-
<run>``) and every container carries the workspace and service as labels, so two
workspaces on one engine never meet by name and a delete removes only its own.

Like the local target, each start is a run recorded as ``pending`` until ready, under the
service's lock, and reconciled with what Docker reports whenever the service is read
(:meth:`ContainerTarget.reconcile`); a dead service starts again on its ports with its key;
with host networking a new version is swapped in on the same port (SO_REUSEPORT, as the
local target does). With bridge networking Docker publishes a host port for one container
only, so there the old container stops before the new one starts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from accel_widgets.engine.packaging import docker_engine
from accel_widgets.engine.packaging.package import ensure_local, package_command
from accel_widgets.engine.packaging.package_context import (
    GRPC_PORT,
    LABEL,
    REST_PORT,
    SERVING_UID,
    workspace_label,
)
from accel_widgets.engine.store.keys import new_key
from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ImageRecord,
    ServiceRecord,
    Workspace,
    check_name,
    write_private,
)
from accel_widgets.engine.targets.base import (
    IDLE_TIMEOUT_SETTING,
    RUNTIME_SETTING,
    Setting,
    Target,
    check_exposure,
    free_port,
    health_state,
    idle_timeout,
    port_free,
    same_settings,
)
from accel_widgets.engine.targets.processes import check_port
from accel_widgets.errors import ServingError
from accel_widgets.progress import Reporter
from accel_widgets.serving.config import IDLE_LOG_PREFIX

NETWORKS = ("auto", "host", "bridge")
#: Where the key file is mounted in the container (read-only).
SECRET_PATH = "/run/secrets/accel-widgets-api-keys"
#: The root user's copy of a key, owned by the image's user (see the module docstring).
CONTAINER_KEYS = "container-keys"
#: Answers HTTP on loopback directly, whatever proxy the environment names.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def container_prefix(workspace: Workspace, service: str) -> str:
    """``accel-widgets-alice-3f9a2c1b-resnet50``: the start of the service's container names."""
    return f"accel-widgets-{workspace.ident}-{service}"


def container_name(workspace: Workspace, service: str, run: str) -> str:
    """One run's container: the prefix and the run's id (two exist during a swap)."""
    return f"{container_prefix(workspace, service)}-{run}"


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
        container.reload()
        if container.status == "running":
            container.stop(timeout=grace)
        container.remove(v=True, force=True)


def _get(client: Any, reference: str | None) -> Any | None:
    import docker

    if not reference:
        return None
    try:
        return client.containers.get(reference)
    except docker.errors.NotFound:
        return None


def _ours(client: Any, workspace: Workspace, name: str) -> list[Any]:
    """Every container of service ``name`` of this workspace (by labels, never by name)."""
    labels = [f"{LABEL}.workspace={workspace_label(workspace)}", f"{LABEL}.service={name}"]
    return client.containers.list(all=True, filters={"label": labels})


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)


def _rest_ready(host: str, rest_port: int | None) -> bool:
    """Whether the server on ``rest_port`` says it is ready (``/v2/health/ready``: 200)."""
    if not rest_port:
        return False
    address = _loopback(host)
    address = f"[{address}]" if ":" in address else address
    try:
        with _NO_PROXY.open(f"http://{address}:{rest_port}/v2/health/ready", timeout=1) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _docker_healthy(container: Any) -> bool:
    health = (container.attrs.get("State") or {}).get("Health") or {}
    return health.get("Status") == "healthy"


def _secret(client: Any, workspace: Workspace, name: str) -> tuple[str, str | None]:
    """The key file to mount, and the user to run as (None: the image's own)."""
    key_file = workspace.key_file(name)
    info = client.info()
    if any("rootless" in option for option in info.get("SecurityOptions") or []):
        return str(key_file), "0:0"  # the engine's root is this user
    if os.geteuid() != 0:
        return str(key_file), f"{os.geteuid()}:{os.getegid()}"
    copy = workspace.service_folder(name) / CONTAINER_KEYS
    write_private(copy, key_file.read_text(encoding="utf-8"))
    os.chown(copy, SERVING_UID, SERVING_UID)
    os.chmod(copy, 0o400)
    return str(copy), None


class ContainerTarget(Target):
    """The packaged image on this machine's Docker engine."""

    name = "container"
    title = "Container (Docker)"
    description = "the packaged image, run by this machine's Docker engine"
    capacity = "local"
    needs_image = True
    replaces_in_place = True
    settings = (
        Setting("host", str, "127.0.0.1", "host address the service answers on", capacity=False),
        Setting("port", int, 0, "gRPC port on the host; 0 picks a free one", capacity=False),
        Setting(
            "auth", bool, None, "require an API key (always on beyond loopback)", capacity=False
        ),
        Setting(
            "network",
            str,
            "auto",
            "host: share the host's network; bridge: publish the ports; auto: bridge when "
            "the engine has one",
            choices=NETWORKS,
        ),
        Setting(
            "ready_timeout", float, 120.0, "seconds to wait for the model to load", capacity=False
        ),
        RUNTIME_SETTING,
        IDLE_TIMEOUT_SETTING,
        Setting("key", str, None, "use this API key instead of a generated one", ui=False),
    )

    # -- deploy --

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
        with workspace.service_lock(name) as held:
            if not held:
                existing = workspace.find_service(name)
                holder = workspace.lock_holder(name)
                raise ServingError(
                    f"a service named {name!r} already exists "
                    f"({existing.state if existing else 'starting'}: another deploy of it is "
                    f"under way{f', pid {holder}' if holder else ''}); wait for it to finish, "
                    "or choose another name"
                )
            existing = workspace.find_service(name)
            if existing is not None:
                existing = self._settle(workspace, existing, abandon=True)
            live = None
            if existing is not None:
                if existing.target != self.name:
                    raise ServingError(
                        f"a service named {name!r} already exists on the {existing.target} "
                        f"target; delete it first (`accel-widgets delete service {name}`) or "
                        "choose another name"
                    )
                live = self.status(workspace, existing)
                if (
                    live in ("running", "unhealthy")
                    and existing.artifact_id == artifact.id
                    and existing.image_id == image.id
                    and same_settings(existing, settings)
                ):
                    raise ServingError(
                        f"a service named {name!r} already exists ({live}) and runs this image "
                        f"with these settings; delete it first (`accel-widgets delete service "
                        f"{name}`) or choose another name"
                    )
            return self._start(workspace, artifact, image, name, settings, report, existing, live)

    def _start(
        self,
        workspace: Workspace,
        artifact: ArtifactRecord,
        image: ImageRecord,
        name: str,
        settings: Mapping[str, Any],
        report: Reporter,
        existing: ServiceRecord | None,
        live: str | None,
    ) -> ServiceRecord:
        host = settings["host"]
        auth = check_exposure(host, settings["auth"])
        client = docker_engine.connect()
        local_image = ensure_local(client, image, report, workspace)
        if (local_image.labels or {}).get(f"{LABEL}.keys") != "file":
            raise ServingError(
                f"image {image.ref} was packaged by an older accel-widgets, whose server takes "
                "its API key from the environment (where `docker inspect` shows it); package "
                f"it again (`{package_command(workspace, image)} --no-cache`)"
            )
        network = settings["network"]
        if network == "auto":
            network = "bridge" if _has_bridge(client) else "host"
        elif network == "bridge" and not _has_bridge(client):
            raise ServingError(
                "this Docker engine has no bridge network (dockerd --bridge=none); "
                "use network='host' (or 'auto')"
            )
        old = _get(client, existing.info.get("container_id")) if existing else None
        serving = old is not None and live in ("running", "unhealthy")
        shares = bool(
            serving
            and network == "host"
            and existing.info.get("network") == "host"
            and existing.info.get("reuse_port")
            and existing.address == host
        )
        if settings["port"]:
            port = settings["port"]
        elif existing is not None and existing.port and (serving or port_free(host, existing.port)):
            port = existing.port  # the same port: clients keep their address
        else:
            port = free_port(host)
        if serving and port == existing.port and not shares:
            report("deploy", 0.02, f"stopping the old container of {name} first (it cannot share)")
            _remove(old)
            serving = False
        if not (serving and port == existing.port):
            check_port(host, port)
        rest_port = free_port(host)
        key = (
            (settings["key"] or (existing.key if existing else None) or new_key()) if auth else None
        )
        run = secrets.token_hex(3)
        cname = container_name(workspace, name, run)
        pending = {
            "container": cname,
            "container_id": None,
            "rest_port": rest_port,
            "artifact_id": artifact.id,
            "image_id": image.id,
            "deadline": time.time() + float(settings["ready_timeout"]),
        }
        recorded = {k: v for k, v in settings.items() if k not in ("key", "ready_timeout")}
        recorded["idle_timeout"] = idle_timeout(settings, self.name)
        info = {
            "image": image.tag,
            "network": network,
            "auth": auth,
            "tls": False,
            "settings": {**recorded, "auth": auth},
            "pending": pending,
        }
        old_key = existing.key if existing else None
        if existing is None:
            self._clear_leftovers(client, workspace, name, keep=())
            service = workspace.add_service(
                name,
                artifact,
                target=self.name,
                image=image,
                state="starting",
                address=host,
                port=port,
                key=key,
                info=info,
            )
        else:
            if key != old_key:
                workspace.update_service(name, key=key)
            service = workspace.update_service(name, info={**existing.info, **info})
        container = None
        started = time.monotonic()
        try:
            container = self._run(
                client, workspace, local_image, image, name, cname, run, host, port, rest_port,
                network, auth, settings["runtime"], recorded["idle_timeout"], report,
            )  # fmt: skip
            pending = {**pending, "container_id": container.id}
            service = workspace.update_service(name, info={**service.info, "pending": pending})
            self._wait_ready(container, host, rest_port, settings["ready_timeout"], report, started)
        except BaseException:
            if container is not None:
                with contextlib.suppress(Exception):
                    _remove(container, grace=2)
            if existing is None:
                workspace.remove_service(name)
                self._forget_secret(workspace, name)
            else:
                with contextlib.suppress(Exception):
                    current = workspace.get_service(name)
                    back = {k: v for k, v in current.info.items() if k != "pending"}
                    workspace.update_service(name, info=back)
                    if key != old_key:
                        workspace.update_service(name, key=old_key)
            raise
        seconds = round(time.monotonic() - started, 2)
        service = self._switch(workspace, workspace.get_service(name), pending, seconds, host)
        if service.info.get("retiring"):
            report("deploy", 0.98, f"stopping the old container of {name} (finishing requests)")
        service = self._retire(client, workspace, service)
        report("deploy", 1.0, f"{name} ready on {host}:{port} in {seconds:.1f} s (container)")
        return service

    def _run(
        self,
        client: Any,
        workspace: Workspace,
        local_image: Any,
        image: ImageRecord,
        name: str,
        cname: str,
        run: str,
        host: str,
        port: int,
        rest_port: int,
        network: str,
        auth: bool,
        runtime: str,
        idle: float,
        report: Reporter,
    ) -> Any:
        """Start one run's container: the image by id, the key as a mounted file."""
        import docker

        environment = {
            "ACCEL_WIDGETS_HOST": host if network == "host" else "0.0.0.0",
            "ACCEL_WIDGETS_RUNTIME": runtime,  # the image's config says "auto"
            "ACCEL_WIDGETS_IDLE_TIMEOUT": f"{idle:g}",
        }
        options: dict[str, Any] = {}
        command: list[str] = []
        if network == "host":
            environment |= {
                "ACCEL_WIDGETS_PORT": str(port),
                "ACCEL_WIDGETS_REST_PORT": str(rest_port),
                "ACCEL_WIDGETS_REUSE_PORT": "1",  # a later version may be swapped in
            }
            options["network_mode"] = "host"
        else:
            options["ports"] = {
                f"{GRPC_PORT}/tcp": (host, port),
                f"{REST_PORT}/tcp": (host, rest_port),
            }
            if not auth:
                command.append("--insecure-no-auth")  # published on loopback only
        if auth:
            source, user = _secret(client, workspace, name)
            options["mounts"] = [
                docker.types.Mount(SECRET_PATH, source, type="bind", read_only=True)
            ]
            environment["ACCEL_WIDGETS_API_KEYS_FILE"] = SECRET_PATH
            if user:
                options["user"] = user
        report("deploy", 0.05, f"starting {image.tag} as {cname}")
        return client.containers.run(
            local_image.id,
            command=command,
            name=cname,
            detach=True,
            environment=environment,
            labels={
                f"{LABEL}.service": name,
                f"{LABEL}.workspace": workspace_label(workspace),
                f"{LABEL}.image": image.ref,
                f"{LABEL}.run": run,
            },
            stop_signal="SIGTERM",
            **options,
        )

    @staticmethod
    def _wait_ready(
        container: Any, host: str, rest_port: int, timeout: float, report: Reporter, started: float
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
            if container.status == "running" and _rest_ready(host, rest_port):
                return
            if time.monotonic() > deadline:
                raise ServingError(
                    f"the container {container.name} was not ready after {timeout:.0f} s "
                    f"(loading and warming up the model). Its log so far:\n{_logs(container)}"
                )
            elapsed = time.monotonic() - started
            report("deploy", None, f"loading and warming up the model ({elapsed:.1f} s)")
            time.sleep(0.1)

    # -- the record and what Docker runs --

    @staticmethod
    def _switch(
        workspace: Workspace,
        service: ServiceRecord,
        pending: Mapping[str, Any],
        seconds: float | None,
        address: str | None = None,
    ) -> ServiceRecord:
        """Make the pending run the one the record names; the one it replaces retires."""
        info = {k: v for k, v in service.info.items() if k not in ("pending", "retiring")}
        previous = service.info.get("container_id")
        if previous and previous != pending["container_id"] and service.state != "starting":
            info["retiring"] = {"container_id": previous}
        info |= {
            "container": pending["container"],
            "container_id": pending["container_id"],
            "rest_port": pending["rest_port"],
            "ready_seconds": seconds,
            "reuse_port": info.get("network") == "host",
        }
        return workspace.update_service(
            service.name,
            state="running",
            address=address or service.address,
            artifact_id=int(pending.get("artifact_id") or service.artifact_id),
            image_id=pending.get("image_id") or service.image_id,
            info=info,
        )

    @staticmethod
    def _retire(client: Any, workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
        retiring = service.info.get("retiring")
        if not retiring:
            return service
        old = _get(client, retiring.get("container_id"))
        if old is not None:
            _remove(old)
        info = {k: v for k, v in service.info.items() if k != "retiring"}
        return workspace.update_service(service.name, info=info)

    @staticmethod
    def _pending(service: ServiceRecord) -> dict[str, Any] | None:
        pending = service.info.get("pending")
        if pending:
            return pending
        if service.state == "starting":  # recorded by an older accel-widgets
            return {
                "container": service.info.get("container"),
                "container_id": service.info.get("container_id"),
                "rest_port": service.info.get("rest_port"),
                "deadline": service.updated_at + 120.0,
            }
        return None

    def _settle(
        self, workspace: Workspace, service: ServiceRecord, *, abandon: bool = False
    ) -> ServiceRecord | None:
        """The record in line with Docker; the caller holds the service's lock (as in
        ``local.settle_local``: a pending run that got ready is switched in, one that died
        or timed out, or is abandoned, is removed; a first deploy that left nothing serving
        leaves no record)."""
        pending = self._pending(service)
        retiring = service.info.get("retiring")
        if not pending and not retiring:
            return service
        client = docker_engine.connect(timeout=30)
        if pending:
            container = _get(client, pending.get("container_id") or pending.get("container"))
            running = container is not None and container.status == "running"
            ready = running and (
                _rest_ready(service.address, pending.get("rest_port")) or _docker_healthy(container)
            )
            if ready:
                pending = {**pending, "container_id": container.id}
                pending.setdefault("container", container.name)
                service = self._switch(workspace, service, pending, None)
            elif running and not abandon and time.time() < float(pending.get("deadline") or 0):
                return service  # still loading by itself: a later read finds it ready
            else:
                if container is not None:
                    _remove(container, grace=2)
                if service.state == "starting":
                    workspace.remove_service(service.name)
                    self._forget_secret(workspace, service.name)
                    return None
                info = {k: v for k, v in service.info.items() if k != "pending"}
                service = workspace.update_service(service.name, info=info)
        return self._retire(client, workspace, service)

    def reconcile(self, workspace: Workspace, service: ServiceRecord) -> ServiceRecord | None:
        if not (self._pending(service) or service.info.get("retiring")):
            return service
        with workspace.service_lock(service.name) as held:
            if not held:
                return service  # a deploy is under way: its record is its own to keep
            current = workspace.find_service(service.name)
            return None if current is None else self._settle(workspace, current)

    @staticmethod
    def _clear_leftovers(client: Any, workspace: Workspace, name: str, keep: tuple) -> None:
        """Containers of this workspace's service ``name`` that no record names (a crash)."""
        for container in _ours(client, workspace, name):
            if container.id not in keep:
                _remove(container, grace=2)

    @staticmethod
    def _forget_secret(workspace: Workspace, name: str) -> None:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            (workspace.service_folder(name) / CONTAINER_KEYS).unlink()
        with contextlib.suppress(OSError):
            workspace.service_folder(name).rmdir()

    def _container(self, service: ServiceRecord) -> Any | None:
        client = docker_engine.connect(timeout=30)
        return _get(client, service.info.get("container_id") or service.info.get("container"))

    # -- status, logs, delete --

    def status(self, workspace: Workspace, service: ServiceRecord) -> str:
        if service.state == "starting":
            return "starting"
        container = self._container(service)
        if container is None or container.status != "running":
            return "dead"
        return health_state(service)

    def stop_reason(self, workspace: Workspace, service: ServiceRecord) -> str | None:
        """An idle stop, read from the exited container's last log lines (the server's run
        folder is inside the container, so its stopped file is out of reach)."""
        container = self._container(service)
        if container is None:
            return None
        for line in reversed(_logs(container, 5).splitlines()):
            if IDLE_LOG_PREFIX in line:
                seconds = line.split(IDLE_LOG_PREFIX, 1)[1].split()[0]
                return f"idle: no request for {seconds} s"
        return None

    def logs(self, workspace: Workspace, service: ServiceRecord, lines: int = 50) -> str:
        container = self._container(service)
        return "" if container is None else _logs(container, lines)

    def delete(self, workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
        client = docker_engine.connect(timeout=30)
        for container in _ours(client, workspace, service.name):
            _remove(container)
        current = _get(client, service.info.get("container_id"))
        if current is not None:  # started by an older accel-widgets: no labels to find it by
            _remove(current)
        self._forget_secret(workspace, service.name)
        return workspace.remove_service(service.name)
