"""A safety net under every test: no process the kit started outlives the test that started it.

Fixtures clean up through the code under test (``delete_service``, the walkthrough's clean-up
step, a server's own SIGTERM handling). When that code breaks, the fixture's clean-up fails
with it and the server it should have stopped keeps running: it holds a port and memory on a
shared 2-core machine for every later test, and an error in one test turns into failures
elsewhere. This plugin does not use the code under test. Before each test it notes which of
the kit's processes exist; after the test, and after every fixture's own clean-up, it kills
any new one that is still alive, with its whole process group (a local service runs in its
own session, and a forked helper of a server can outlive it), and warns which ones it had
to kill, so a broken clean-up is seen, not hidden. At the end of the session it does the
same for the processes module- and session-wide fixtures started.

"The kit's processes" are those whose command line runs ``accel_widgets.serving`` or the
conversion worker and that are either descendants of this pytest process or name this
session's temporary folder (a Jupyter kernel's server, orphaned when the kernel stopped).
Processes of other test sessions on the machine are never touched.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Iterator

import psutil
import pytest

MARKERS = ("accel_widgets.serving", "accel_widgets.engine.conversion.convert_worker")


class LeftRunningWarning(UserWarning):
    """A process the kit started was still alive after its test's clean-up."""


def _is_ours(proc: psutil.Process, temp_root: str, family: set[int]) -> bool:
    try:
        command = " ".join(proc.cmdline())
        if proc.status() == psutil.STATUS_ZOMBIE or not any(m in command for m in MARKERS):
            return False
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return proc.pid in family or temp_root in command


def kit_processes(temp_root: str) -> dict[int, str]:
    """pid -> command line of the kit's processes that belong to this session."""
    family = {p.pid for p in psutil.Process().children(recursive=True)}
    found = {}
    for proc in psutil.process_iter():
        if (proc.pid in family or _mentions(proc, temp_root)) and _is_ours(proc, temp_root, family):
            try:
                found[proc.pid] = " ".join(proc.cmdline())[:200]
            except psutil.Error:
                continue
    return found


def _mentions(proc: psutil.Process, temp_root: str) -> bool:
    try:
        return any(temp_root in part for part in proc.cmdline())
    except psutil.Error:
        return False


def stop(pids: list[int]) -> None:
    """SIGKILL each process and its process group when it leads one; wait until gone."""
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                proc.kill()
            procs.append(proc)
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            continue
    psutil.wait_procs(procs, timeout=10)


def _sweep(before: dict[int, str], temp_root: str, when: str) -> None:
    left = {pid: cmd for pid, cmd in kit_processes(temp_root).items() if pid not in before}
    if not left:
        return
    # A clean-up that has just sent SIGTERM gets a moment to finish on its own.
    deadline = time.monotonic() + 2.0
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pid: cmd for pid, cmd in left.items() if psutil.pid_exists(pid)}
        left = {pid: cmd for pid, cmd in left.items() if _alive(pid)}
    if not left:
        return
    stop(list(left))
    warnings.warn(
        LeftRunningWarning(
            f"{len(left)} process(es) outlived {when}, killed by tests/process_guard.py: "
            + "; ".join(f"pid {pid}: {cmd}" for pid, cmd in left.items())
        ),
        stacklevel=1,
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="session")
def _session_temp_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """This session's temporary folder, with a trailing separator (``pytest-12/`` must not
    match ``pytest-123/``)."""
    return str(tmp_path_factory.getbasetemp()) + os.sep


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_session(_session_temp_root: str) -> Iterator[None]:
    before = kit_processes(_session_temp_root)
    yield
    _sweep(before, _session_temp_root, "the test session")


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test(
    request: pytest.FixtureRequest, _session_temp_root: str
) -> Iterator[None]:
    """Function-scoped and autouse: set up after wider fixtures (their servers are in
    ``before``), torn down after the test's other function fixtures."""
    before = kit_processes(_session_temp_root)
    yield
    _sweep(before, _session_temp_root, f"the test {request.node.nodeid}")
