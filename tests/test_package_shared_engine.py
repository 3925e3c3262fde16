"""Two workspaces on one Docker engine, and container services that outlive a crash.

What a workshop box shared by several participants needs (issue 22): each workspace packages
and deploys the *same* model, image and service names on one engine; each must run its own
image, and neither may delete, rename or run the other's. And the container target's record
follows what Docker runs after a ``docker kill`` or a ``kill -9`` of the deploying command.

Real engine, real images (``local/debian-py:bookworm`` base, the real SqueezeNet 1.1), real
containers; each workspace here is this module's own, so nothing another test or agent
made on the shared engine is touched (objects are found by this module's workspace ids).
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from accel_widgets.engine.checks.samples import sample_photos
from accel_widgets.engine.clients.grpc_client import client_from_service
from accel_widgets.engine.models.register import register_onnx
from accel_widgets.engine.packaging import package as pkg
from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.engine.targets import delete_service, deploy, list_services, service_status
from accel_widgets.errors import CancelledError
from accel_widgets.progress import CancelToken, ProgressEvent

pytestmark = pytest.mark.timeout(600)

CAT_CLASSES = range(281, 286)
PRE = {"channel_order": "BGR", "layout": "NCHW", "dtype": "float16"}


def _register(workspace: Workspace, weights_dir: Path, name: str = "squeezenet"):
    return register_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        name,
        workspace=workspace,
        preprocessing=PRE,
        labels="imagenet",
    )


def _cat() -> bytes:
    return sample_photos(["chelsea"])[0].data


def _top1(service) -> int:
    with client_from_service(service) as client:
        return int(np.argmax(client.score_image(_cat())))


def _containers(docker_client, workspace: Workspace, service: str | None = None) -> list:
    labels = [f"io.accel-widgets.workspace={workspace.ident}"]
    if service:
        labels.append(f"io.accel-widgets.service={service}")
    return docker_client.containers.list(all=True, filters={"label": labels})


def _clean(docker_client, workspace: Workspace) -> None:
    """Whatever a failed test left of this workspace: its services, containers and images."""
    for service in workspace.list_services():
        with contextlib.suppress(Exception):
            delete_service(service.name, workspace)
    for container in _containers(docker_client, workspace):
        with contextlib.suppress(Exception):
            container.remove(force=True)
    for image in docker_client.images.list(name=f"accel-widgets/{workspace.ident}/*"):
        for tag in image.tags:
            with contextlib.suppress(Exception):
                docker_client.images.remove(tag, force=True)
    for image in docker_client.images.list(name=f"accel-widgets/{workspace.ident}/wheels"):
        for tag in image.tags:
            with contextlib.suppress(Exception):
                docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def two(tmp_path_factory, docker_client, base_image, weights_dir) -> Iterator[list[Workspace]]:
    """Two workspaces that each registered and packaged ``squeezenet`` as ``squeezenet``."""
    workspaces = [Workspace(tmp_path_factory.mktemp(f"shared-{who}") / "ws") for who in "ab"]
    try:
        for workspace in workspaces:
            _register(workspace, weights_dir)
            pkg.package("squeezenet", base=base_image, workspace=workspace)
        yield workspaces
    finally:
        for workspace in workspaces:
            _clean(docker_client, workspace)


def test_two_workspaces_with_the_same_names_each_run_their_own_and_delete_only_theirs(
    two, docker_client
):
    a, b = two
    image_a, image_b = a.get_image("squeezenet"), b.get_image("squeezenet")
    assert image_a.ref == image_b.ref == "squeezenet:1"
    assert image_a.tag != image_b.tag  # each name carries its workspace's readable id
    assert image_a.tag == f"accel-widgets/{a.ident}/squeezenet:1"
    assert image_a.info["image_id"] != image_b.info["image_id"]

    service_a = deploy("squeezenet", name="sq", target="container", workspace=a)
    service_b = deploy("squeezenet", name="sq", target="container", workspace=b)
    container_a = docker_client.containers.get(service_a.info["container_id"])
    container_b = docker_client.containers.get(service_b.info["container_id"])
    assert container_a.name != container_b.name
    assert container_a.image.id == image_a.info["image_id"]
    assert container_b.image.id == image_b.info["image_id"]
    assert _top1(service_a) in CAT_CLASSES and _top1(service_b) in CAT_CLASSES

    # A tag moved behind B's back (what the old shared names did): B still runs its own.
    repository_b, _, tag_b = image_b.tag.rpartition(":")
    docker_client.images.get(image_a.info["image_id"]).tag(repository_b, tag_b)
    [status_b] = pkg.list_images(b)
    assert status_b.present is True  # by its id, not by the moved tag
    again_b = deploy("squeezenet", name="sq2", target="container", workspace=b)
    container = docker_client.containers.get(again_b.info["container_id"])
    assert container.image.id == image_b.info["image_id"]
    assert docker_client.images.get(image_b.tag).id == image_b.info["image_id"]  # put back

    # A deletes its service and its image: B's service, containers and image stay.
    delete_service("sq", a)
    pkg.delete_image("squeezenet", workspace=a)
    assert _containers(docker_client, a) == []
    assert docker_client.images.list(name=f"accel-widgets/{a.ident}/squeezenet") == []
    assert {c.id for c in _containers(docker_client, b)} == {container_b.id, container.id}
    assert service_status("sq", b).healthy and service_status("sq2", b).healthy
    [status_b] = pkg.list_images(b)
    assert status_b.present is True
    assert docker_client.images.get(image_b.info["image_id"])
    delete_service("sq2", b)
    assert service_status("sq", b).healthy
    delete_service("sq", b)  # a test stops what it started (tests/docker_support.py checks)


def test_packaging_leaves_no_dangling_image_and_the_wheels_stage_goes_last(
    tmp_path, docker_client, base_image, weights_dir
):
    """The engine is shared: a dangling image another agent's build made meanwhile could
    show up here; the check is that ours are not among them."""
    stage = {"dangling": True, "label": "io.accel-widgets.stage=wheels"}
    before = {i.id for i in docker_client.images.list(filters=stage)}
    workspace = Workspace(tmp_path / "ws")
    try:
        _register(workspace, weights_dir)
        image = pkg.package("squeezenet", base=base_image, workspace=workspace)
        wheels = f"accel-widgets/{workspace.ident}/wheels:local-debian-py-bookworm"
        assert image.info["wheels"] == wheels
        kept = docker_client.images.get(wheels)
        assert kept.labels.get("io.accel-widgets.stage") == "wheels"
        after = {i.id for i in docker_client.images.list(filters=stage)}
        assert kept.id not in after and after <= before, after - before
        pkg.delete_image("squeezenet", workspace=workspace)
        assert docker_client.images.list(name=f"accel-widgets/{workspace.ident}/wheels") == []
    finally:
        _clean(docker_client, workspace)


def test_a_build_cancelled_after_its_wheels_stage_leaves_nothing_on_the_engine(
    tmp_path, docker_client, base_image, weights_dir
):
    """Cancel pressed while the image's last stage builds, in a workspace with no image yet:
    the wheels stage this build made (no cache, so it is its own, ~610 MB) and its last
    step's image do not stay behind as dangling images nobody's clean-up finds, and no name
    of the workspace's is left on the engine. The next build still works."""
    before = {i.id for i in docker_client.images.list(filters={"dangling": True})}
    workspace = Workspace(tmp_path / "ws")
    cancel = CancelToken()
    froms: list[str] = []

    def press_cancel_in_the_last_stage(event: ProgressEvent) -> None:
        if re.match(r"step \d+/\d+: FROM ", event.message):
            froms.append(event.message)
            if len(froms) == 2:
                cancel.cancel()

    try:
        _register(workspace, weights_dir)
        with pytest.raises(CancelledError):
            pkg.package(
                "squeezenet",
                base=base_image,
                no_cache=True,
                workspace=workspace,
                progress=press_cancel_in_the_last_stage,
                cancel=cancel,
            )
        assert len(froms) == 2  # cancelled in the final stage, after the wheels stage
        assert workspace.list_images() == []
        assert docker_client.images.list(name=f"accel-widgets/{workspace.ident}/*") == []
        after = {i.id for i in docker_client.images.list(filters={"dangling": True})}
        left = {i: docker_client.images.get(i).labels for i in after - before}
        assert not left, f"the cancelled build left images behind: {left}"

        image = pkg.package("squeezenet", base=base_image, workspace=workspace)
        assert docker_client.images.get(image.tag).id == image.info["image_id"]
    finally:
        _clean(docker_client, workspace)


