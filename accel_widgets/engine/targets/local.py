"""The local target: a serving process on this machine, the embedded default.

``deploy`` starts ``python -m accel_widgets.serving`` in its own session (so a kernel restart
or Ctrl-C in the notebook does not take it down), waits until it has loaded and warmed up
the model and written its ready file, and records it in the workspace. Later calls find it
again through the workspace and check that the recorded pid is still *our* server before
trusting or signalling it (pids get reused).

Runs, and how the record follows the truth
------------------------------------------
Each start of a service is a *run*: ``services/<name>/run-<id>/`` with its config, ready
file and log; the service's key file (``services/<name>/keys``) is shared by its runs. The
record names the run that serves (``info["config"]``, ``pid``, ``port``) and, while another
one is starting, that one as ``info["pending"]``. A deploy holds the service's lock
(:meth:`Workspace.service_lock`) from start to finish, so a reader that gets the lock knows
no deploy is under way and reconciles the record with what is live (:func:`reconcile_local`):
a pending run that became ready is switched in, one that died or never got ready is
stopped and dropped, and a first deploy that left nothing serving leaves no record. A
``kill -9`` of ``accel-widgets deploy`` at any point therefore ends, at the next read, as a
recorded running service with its address, or as nothing.

Deploying a name that is recorded
---------------------------------
* **dead** (its process is gone): started again in place, on the same port when it is free
  and with the same key.
* **running a different model version or settings**: swapped without refusing a client.
  Every server binds its gRPC port with SO_REUSEPORT (``--reuse-port``), so the new server
  binds the *same* port while the old one serves; once the new one has written its ready
  file the record switches to it and the old one gets SIGTERM: it stops accepting, tells its
  clients' connections to go away (HTTP/2 GOAWAY) and finishes what is in flight, and the
  clients' next calls connect to the new server on the same address. Linux shares a port
  only between sockets of one user, so nobody else can join it. We chose this over a stable
  front port (a proxy in front of every service) because a proxy adds a hop to every call of
  a service whose point is latency, and a process that must outlive every deploy. The REST
  port cannot be shared yet (the HTTP front end binds it alone), so a swap moves it: the
  record has the new one.
* **running the same model with the same settings**: refused ("delete it first").
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accel_widgets.engine.packaging.service_config import server_config_for
from accel_widgets.engine.store.keys import new_key
from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ImageRecord,
    ServiceRecord,
    Workspace,
    check_name,
    make_private,
    private_dir,
)
from accel_widgets.engine.targets.base import (
    IDLE_TIMEOUT_SETTING,
    RUNTIME_SETTING,
    Setting,
    Target,
    check_exposure,
    health_state,
    idle_timeout,
    port_free,
    same_settings,
)
from accel_widgets.engine.targets.processes import (
    check_port,
    find_server,
    is_our_server,
    stop_process,
    who_listens,
)
from accel_widgets.errors import ServingError
from accel_widgets.progress import Reporter
from accel_widgets.serving.config import DEVICES, STOPPED_FILE, parse_batching


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(text)


@dataclass(frozen=True)
class Run:
    """One start of a service's server: its folder and the files in it."""

    folder: Path

    @classmethod
    def new(cls, workspace: Workspace, name: str) -> Run:
        folder = workspace.service_folder(name) / f"run-{secrets.token_hex(4)}"
        private_dir(folder)
        return cls(folder)

    @classmethod
    def of(cls, config: str | os.PathLike[str]) -> Run:
        return cls(Path(config).parent)

    @property
    def config(self) -> Path:
        return self.folder / "config.json"

    @property
    def ready_file(self) -> Path:
        return self.folder / "ready.json"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def ready(self) -> dict[str, Any] | None:
        """The ready file's contents once the server wrote it (atomically), else None."""
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.ready_file.read_text())
        return None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _pending_run(service: ServiceRecord) -> dict[str, Any] | None:
    """The run being started for ``service``; a record of an older accel-widgets that says
    "starting" names its only run in ``info["config"]`` (beside its ready file)."""
    pending = service.info.get("pending")
    if pending:
        return pending
    if service.state == "starting" and service.info.get("config"):
        return {
            "config": service.info["config"],
            "pid": service.pid,
            "deadline": service.updated_at + 120.0,
            "legacy": True,
        }
    return None


