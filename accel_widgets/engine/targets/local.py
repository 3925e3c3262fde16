"""The local target: a serving process on this machine, the embedded default.

``deploy`` starts ``python -m accel_widgets.serving`` in its own session (so a kernel restart
or Ctrl-C in the notebook does not take it down), waits until it has loaded and warmed up
the model and written its ready file, and records it in the workspace. Later calls find it
again through the workspace and check that the recorded pid is still *our* server before
trusting or signalling it (pids get reused).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from accel_widgets.engine.service_config import server_config_for
from accel_widgets.engine.targets.base import (
    RUNTIME_SETTING,
    Setting,
    Target,
    check_exposure,
    health_state,
    port_free,
)
from accel_widgets.engine.workspace import (
    ArtifactRecord,
    ImageRecord,
    ServiceRecord,
    Workspace,
    check_name,
)
from accel_widgets.errors import ServingError
from accel_widgets.progress import Reporter
from accel_widgets.serving.config import DEVICES, parse_batching


def who_listens(port: int) -> str:
    """The program holding ``port``, when this user may see it (for the error message)."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.status == psutil.CONN_LISTEN and conn.laddr
            if listening and conn.laddr.port == port and conn.pid:
                return f" by {psutil.Process(conn.pid).name()} (pid {conn.pid})"
    return ""


def check_port(host: str, port: int) -> None:
    """Refuse a port that something already listens on, naming the program when visible."""
    if port and not port_free(host, port):
        raise ServingError(
            f"port {port} on {host} is already in use{who_listens(port)}. Choose another port, "
            "or leave the port out and a free one is picked."
        )


