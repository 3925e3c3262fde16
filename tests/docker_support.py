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
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
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
def docker_client() -> Iterator[Any]:
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
    try:
        yield client
    finally:
        client.close()


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