def _start_server(
    run: Run, host: str, port: int, idle: float, report: Reporter, message: str
) -> subprocess.Popen:
    report("deploy", 0.05, message)
    with open(os.open(run.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "accel_widgets.serving",
                "--config",
                str(run.config),
                "--host",
                host,
                "--port",
                str(port),
                "--ready-file",
                str(run.ready_file),
                "--reuse-port",  # so a new version can be swapped in on this port
                "--idle-timeout",
                f"{idle:g}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the kernel's restart and Ctrl-C
            close_fds=True,
        )


def _write_config(
    workspace: Workspace,
    artifact: ArtifactRecord,
    name: str,
    run: Run,
    settings: Mapping[str, Any],
    keyed: bool,
) -> None:
    config = server_config_for(
        workspace,
        artifact,
        name,
        keys_file=workspace.key_file(name) if keyed else None,
        tls=settings.get("tls"),
    )
    config = dataclasses.replace(
        config,
        runtime=settings["runtime"],
        device=settings["device"],
        batching=parse_batching(settings.get("batching")),
    )
    config.write(run.config)
    make_private(run.config)


def _recorded(settings: Mapping[str, Any], auth: bool) -> dict[str, Any]:
    """The settings a later deploy is compared with (no key, no time-out)."""
    return {
        "host": settings["host"],
        "port": settings["port"],
        "auth": auth,
        "tls": bool(settings.get("tls")),
        "runtime": settings["runtime"],
        "device": settings["device"],
        "batching": settings.get("batching"),
        "idle_timeout": idle_timeout(settings, "local"),
    }


def deploy_local(
    workspace: Workspace,
    artifact: ArtifactRecord,
    name: str,
    *,
    settings: Mapping[str, Any],
    report: Reporter,
    target: str = "local",
) -> ServiceRecord:
    """Start, restart or swap service ``name`` for ``artifact``; see the module docstring.

    ``settings`` are the local target's, resolved (:meth:`Target.resolve`); ``target`` is
    the name recorded on the service, so a target built on this one (a subclass of
    :class:`LocalTarget`) gets its own services back.
    """
    check_name(name, "service")
    with workspace.service_lock(name) as held:
        if not held:
            existing = workspace.find_service(name)
            holder = workspace.lock_holder(name)
            raise ServingError(
                f"a service named {name!r} already exists "
                f"({existing.state if existing else 'starting'}: another deploy of it is under "
                f"way{f', pid {holder}' if holder else ''}); wait for it to finish, or choose "
                "another name"
            )
        existing = workspace.find_service(name)
        if existing is not None:
            existing = settle_local(workspace, existing, abandon=True)
        if existing is None:
            return _first_start(workspace, artifact, name, settings, report, target)
        if existing.target != target:
            raise ServingError(
                f"a service named {name!r} already exists on the {existing.target} target; "
                f"delete it first (`accel-widgets delete service {name}`) or choose another name"
            )
        live = local_status(workspace, existing)
        if (
            live in ("running", "unhealthy")
            and existing.artifact_id == artifact.id
            and same_settings(existing, settings)
        ):
            raise ServingError(
                f"a service named {name!r} already exists ({live}) and serves this model with "
                f"these settings; delete it first (`accel-widgets delete service {name}`) or "
                "choose another name"
            )
        return _replace(workspace, existing, live, artifact, settings, report)


def _first_start(
    workspace: Workspace,
    artifact: ArtifactRecord,
    name: str,
    settings: Mapping[str, Any],
    report: Reporter,
    target: str,
) -> ServiceRecord:
    host, port = settings["host"], settings["port"]
    check_port(host, port)
    auth = check_exposure(host, settings["auth"])
    key = (settings.get("key") or new_key()) if auth else None
    folder = workspace.service_folder(name)
    if folder.exists():  # left by a service whose row was removed by hand
        shutil.rmtree(folder)
    run = Run.new(workspace, name)
    started_at = time.time()
    pending = {
        "config": str(run.config),
        "artifact_id": artifact.id,
        "pid": None,
        "deadline": started_at + float(settings["ready_timeout"]),
    }
    # The row reserves the name before a process is started; its key file goes in with it.
    service = workspace.add_service(
        name,
        artifact,
        target=target,
        state="starting",
        address=host,
        port=port or None,
        key=key,
        log_path=run.log,
        info={
            "config": str(run.config),
            "tls": bool(settings.get("tls")),
            "auth": auth,
            "settings": _recorded(settings, auth),
            "pending": pending,
        },
    )
    try:
        ready, process, seconds = _start_and_wait(
            workspace,
            artifact,
            name,
            run,
            settings,
            host,
            port,
            keyed=key is not None,
            report=report,
            message=f"starting the server for {name} on {host}",
        )
    except BaseException:
        workspace.remove_service(name)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    report("deploy", 1.0, f"{name} ready on {host}:{ready['port']} in {seconds:.1f} s")
    return _switch_to(workspace, service, run, process.pid, ready, artifact.id, seconds)


def _start_and_wait(
    workspace: Workspace,
    artifact: ArtifactRecord,
    name: str,
    run: Run,
    settings: Mapping[str, Any],
    host: str,
    port: int,
    *,
    keyed: bool,
    report: Reporter,
    message: str,
) -> tuple[dict[str, Any], subprocess.Popen, float]:
    """Write the run's config, start its server, record its pid, wait for its ready file.

    On any failure (the server exits, the time runs out, the user cancels) the server is
    stopped and the run's folder removed before the error goes on.
    """
    process: subprocess.Popen | None = None
    try:
        _write_config(workspace, artifact, name, run, settings, keyed)
        started = time.monotonic()
        idle = idle_timeout(settings, "local")
        process = _start_server(run, host, port, idle, report, message)
        service = workspace.get_service(name)
        pending = {**service.info.get("pending", {}), "pid": process.pid}
        workspace.update_service(name, info={**service.info, "pending": pending})
        ready = _wait_ready(process, run, float(settings["ready_timeout"]), report, started)
    except BaseException:
        if process is not None:
            stop_process(process.pid, grace=2.0)
        run.remove()
        raise
    return ready, process, round(time.monotonic() - started, 2)


def _switch_to(
    workspace: Workspace,
    service: ServiceRecord,
    run: Run,
    pid: int,
    ready: Mapping[str, Any],
    artifact_id: int,
    seconds: float | None,
    address: str | None = None,
) -> ServiceRecord:
    """Make ``run`` the one the record names; the run it replaces, if any, is noted as
    ``retiring`` (stopped next, by whoever switched, or by the next reader)."""
    info = {k: v for k, v in service.info.items() if k not in ("pending", "retiring")}
    previous = service.info.get("config")
    if previous and previous != str(run.config) and service.state != "starting":
        info["retiring"] = {"config": previous, "pid": service.pid}
    info |= {
        "config": str(run.config),
        "ready_seconds": seconds,
        "rest_port": ready.get("rest_port"),
        # Which runtime serves, the figures `auto` chose by, fallbacks (runtime_choice.py).
        "runtimes": ready.get("runtimes", {}),
        "reuse_port": True,
    }
    return workspace.update_service(
        service.name,
        state="running",
        address=address or service.address,
        pid=pid,
        port=int(ready["port"]),
        log_path=run.log,
        artifact_id=artifact_id,
        info=info,
    )


def _retire(workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
    """Stop the run a switch replaced (it drains its requests in flight), drop its folder."""
    retiring = service.info.get("retiring")
    if not retiring:
        return service
    config = Path(retiring["config"])
    if is_our_server(retiring.get("pid"), config):
        stop_process(retiring["pid"])
    elif (pid := find_server(config)) is not None:
        stop_process(pid)
    Run.of(config).remove()
    info = {k: v for k, v in service.info.items() if k != "retiring"}
    return workspace.update_service(service.name, info=info)


def _port_frees(host: str, port: int, within: float = 3.0) -> bool:
    """Whether ``host:port`` is free or becomes free within ``within`` seconds. A server
    killed with SIGKILL is a zombie (so no longer "ours") a moment before the kernel has
    released its listening socket: measured here, the port read as taken for up to half a
    second after the kill, and a restart then moved the service to a new port."""
    deadline = time.monotonic() + within
    while not port_free(host, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _replace(
    workspace: Workspace,
    existing: ServiceRecord,
    live: str,
    artifact: ArtifactRecord,
    settings: Mapping[str, Any],
    report: Reporter,
) -> ServiceRecord:
    """Start a new run for a recorded service: in place of a dead one, or beside a live one
    on the same port, then switch and stop the old one."""
    name = existing.name
    host = settings["host"]
    auth = check_exposure(host, settings["auth"])
    key = (settings.get("key") or existing.key or new_key()) if auth else None
    old_config = Path(existing.info["config"]) if existing.info.get("config") else None
    serving = live in ("running", "unhealthy") and is_our_server(existing.pid, old_config)
    shares = bool(serving and existing.info.get("reuse_port") and existing.address == host)
    if settings["port"]:
        port = settings["port"]
    elif existing.port and (serving or _port_frees(host, existing.port)):
        port = existing.port  # the same port: clients keep their address
    else:
        port = 0  # the old port is taken by something else now: a free one
    if serving and port == existing.port and not shares:
        # A server started before ports were shared (or on another address) must go before
        # the new one binds its port: the service is down until the new one is ready.
        report("deploy", 0.02, f"stopping the old server of {name} first (it cannot share)")
        stop_process(existing.pid)
        serving = False
    if not (serving and port == existing.port):
        check_port(host, port)
    old_key = existing.key
    if key != old_key:
        existing = workspace.update_service(name, key=key)
    run = Run.new(workspace, name)
    pending = {
        "config": str(run.config),
        "artifact_id": artifact.id,
        "pid": None,
        "deadline": time.time() + float(settings["ready_timeout"]),
    }
    recorded = {**existing.info, "pending": pending, "settings": _recorded(settings, auth)}
    recorded.pop("stopped", None)  # started again: no longer stopped for being idle
    recorded |= {"auth": auth, "tls": bool(settings.get("tls"))}
    workspace.update_service(name, info=recorded)
    what = "swapping in" if serving else "starting again"
    try:
        ready, process, seconds = _start_and_wait(
            workspace,
            artifact,
            name,
            run,
            settings,
            host,
            port,
            keyed=key is not None,
            report=report,
            message=f"{what} {name} on {host}{f':{port}' if port else ''}",
        )
    except BaseException:
        with contextlib.suppress(Exception):
            current = workspace.get_service(name)
            info = {k: v for k, v in current.info.items() if k != "pending"}
            workspace.update_service(name, info=info)
            if key != old_key:
                workspace.update_service(name, key=old_key)
        raise
    service = _switch_to(
        workspace, workspace.get_service(name), run, process.pid, ready, artifact.id, seconds, host
    )
    if service.info.get("retiring"):
        report("deploy", 0.98, f"stopping the old server of {name} (finishing its requests)")
    service = _retire(workspace, service)
    report("deploy", 1.0, f"{name} ready on {host}:{service.port} in {seconds:.1f} s")
    return service


def _wait_ready(
    process: subprocess.Popen,
    run: Run,
    timeout: float,
    report: Reporter,
    started: float,
) -> dict[str, Any]:
    """Poll for the ready file; explain a server that died or never became ready."""
    deadline = started + timeout
    while True:
        report.check()
        ready = run.ready()
        if ready is not None:
            return ready
        code = process.poll()
        if code is not None:
            raise ServingError(
                f"the server stopped while starting (exit code {code}). Its log says:\n"
                f"{_tail(run.log)}"
            )
        if time.monotonic() > deadline:
            raise ServingError(
                f"the server was not ready after {timeout:.0f} s (loading and warming up the "
                f"model). Its log so far:\n{_tail(run.log)}"
            )
        elapsed = time.monotonic() - started
        report("deploy", None, f"loading and warming up the model ({elapsed:.1f} s)")
        time.sleep(0.05)


def settle_local(
    workspace: Workspace, service: ServiceRecord, *, abandon: bool = False
) -> ServiceRecord | None:
    """Bring the record in line with what runs; the caller holds the service's lock.

    A pending run that wrote its ready file is switched in (its deploy died after starting
    it); one that died, outlived its deadline, or is ``abandon``-ed (a new deploy of the name
    is starting) is stopped and dropped. A first deploy that left nothing serving leaves no
    record (None). A run the record replaced is stopped.
    """
    pending = _pending_run(service)
    if pending:
        run = Run.of(pending["config"])
        pid = pending.get("pid") or find_server(run.config)
        alive = is_our_server(pid, run.config)
        ready = run.ready() if alive else None
        if ready is not None and pid is not None:
            service = _switch_to(
                workspace,
                service,
                run,
                pid,
                ready,
                int(pending.get("artifact_id") or service.artifact_id),
                None,
            )
        elif alive and not abandon and time.time() < float(pending.get("deadline") or 0):
            return service  # still loading, by itself: a later read finds it ready
        else:
            if alive:
                stop_process(pid, grace=2.0)
            if service.state == "starting":  # a first deploy: nothing serves, nothing stays
                workspace.remove_service(service.name)
                shutil.rmtree(workspace.service_folder(service.name), ignore_errors=True)
                return None
            run.remove()
            info = {k: v for k, v in service.info.items() if k != "pending"}
            service = workspace.update_service(service.name, info=info)
    return _retire(workspace, service)


def reconcile_local(workspace: Workspace, service: ServiceRecord) -> ServiceRecord | None:
    """The record as the truth has it, read now (None: the service is not there at all).

    Cheap for a settled record (no lock, no process look-up); a record with a start or a
    retirement outstanding is settled when no deploy holds its lock.
    """
    if not (_pending_run(service) or service.info.get("retiring")):
        return service
    with workspace.service_lock(service.name) as held:
        if not held:
            return service  # a deploy is under way: its record is its own to keep
        current = workspace.find_service(service.name)
        return None if current is None else settle_local(workspace, current)


def local_status(workspace: Workspace, service: ServiceRecord) -> str:
    """``running`` (process alive and answering health checks), ``unhealthy``, ``starting``
    or ``dead``."""
    if service.state == "starting":
        pending = _pending_run(service) or {}
        pid = pending.get("pid")
        config = Path(pending["config"]) if pending.get("config") else None
        return "starting" if (pid is None or is_our_server(pid, config)) else "dead"
    config = Path(service.info["config"]) if service.info.get("config") else None
    if not is_our_server(service.pid, config):
        return "dead"
    return health_state(service)


def delete_local(workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
    """Stop every process of the service that is still ours, and forget the service."""
    config = Path(service.info["config"]) if service.info.get("config") else None
    if is_our_server(service.pid, config):
        stop_process(service.pid)
    for extra in (service.info.get("pending"), service.info.get("retiring")):
        if extra and extra.get("config"):
            extra_config = Path(extra["config"])
            pid = extra.get("pid") or find_server(extra_config)
            if is_our_server(pid, extra_config):
                stop_process(pid, grace=2.0)
    removed = workspace.remove_service(service.name)
    shutil.rmtree(workspace.service_folder(service.name), ignore_errors=True)
    return removed


class LocalTarget(Target):
    """A server process on this machine: the embedded default, no account and no image."""

    name = "local"
    title = "This machine"
    description = "a server process on this machine (no Docker, no cloud account)"
    capacity = "local"
    needs_image = False
    replaces_in_place = True
    settings = (
        Setting(
            "host",
            str,
            "127.0.0.1",
            "address to bind (beyond loopback, a key is required)",
            capacity=False,
        ),
        Setting("port", int, 0, "gRPC port; 0 picks a free one", capacity=False),
        Setting(
            "auth", bool, None, "require an API key (always on beyond loopback)", capacity=False
        ),
        Setting(
            "ready_timeout", float, 120.0, "seconds to wait for the model to load", capacity=False
        ),
        RUNTIME_SETTING,
        IDLE_TIMEOUT_SETTING,
        Setting(
            "device",
            str,
            "auto",
            "gpu asks for a GPU (the CPU serves, with a note, where there is none)",
            choices=DEVICES,
        ),
        Setting(
            "batching",
            dict,
            None,
            "dynamic batching, e.g. {'max_batch_size': 8, 'max_queue_delay_us': 2000}; None: off",
            ui=False,
        ),
        Setting("key", str, None, "use this API key instead of a generated one", ui=False),
        Setting("tls", tuple, None, "(cert_path, key_path) PEM files for TLS", ui=False),
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
        del image, image_reference  # the local target runs the converted model itself
        # Settings resolved for this target; a subclass may hand fewer (its own removed).
        full = {s.name: s.default for s in LocalTarget.settings} | dict(settings)
        return deploy_local(
            workspace, artifact, name, settings=full, report=report, target=self.name
        )

    def reconcile(self, workspace: Workspace, service: ServiceRecord) -> ServiceRecord | None:
        return reconcile_local(workspace, service)

    def status(self, workspace: Workspace, service: ServiceRecord) -> str:
        return local_status(workspace, service)

    def stop_reason(self, workspace: Workspace, service: ServiceRecord) -> str | None:
        if not service.info.get("config"):
            return None
        note = Run.of(service.info["config"]).folder / STOPPED_FILE
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            stopped = json.loads(note.read_text())
            if stopped["reason"] == "idle":
                return f"idle: no request for {stopped['idle_seconds']:.0f} s"
        return None

    def logs(self, workspace: Workspace, service: ServiceRecord, lines: int = 50) -> str:
        return _tail(service.log_path, lines)

    def delete(self, workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
        return delete_local(workspace, service)


# Kept under their earlier names for callers and tests that import them from here.
_stop_process = stop_process
__all__ = [
    "LocalTarget",
    "check_port",
    "delete_local",
    "deploy_local",
    "find_server",
    "is_our_server",
    "local_status",
    "reconcile_local",
    "who_listens",
]