def is_our_server(pid: int | None, config_path: Path | None = None) -> bool:
    """True when ``pid`` is alive and is an accel-widgets server (for this config, if given)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    if "accel_widgets.serving" not in cmdline:
        return False
    return config_path is None or str(config_path) in cmdline


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(text)


def deploy_local(
    workspace: Workspace,
    artifact: ArtifactRecord,
    name: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    auth: bool | None = None,
    key: str | None = None,
    tls: tuple[str, str] | None = None,
    ready_timeout: float = 120.0,
    runtime: str = "auto",
    device: str = "auto",
    batching: dict[str, int] | None = None,
    report: Reporter,
    target: str = "local",
) -> ServiceRecord:
    """Start a server for ``artifact`` and wait until it is ready; see :func:`targets.deploy`.

    ``target`` is the name recorded on the service, so a target built on this one (a
    subclass of :class:`LocalTarget`) gets its own services back.
    """
    check_name(name, "service")
    existing = {s.name: s for s in workspace.list_services()}
    if name in existing:
        state = local_status(workspace, existing[name])
        raise ServingError(
            f"a service named {name!r} already exists ({state}); delete it first "
            f"(`accel-widgets delete service {name}`) or choose another name"
        )
    check_port(host, port)
    auth = check_exposure(host, auth)
    folder = workspace.root / "services" / name
    config_path = folder / "config.json"
    ready_file = folder / "ready.json"
    log_path = folder / "server.log"
    key = (key or secrets.token_urlsafe(32)) if auth else None
    # The row reserves the name (one writer at a time) before the folder or a process is
    # touched: of two deploys of one name at once, the second stops here and starts nothing.
    service = workspace.add_service(
        name,
        artifact,
        target=target,
        state="starting",
        address=host,
        port=port or None,
        key=key,
        log_path=log_path,
        info={
            "config": str(config_path),
            "tls": bool(tls),
            "auth": auth,
            "settings": {
                "host": host,
                "port": port,
                "auth": auth,
                "tls": bool(tls),
                "runtime": runtime,
                "device": device,
                "batching": batching,
            },
        },
    )
    process: subprocess.Popen | None = None
    try:
        if folder.exists():  # left by a service whose row was removed by hand
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        keys_file = None
        if key is not None:
            keys_file = folder / "keys"
            fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(key + "\n")
        config = server_config_for(workspace, artifact, name, keys_file=keys_file, tls=tls)
        config = dataclasses.replace(
            config, runtime=runtime, device=device, batching=parse_batching(batching)
        )
        config.write(config_path)
        report("deploy", 0.05, f"starting the server for {name} on {host}")
        started = time.monotonic()
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "accel_widgets.serving",
                    "--config",
                    str(config_path),
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--ready-file",
                    str(ready_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the kernel's restart and Ctrl-C
                close_fds=True,
            )
        service = workspace.update_service(name, pid=process.pid)
        ready = _wait_ready(process, ready_file, log_path, ready_timeout, report, started)
    except BaseException:
        if process is not None:
            _stop_process(process.pid, grace=2.0)
        workspace.remove_service(name)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    seconds = round(time.monotonic() - started, 2)
    report("deploy", 1.0, f"{name} ready on {host}:{ready['port']} in {seconds:.1f} s")
    return workspace.update_service(
        name,
        state="running",
        port=int(ready["port"]),
        info={
            **service.info,
            "ready_seconds": seconds,
            "rest_port": ready.get("rest_port"),
            # Which runtime serves, the figures `auto` chose by, fallbacks (runtime_choice.py).
            "runtimes": ready.get("runtimes", {}),
        },
    )


def _wait_ready(
    process: subprocess.Popen,
    ready_file: Path,
    log_path: Path,
    timeout: float,
    report: Reporter,
    started: float,
) -> dict[str, Any]:
    """Poll for the ready file; explain a server that died or never became ready."""
    deadline = started + timeout
    while True:
        report.check()
        if ready_file.is_file():
            with contextlib.suppress(ValueError):
                return json.loads(ready_file.read_text())
        code = process.poll()
        if code is not None:
            raise ServingError(
                f"the server stopped while starting (exit code {code}). Its log says:\n"
                f"{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise ServingError(
                f"the server was not ready after {timeout:.0f} s (loading and warming up the "
                f"model). Its log so far:\n{_tail(log_path)}"
            )
        elapsed = time.monotonic() - started
        report("deploy", None, f"loading and warming up the model ({elapsed:.1f} s)")
        time.sleep(0.05)


def _exited(proc: psutil.Process) -> bool:
    """Gone, or a zombie: it has exited and waits for its parent to reap it.

    The parent is whoever deployed it (a kernel, the CLI); when another process stops the
    service (the Jupyter server, for the sidebar) it sees the zombie, which ``wait()`` cannot
    tell from a live process.
    """
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_exit(proc: psutil.Process, timeout: float) -> bool:
    """Wait for the exit, reaping the process when this process is its parent."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(proc.pid, os.WNOHANG)
        if _exited(proc):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _stop_process(pid: int | None, grace: float = 10.0) -> bool:
    """SIGTERM (the server drains in-flight requests), then SIGKILL after ``grace`` seconds;
    then whatever is left of the server's process group."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        leader = os.getpgid(pid) == pid  # started with start_new_session: its own group
        proc.send_signal(signal.SIGTERM)
        if not _wait_exit(proc, grace):
            proc.kill()
            if not _wait_exit(proc, 5.0):
                raise ServingError(
                    f"the server process {pid} did not exit after SIGKILL; check `ps {pid}`"
                )
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False
    if leader:
        _kill_group(pid)
    return True


def _kill_group(pgid: int) -> None:
    """Kill what is left in a stopped server's process group.

    Seen once in ~10 deploys during a benchmark (2026-11-30): a forked child of a server
    process (same group, never exec'd, 315 MB) outlived its parent and stayed as an orphan
    after the service was deleted. That child was OpenVINO's usage-event sender, which the
    server no longer imports (``openvino_runtime.import_openvino``); the group still goes
    with the service, so whatever a library forks next cannot outlive it either.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def local_status(workspace: Workspace, service: ServiceRecord) -> str:
    """``running`` (process alive and answering health checks), ``unhealthy`` or ``dead``."""
    config = Path(service.info["config"]) if service.info.get("config") else None
    if not is_our_server(service.pid, config):
        return "dead"
    if service.state == "starting":
        return "starting"
    return health_state(service)


def delete_local(workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
    """Stop the process (if it is still ours) and forget the service."""
    config = Path(service.info["config"]) if service.info.get("config") else None
    if is_our_server(service.pid, config):
        _stop_process(service.pid)
    removed = workspace.remove_service(service.name)
    folder = workspace.root / "services" / service.name
    shutil.rmtree(folder, ignore_errors=True)
    return removed


class LocalTarget(Target):
    """A server process on this machine: the embedded default, no account and no image."""

    name = "local"
    title = "This machine"
    description = "a server process on this machine (no Docker, no cloud account)"
    capacity = "local"
    needs_image = False
    settings = (
        Setting("host", str, "127.0.0.1", "address to bind (beyond loopback, a key is required)"),
        Setting("port", int, 0, "gRPC port; 0 picks a free one"),
        Setting("auth", bool, None, "require an API key (always on beyond loopback)"),
        Setting("ready_timeout", float, 120.0, "seconds to wait for the model to load"),
        RUNTIME_SETTING,
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
        return deploy_local(workspace, artifact, name, report=report, target=self.name, **settings)

    def status(self, workspace: Workspace, service: ServiceRecord) -> str:
        return local_status(workspace, service)

    def logs(self, workspace: Workspace, service: ServiceRecord, lines: int = 50) -> str:
        return _tail(service.log_path, lines)

    def delete(self, workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
        return delete_local(workspace, service)