def test_a_killed_container_restarts_in_place_with_its_port_and_key(two, docker_client):
    _, b = two
    first = deploy("squeezenet", name="killed", target="container", auth=True, workspace=b)
    try:
        docker_client.containers.get(first.info["container_id"]).kill()
        assert service_status("killed", b).live == "dead"

        again = deploy("squeezenet", name="killed", target="container", auth=True, workspace=b)

        assert again.state == "running"
        assert (again.port, again.key) == (first.port, first.key)
        assert again.info["container_id"] != first.info["container_id"]
        assert [c.id for c in _containers(docker_client, b, "killed")] == [
            again.info["container_id"]
        ]
        assert _top1(first) in CAT_CLASSES  # the old record's address and key still work
    finally:
        delete_service("killed", b)


KILLED_DEPLOY = textwrap.dedent(
    """
    import os, signal, sys
    from accel_widgets.engine.targets import deploy
    from accel_widgets.engine.targets.container import ContainerTarget
    from accel_widgets.engine.store.workspace import Workspace

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    ContainerTarget._wait_ready = staticmethod(die)  # killed while the container starts
    deploy("squeezenet", name="orphan", target="container", auth=True,
           workspace=Workspace(sys.argv[1]))
    """
)


def test_a_container_deploy_killed_midway_is_recorded_running_once_it_is(two, docker_client):
    _, b = two
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_DEPLOY, str(b.root)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    try:
        deadline = time.monotonic() + 120
        while True:
            [status] = [s for s in list_services(b) if s.service.name == "orphan"]
            if status.live != "starting" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert (status.live, status.service.state) == ("running", "running")
        service = status.service
        assert service.port and service.key and "pending" not in service.info
        assert [c.id for c in _containers(docker_client, b, "orphan")] == [
            service.info["container_id"]
        ]
        assert _top1(service) in CAT_CLASSES
    finally:
        with contextlib.suppress(Exception):
            delete_service("orphan", b)
    assert _containers(docker_client, b, "orphan") == []


