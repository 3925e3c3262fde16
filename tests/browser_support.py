"""Machinery for the browser tests: real Jupyter servers, a real Chromium, screenshots.

The browser tests drive the walkthrough the way a person does, so everything here is real
and everything is fenced in:

* Each server runs as ``sys.executable -m jupyter lab`` / ``-m voila`` on a free loopback
  port, in its own process group, with every Jupyter and IPython folder pointed into the
  test's temp dir (no user settings, saved workspaces or kernels leak in or out). Its output
  goes to a log file whose tail ends up in any failure message.
* Stopping is unconditional: SIGTERM (Jupyter then shuts its kernels down), a wait, then
  SIGKILL to the whole process group, so no kernel outlives a failed test. Services the walk
  deployed start in their own session (they survive a kernel restart by design), so they are
  deleted through the engine, from the test's own workspace.
* Chromium is Debian's (Playwright's download does not work here), started headless with
  the flags that keep it off the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CHROMIUM = Path(os.environ.get("ACCEL_WIDGETS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]
LOOPBACK = "127.0.0.1"

# JupyterLab settings defaults for the test server: no news or update pop-up covering the
# page, and no autosave writing outputs back into the copied notebook behind our back.
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
}


# --------------------------------------------------------------------------- environment


def require_chromium() -> Path:
    """The Chromium binary; skip without it on a workstation, fail without it under CI.

    CI installs Chromium on purpose, so a missing one there is a broken set-up, not a reason
    to quietly pass.
    """
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(message + "; CI must install it")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port nobody listens on right now (the servers are told not to try others)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def artifacts_dir() -> Path:
    """Where screenshots and server logs are kept: ``$ACCEL_WIDGETS_ARTIFACTS`` or
    ``<repo>/test-artifacts`` (gitignored), so CI can upload them."""
    root = os.environ.get("ACCEL_WIDGETS_ARTIFACTS")
    return Path(root) if root else REPO / "test-artifacts"


@dataclass
class Sandbox:
    """A temp tree with the Jupyter folders, the notebook copy and the workspace of one test."""

    root: Path
    notebooks: Path = field(init=False)
    workspace: Path = field(init=False)
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.notebooks = self.root / "notebooks"
        self.workspace = self.root / "workspace"
        self.logs = self.root / "logs"
        for name in ("jupyter-config", "jupyter-data", "jupyter-runtime", "ipython", "logs"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        settings = self.lab_settings_dir
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES, indent=2))

    @property
    def lab_settings_dir(self) -> Path:
        return self.root / "lab-app-settings"

    def copy_notebooks(self, source: Path = NOTEBOOKS) -> Path:
        """Copy the notebooks so that nothing the browser saves lands in the repository."""
        shutil.copytree(source, self.notebooks, dirs_exist_ok=True)
        return self.notebooks

    def env(self) -> dict[str, str]:
        """The servers' environment; the kernels inherit it."""
        env = dict(os.environ)
        for key in list(env):
            if key.lower() in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy"):
                del env[key]
        env.update(
            JUPYTER_CONFIG_DIR=str(self.root / "jupyter-config"),
            JUPYTER_DATA_DIR=str(self.root / "jupyter-data"),
            JUPYTER_RUNTIME_DIR=str(self.root / "jupyter-runtime"),
            IPYTHONDIR=str(self.root / "ipython"),
            JUPYTER_PLATFORM_DIRS="1",  # the future default; silences jupyter_core's warning
            ACCEL_WIDGETS_WORKSPACE=str(self.workspace),
            ACCEL_WIDGETS_OFFLINE="1",
            TF_CPP_MIN_LOG_LEVEL="2",
            NO_PROXY="127.0.0.1,localhost,::1",
            no_proxy="127.0.0.1,localhost,::1",
            # The kernel imports this checkout, whatever is installed.
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
            PYTHONUNBUFFERED="1",
        )
        # ACCEL_WIDGETS_WEIGHTS_DIR and KERAS_HOME come through from the test's environment
        # (tests/conftest.py sets them): the kernel reads the same shared weights offline.
        return env


# --------------------------------------------------------------------------- servers


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of ``url`` (errors included), or None when nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


