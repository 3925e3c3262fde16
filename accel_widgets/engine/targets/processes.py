"""Server processes on this machine: is a pid still ours, find one, stop one, a port's user.

Shared by the local target (its servers) and the container target (the port check); kept
apart from the local target's runs and records so each module says one thing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psutil

from accel_widgets.engine.targets.base import port_free
from accel_widgets.errors import ServingError


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


def find_server(config_path: Path) -> int | None:
    """The pid of the live server started with ``config_path``, when its pid was never
    recorded (its deploy was killed between starting it and writing the pid down)."""
    wanted = str(config_path)
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if (
                "accel_widgets.serving" in cmdline
                and wanted in cmdline
                and proc.info["status"] != psutil.STATUS_ZOMBIE
            ):
                return proc.pid
    return None


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


def stop_process(pid: int | None, grace: float = 10.0) -> bool:
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
        kill_group(pid)
    return True


def kill_group(pgid: int) -> None:
    """Kill what is left in a stopped server's process group.

    Seen once in ~10 deploys during a benchmark (2026-11-30): a forked child of a server
    process (same group, never exec'd, 315 MB) outlived its parent and stayed as an orphan
    after the service was deleted. That child was OpenVINO's usage-event sender, which the
    server no longer imports (``openvino_runtime.import_openvino``); the group still goes
    with the service, so whatever a library forks next cannot outlive it either.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