def test_a_new_image_is_swapped_into_a_container_service_without_one_failed_request(
    two, docker_client, base_image, weights_dir
):
    """Host networking (this engine has no bridge): the new container shares the port."""
    _, b = two
    if any(n.attrs.get("Driver") == "bridge" for n in docker_client.networks.list()):
        pytest.skip("a bridge engine publishes a port for one container: no swap there")
    _register(b, weights_dir)  # squeezenet version 2, its own image
    pkg.package("squeezenet", 2, base=base_image, workspace=b)
    first = deploy("squeezenet", version=1, name="swap", target="container", auth=True, workspace=b)
    from accel_widgets.serving import protocol
    from accel_widgets.serving.tensors import make_tensor_proto

    request = protocol.PredictRequest()
    request.inputs["images"].CopyFrom(make_tensor_proto([_cat()]))
    versions: dict[int, int] = {}
    failures: list[str] = []
    stop = threading.Event()

    def score() -> None:
        with client_from_service(first, timeout=30.0) as client:
            while not stop.is_set():
                try:
                    reply = client.predict(request)
                except Exception as exc:  # every failure counts
                    failures.append(repr(exc))
                else:
                    version = int(reply.model_spec.version.value)
                    versions[version] = versions.get(version, 0) + 1

    scorer = threading.Thread(target=score, daemon=True)
    scorer.start()
    try:
        swapped = deploy(
            "squeezenet", version=2, name="swap", target="container", auth=True, workspace=b
        )
        deadline = time.monotonic() + 60
        while versions.get(2, 0) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        scorer.join(60)
    try:
        assert failures == []
        assert versions.get(1, 0) > 0 and versions.get(2, 0) >= 20
        assert (swapped.port, swapped.key) == (first.port, first.key)
        assert [c.id for c in _containers(docker_client, b, "swap")] == [
            swapped.info["container_id"]
        ]
    finally:
        delete_service("swap", b)
