"""Fixtures for the container tests: a real Docker engine, a local base image, a registry.

Nothing here pulls from a public registry (none is reachable on the test machines):

* ``docker_client`` talks to the engine ``docker.from_env()`` finds (``DOCKER_HOST`` or
  ``/var/run/docker.sock``). scripts/test.sh starts one (scripts/docker_env.sh) when none
  answers. Without an engine the tests skip, except under CI, where they must run and fail.
* ``base_image`` is ``local/debian-py:bookworm`` (Debian 12, Python 3.11, venv), made from
  Debian packages by scripts/make_base_image.sh when missing.
* ``registry`` is Debian's ``docker-registry`` (distribution 2.8) on a free loopback port with
  its storage in the session's temp dir. Docker talks plain HTTP to registries on 127.0.0.0/8
  without any ``insecure-registries`` setting.

Containers get the safety net tests/process_guard.py gives processes: fixtures stop their
services through the code under test (``delete_service``), so when that code breaks a
container would keep its port, memory and CPU on the shared engine for every later test and
run. After each test that uses the engine, and at the end of the session, every container
of this session's workspaces (the ``io.accel-widgets.workspace`` label carries a workspace's
id, and this session's workspaces are the catalogs under its temporary folder) that the
test started and left behind is removed, with a warning naming it. Containers of other
sessions and users on the same engine are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "local/debian-py:bookworm"
MAKE_BASE_IMAGE = REPO / "scripts" / "make_base_image.sh"
REGISTRY_BINARY = os.environ.get("ACCEL_WIDGETS_DOCKER_REGISTRY", "/usr/bin/docker-registry")
LOOPBACK = "127.0.0.1"
HOW_TO_START = (
    "install docker.io and start the engine, e.g. as root: "
    "`dockerd --iptables=false --ip6tables=false --bridge=none &`, "
    "or run `bash scripts/test.sh`, which does it (scripts/docker_env.sh)"
)

# Registry requests go straight to loopback, whatever proxy the environment names.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="session")
def docker_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A client of the local Docker engine (skips, or fails under CI, when none answers)."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        problem = f"no Docker engine answers ({exc}); {HOW_TO_START}"
    else:
        problem = None
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the container tests, but {problem}", pytrace=False)
        pytest.skip(problem)
    temp_root = str(tmp_path_factory.getbasetemp())
    try:
        yield client
    finally:
        try:
            _sweep_containers(client, set(), temp_root, "the test session")
        finally:
            client.close()


WORKSPACE_LABEL = "io.accel-widgets.workspace"


def session_workspace_ids(temp_root: str) -> set[str]:
    """The ids of the workspaces made under ``temp_root`` (read from their catalogs)."""
    ids = set()
    try:
        catalogs = list(Path(temp_root).rglob("catalog.db"))
    except OSError:  # a folder removed while it was walked: look again next time
        catalogs = []
    for catalog in catalogs:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)) as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'workspace_id'").fetchone()
        except sqlite3.Error:
            continue
        if row is not None:
            ids.add(row[0])
    return ids


def kit_containers(client: Any, temp_root: str) -> dict[str, str]:
    """id -> a readable description of each container of this session's workspaces."""
    ids = session_workspace_ids(temp_root)
    if not ids:
        return {}
    found = {}
    for container in client.containers.list(all=True, filters={"label": WORKSPACE_LABEL}):
        labels = container.labels or {}
        if labels.get(WORKSPACE_LABEL) in ids:
            service = labels.get("io.accel-widgets.service", "?")
            found[container.id] = f"{container.name} (service {service}, {container.status})"
    return found


def _sweep_containers(client: Any, before: set[str], temp_root: str, when: str) -> None:
    """Remove (forced) the session's containers not in ``before``; warn which ones."""
    left = {
        cid: what for cid, what in kit_containers(client, temp_root).items() if cid not in before
    }
    if not left:
        return
    from process_guard import LeftRunningWarning  # a plugin too: imported once it is loaded

    for cid in left:
        with contextlib.suppress(Exception):  # gone meanwhile, or already being removed
            client.containers.get(cid).remove(force=True)
    warnings.warn(
        LeftRunningWarning(
            f"{len(left)} container(s) outlived {when}, removed by tests/docker_support.py: "
            + "; ".join(left.values())
        ),
        stacklevel=1,
    )


@pytest.fixture(autouse=True)
def _no_container_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """For tests that use the engine: remove the containers the test left behind.

    Autouse and function-scoped, so it is set up before the test's own function fixtures
    (and after module and session ones, whose containers are in ``before``) and torn down
    after them: a fixture whose clean-up raised has had its turn.
    """
    if "docker_client" not in request.fixturenames:
        yield
        return
    client = request.getfixturevalue("docker_client")
    temp_root = str(request.getfixturevalue("tmp_path_factory").getbasetemp())
    before = set(kit_containers(client, temp_root))
    yield
    _sweep_containers(client, before, temp_root, f"the test {request.node.nodeid}")


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """The name of the local Debian + Python 3.11 base image, built when missing."""
    import docker

    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        result = subprocess.run(
            ["bash", str(MAKE_BASE_IMAGE), BASE_IMAGE],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"scripts/make_base_image.sh failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}",
                pytrace=False,
            )
        docker_client.images.get(BASE_IMAGE)
    return BASE_IMAGE


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _registry_config(storage: Path, port: int) -> str:
    # distribution's config format (version 0.1), as in Debian's /etc/docker/registry/config.yml,
    # minus its htpasswd auth and its :5000 on every interface.
    return f"""\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {LOOPBACK}:{port}
  secret: accel-widgets-test-registry
"""


def _answers(url: str) -> bool:
    try:
        with _NO_PROXY.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[str]:
    """A real registry on loopback, as "127.0.0.1:PORT"; stopped at the end of the session."""
    binary = shutil.which(REGISTRY_BINARY) or shutil.which("docker-registry")
    if binary is None:
        message = f"Debian's docker-registry binary is missing ({REGISTRY_BINARY})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; scripts/docker_env.sh installs it", pytrace=False)
        pytest.skip(f"{message}: apt-get install docker-registry")
    root = tmp_path_factory.mktemp("registry")
    storage = root / "storage"
    storage.mkdir()
    log_path = root / "registry.log"
    for _attempt in range(3):
        port = _free_port()
        config = root / "config.yml"
        config.write_text(_registry_config(storage, port))
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [binary, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while process.poll() is None and time.monotonic() < deadline:
            if _answers(f"http://{LOOPBACK}:{port}/v2/"):
                break
            time.sleep(0.05)
        else:
            _stop(process)
            continue  # exited (port taken meanwhile?) or never answered: try another port
        try:
            yield f"{LOOPBACK}:{port}"
        finally:
            _stop(process)
        return
    pytest.fail(
        f"docker-registry did not answer on loopback; its log:\n{log_path.read_text()[-3000:]}",
        pytrace=False,
    )


def push(client, reference: str) -> list[dict]:
    """``docker push`` REFERENCE (REPO:TAG); raises with the engine's message on failure.

    The SDK reports push errors only inside the event stream, never as an exception.
    """
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:  # no tag: the colon was the registry's port
        repository, tag = reference, "latest"
    events = list(client.images.push(repository, tag=tag, stream=True, decode=True))
    errors = [event for event in events if "error" in event or "errorDetail" in event]
    if errors:
        raise RuntimeError(f"docker push {reference} failed: {errors[-1]}")
    return events
