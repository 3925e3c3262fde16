"""The process guard (tests/process_guard.py) stops servers whose clean-up broke.

A test session of its own (a child pytest with the guard as its only plugin) runs two tests
whose clean-up fails: a server started by a fixture whose teardown raises before stopping
it, and a server a helper process started and left behind as an orphan (as a Jupyter kernel
does when it stops). Both are real ``python -m accel_widgets.serving`` processes in their
own sessions, as the local target starts them. After that session, neither may be alive,
and its output must name what the guard had to kill.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from serving_fixtures import write_config

INNER = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from pathlib import Path

    import pytest

    CONFIG = os.environ["GUARD_CONFIG"]
    PIDS = Path(os.environ["GUARD_PIDS"])

    def command(ready):
        return [sys.executable, "-m", "accel_widgets.serving", "--config", CONFIG,
                "--port", "0", "--rest-port", "0", "--ready-file", str(ready)]

    def wait_ready(ready):
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.05)
        return json.loads(ready.read_text())["pid"]

    @pytest.fixture
    def server(tmp_path):
        ready = tmp_path / "ready.json"
        process = subprocess.Popen(command(ready), start_new_session=True)
        wait_ready(ready)
        with PIDS.open("a") as f:
            f.write(f"{process.pid}\\n")
        yield process
        raise RuntimeError("the clean-up under test broke before it stopped the server")

    def test_a_fixture_whose_clean_up_breaks(server):
        assert server.poll() is None

    def test_a_server_orphaned_by_the_process_that_started_it(tmp_path):
        ready = tmp_path / "ready.json"
        starter = (
            "import subprocess, sys; "
            f"subprocess.Popen({command(ready)!r}, start_new_session=True)"
        )
        subprocess.run([sys.executable, "-c", starter], check=True)  # exits at once
        pid = wait_ready(ready)
        with PIDS.open("a") as f:
            f.write(f"{pid}\\n")
        assert psutil_parent(pid) != os.getpid()

    def psutil_parent(pid):
        import psutil
        return psutil.Process(pid).ppid()
    """
)


def test_servers_left_by_a_broken_clean_up_are_killed_and_named(tmp_path):
    folder = tmp_path / "inner"
    folder.mkdir()
    (folder / "test_inner.py").write_text(INNER)
    config = write_config(folder)
    pids_file = folder / "pids"
    tests = Path(__file__).resolve().parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)]),
        "GUARD_CONFIG": str(config),
        "GUARD_PIDS": str(pids_file),
    }
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "process_guard",
                "-p",
                "no:cacheprovider",
                "-W",
                "always::UserWarning",
                "test_inner.py",
            ],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        pids = [int(p) for p in pids_file.read_text().split()]
        output = result.stdout + result.stderr
        assert len(pids) == 2, output
        for pid in pids:
            assert not _alive(pid), f"server {pid} outlived its test session:\n{output}"
        assert "the clean-up under test broke" in output  # the teardown did fail
        assert output.count("killed by tests/process_guard.py") == 2, output
        for pid in pids:
            assert f"pid {pid}: " in output
    finally:
        for pid in pids_file.read_text().split() if pids_file.exists() else []:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                os.killpg(int(pid), 9)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


CONTAINER_INNER = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import pytest

    from accel_widgets.engine.store.workspace import Workspace

    IDS = Path(os.environ["GUARD_CONTAINERS"])

    def start(client, image, folder, service):
        workspace = Workspace(folder)
        container = client.containers.run(
            image, ["sleep", "600"], detach=True, network_mode="none",
            labels={"io.accel-widgets.workspace": workspace.ident,
                    "io.accel-widgets.service": service},
        )
        with IDS.open("a") as f:
            f.write(container.id + "\\n")
        return container

    @pytest.fixture
    def container(docker_client, base_image, tmp_path):
        yield start(docker_client, base_image, tmp_path / "ws", "per-test")
        raise RuntimeError("the clean-up under test broke before it removed the container")

    @pytest.fixture(scope="module")
    def module_container(docker_client, base_image, tmp_path_factory):
        yield start(docker_client, base_image, tmp_path_factory.mktemp("ws"), "per-module")
        raise RuntimeError("the module clean-up under test broke too")

    def test_a_fixture_whose_clean_up_breaks(container, module_container):
        container.reload()
        assert container.status == "running"
    """
)


def test_containers_left_by_a_broken_clean_up_are_removed_and_named(tmp_path):
    """The same for containers: one left by a test's fixture is removed after that test,
    one left by a module's fixture at the end of the session, and a container of a
    workspace outside the session (another user's, on the same engine) is left alone."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
        client.images.get("local/debian-py:bookworm")
    except Exception as exc:
        pytest.skip(f"needs the Docker engine and the base image: {exc}")
    folder = tmp_path / "inner"
    folder.mkdir()
    (folder / "test_inner.py").write_text(CONTAINER_INNER)
    ids_file = folder / "ids"
    other = client.containers.run(
        "local/debian-py:bookworm",
        ["sleep", "600"],
        detach=True,
        network_mode="none",
        labels={"io.accel-widgets.workspace": "someone-else-0000", "io.accel-widgets.service": "x"},
    )
    tests = Path(__file__).resolve().parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)]),
        "GUARD_CONTAINERS": str(ids_file),
    }
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "docker_support",
                "-p",
                "no:cacheprovider",
                "-W",
                "always::UserWarning",
                "test_inner.py",
            ],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        output = result.stdout + result.stderr
        ids = ids_file.read_text().split()
        assert len(ids) == 2, output
        remaining = {c.id for c in client.containers.list(all=True)}
        assert not remaining & set(ids), f"a container outlived its clean-up:\n{output}"
        assert other.id in remaining  # not this session's
        assert "the clean-up under test broke" in output
        assert "removed by tests/docker_support.py" in output
        assert "outlived the test test_inner.py::test_a_fixture_whose_clean_up_breaks" in output
        assert "(service per-test, running)" in output
        assert "outlived the test session" in output and "(service per-module, " in output
    finally:
        for cid in [other.id, *(ids_file.read_text().split() if ids_file.exists() else [])]:
            with contextlib.suppress(Exception):
                client.containers.get(cid).remove(force=True)
        client.close()
