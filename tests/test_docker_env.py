"""The container test environment itself: the local base image and the loopback registry."""

from __future__ import annotations

import contextlib
import json
import secrets
import urllib.request

import docker
import docker_support
import pytest


def test_base_image_runs_python_3_11_with_venv(docker_client, base_image):
    output = docker_client.containers.run(
        base_image,
        ["python3", "-c", "import venv, sys; print(sys.version_info[:2])"],
        network_mode="host",
        remove=True,
    )
    assert output.decode().strip() == "(3, 11)"


def test_image_built_from_base_pushes_to_and_pulls_from_the_registry(
    docker_client, base_image, registry, tmp_path
):
    token = secrets.token_hex(6)
    (tmp_path / "hello.txt").write_text(f"hello {token}\n")
    (tmp_path / "Dockerfile").write_text(f"FROM {base_image}\nCOPY hello.txt /hello.txt\n")
    reference = f"{registry}/accel-widgets/hello:{token}"
    image, _logs = docker_client.images.build(path=str(tmp_path), tag=reference, rm=True)
    try:
        docker_support.push(docker_client, reference)
        docker_client.images.remove(reference)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(reference)

        pulled = docker_client.images.pull(reference)
        assert pulled.id == image.id
        output = docker_client.containers.run(
            reference, ["cat", "/hello.txt"], network_mode="host", remove=True
        )
        assert output.decode() == f"hello {token}\n"

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{registry}/v2/_catalog", timeout=10) as response:
            assert "accel-widgets/hello" in json.loads(response.read())["repositories"]
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(reference, force=True)