class ServerProcess:
    """One server subprocess in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path):
        self.name = name
        self.argv = argv
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's output, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it holds; fail early, with the log, if the server died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before {what}:\n"
                    + self.log_tail()
                )
            if ready():
                return
            time.sleep(0.25)
        raise AssertionError(f"{self.name} not {what} after {timeout:.0f} s:\n" + self.log_tail())

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL to the whole group: nothing this server started survives.

        The SIGKILL runs even when the wait is interrupted (a pytest-timeout firing during
        teardown), so a slow shutdown can never leave the kernels behind.
        """
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace)
        finally:
            # Kernels and anything else left in the group (the server may be gone already).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            self._log.close()

    def group_alive(self) -> bool:
        """Whether any process of the server's group (server, kernels) still exists."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@dataclass
class LabServer:
    """A running JupyterLab: its process, port and token."""

    server: ServerProcess
    port: int
    token: str

    def url(self, path: str = "/lab", **query: str) -> str:
        """``path`` with the token; a query value of "" gives a bare flag (``?reset``)."""
        params = "&".join(
            [*(f"{k}={v}" if v else k for k, v in query.items()), f"token={self.token}"]
        )
        return f"http://{LOOPBACK}:{self.port}{path}?{params}"


@dataclass
class VoilaServer:
    """A running Voilà app: its process and port (Voilà 0.5 asks for no token)."""

    server: ServerProcess
    port: int

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"


def start_lab(sandbox: Sandbox, root_dir: Path, timeout: float = 60.0) -> LabServer:
    """A JupyterLab on loopback serving ``root_dir``, answering its API when this returns."""
    port, token = free_port(), secrets.token_hex(16)
    argv = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",
        f"--ServerApp.ip={LOOPBACK}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--IdentityProvider.token={token}",
        f"--LabApp.app_settings_dir={sandbox.lab_settings_dir}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    server = ServerProcess(
        "jupyter lab", argv, env=sandbox.env(), cwd=root_dir, log=sandbox.logs / "jupyter-lab.log"
    )
    lab = LabServer(server, port, token)
    try:
        status = f"http://{LOOPBACK}:{port}/api/status?token={token}"
        server.wait_until(lambda: http_status(status) == 200, timeout, "serving")
    except BaseException:
        server.stop()
        raise
    return lab


def start_voila(
    sandbox: Sandbox, notebook: Path, timeout: float = 60.0, extra: Sequence[str] = ()
) -> VoilaServer:
    """A Voilà on loopback for one notebook, accepting HTTP when this returns.

    Readiness is any HTTP answer on a path that is not the notebook: asking for ``/`` would
    start a kernel and run the notebook just to check the port.
    """
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "voila",
        str(notebook),
        "--no-browser",
        f"--Voila.ip={LOOPBACK}",
        f"--Voila.port={port}",
        "--Voila.port_retries=0",
        "--show_tracebacks=True",
        *extra,
    ]
    server = ServerProcess(
        "voila", argv, env=sandbox.env(), cwd=notebook.parent, log=sandbox.logs / "voila.log"
    )
    voila = VoilaServer(server, port)
    try:
        probe = f"http://{LOOPBACK}:{port}/accel-widgets-readiness-probe"
        server.wait_until(lambda: http_status(probe) is not None, timeout, "serving")
    except BaseException:
        server.stop()
        raise
    return voila


def delete_services(workspace_dir: Path) -> list[str]:
    """Delete every service recorded in ``workspace_dir`` and check its process is gone.

    Returns the names deleted; raises when a server process survives its deletion.
    """
    if not workspace_dir.exists():
        return []
    from accel_widgets.engine.store.workspace import Workspace
    from accel_widgets.engine.targets import delete_service
    from accel_widgets.engine.targets.local import is_our_server

    workspace = Workspace(workspace_dir)
    deleted, problems = [], []
    for service in workspace.list_services():
        try:
            delete_service(service.name, workspace=workspace)
        except Exception as err:  # keep going: the other services must go too
            problems.append(f"{service.name}: delete failed: {err}")
        else:
            deleted.append(service.name)
        config = service.info.get("config")
        if is_our_server(service.pid, Path(config) if config else None):
            problems.append(f"{service.name}: pid {service.pid} still running")
    if problems:
        raise AssertionError("services left behind by the walk:\n" + "\n".join(problems))
    return deleted


# --------------------------------------------------------------------------- browser


def launch_chromium(playwright):
    """Debian's Chromium through Playwright, headless and off the network."""
    return playwright.chromium.launch(
        executable_path=str(require_chromium()), headless=True, args=CHROMIUM_ARGS
    )


class Screenshots:
    """Numbered screenshots of one test, plus one on failure.

    JupyterLab and Voilà scroll inside their own panels, so a "full page" is the viewport:
    the tests scroll the step they show into view before each shot.

    Files are ``<dir>/<test>/<NN>-<step>.png``; the folder is emptied first so a re-run never
    mixes old pictures with new ones.
    """

    def __init__(self, test_name: str, root: Path | None = None):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.dir = (root or artifacts_dir() / "screenshots") / safe
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.saved: list[Path] = []

    def take(self, page, step: str) -> Path | None:
        """Save ``NN-<step>.png``; a failing screenshot is reported, never raised."""
        self.count += 1
        path = self.dir / f"{self.count:02d}-{step}.png"
        try:
            page.screenshot(path=str(path), full_page=True, timeout=15_000)
        except Exception as err:  # a screenshot must never hide the real failure
            print(f"screenshot {path.name} failed: {err}")
            return None
        self.saved.append(path)
        return path

    @contextlib.contextmanager
    def on_failure(self, page, servers: Sequence[ServerProcess] = ()) -> Iterator[None]:
        """Screenshot the page and keep the server logs when the block raises."""
        try:
            yield
        except BaseException:
            self.take(page, "failure")
            for server in servers:
                with contextlib.suppress(OSError):
                    shutil.copy(server.log_path, self.dir / server.log_path.name)
            raise


# --------------------------------------------------------------------------- shared fixtures
# Test modules import these by name (``from browser_support import browser, page, shots``).

VIEWPORT = {"width": 1400, "height": 1000}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module (a new context per test keeps tests apart)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A fresh browser context per test: no cookies, storage or tabs carried over."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def shots(request) -> Screenshots:
    """Screenshots under a folder named after the test, emptied first."""
    return Screenshots(request.node.name)
