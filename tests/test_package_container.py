"""Package and the container target, on a real Docker engine, as a user meets them.

Every test builds or runs real images on the engine that ``scripts/docker_env.sh`` starts
(fixtures in ``docker_support.py``), on the base image made with mmdebstrap, because no
registry can be pulled from here. The model is the real SqueezeNet 1.1 from
``../shared/weights`` (5 MB), so a build takes seconds once the wheels layer is cached.
Each test's workspace is its own; the engine is shared, so containers and images are found
by this module's names and labels, and removed at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from accel_widgets.cli import main
from accel_widgets.engine.checks.samples import sample_photos
from accel_widgets.engine.clients.grpc_client import client_from_service
from accel_widgets.engine.models.register import register_onnx
from accel_widgets.engine.packaging import package as pkg
from accel_widgets.engine.packaging.package_context import file_sha256
from accel_widgets.engine.store.workspace import ImageRecord, Workspace
from accel_widgets.engine.targets import (
    delete_service,
    deploy,
    list_services,
    service_logs,
    service_status,
)
from accel_widgets.engine.targets.container import SECRET_PATH
from accel_widgets.errors import (
    DependencyError,
    DockerUnavailableError,
    PackageError,
    ScoringError,
    ServingError,
)
from accel_widgets.progress import EventLog

pytestmark = pytest.mark.timeout(300)

CAT_CLASSES = range(281, 286)
SQUEEZENET_PRE = {"channel_order": "BGR", "layout": "NCHW", "dtype": "float16"}
# 389 MB with ONNX Runtime alone; the image also carries OpenVINO, the runtime `auto` picks
# where it measures faster (pruned to its CPU plugin and ONNX reader, +104 MB): 493 MB.
MAX_IMAGE_BYTES = 500 * 10**6


def _register_squeezenet(workspace: Workspace, weights_dir: Path, name: str = "squeezenet"):
    return register_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        name,
        workspace=workspace,
        preprocessing=SQUEEZENET_PRE,
        labels="imagenet",
    )


def _cat() -> bytes:
    return sample_photos(["chelsea"])[0].data


def _containers(docker_client, workspace: Workspace, service: str) -> list:
    """The service's containers in this workspace, found by labels (names carry a run id)."""
    labels = [
        f"io.accel-widgets.workspace={workspace.ident}",
        f"io.accel-widgets.service={service}",
    ]
    return docker_client.containers.list(all=True, filters={"label": labels})


def _remove_everything(docker_client, workspace: Workspace) -> None:
    """Stop what the tests left running and remove their images, whatever state they are in."""
    for service in workspace.list_services():
        with contextlib.suppress(Exception):
            delete_service(service.name, workspace)
    for image in workspace.list_images():
        for ref in [image.tag, *(p["ref"] for p in image.info.get("pushed", []))]:
            with contextlib.suppress(Exception):
                docker_client.images.remove(ref, force=True)
    # The workspace's wheels stage too (the build cache it named; another name keeps it).
    for stage in docker_client.images.list(name=f"accel-widgets/{workspace.ident}/wheels"):
        for tag in stage.tags:
            with contextlib.suppress(Exception):
                docker_client.images.remove(tag)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, docker_client, base_image, weights_dir) -> Iterator[ImageRecord]:
    """SqueezeNet registered and packaged once for the module, in its own workspace."""
    workspace = Workspace(tmp_path_factory.mktemp("package-ws"))
    _register_squeezenet(workspace, weights_dir)
    events = EventLog()
    image = pkg.package("squeezenet", base=base_image, workspace=workspace, progress=events)
    image.info["_events"] = list(events)  # for the test that looks at progress
    yield workspace, image
    _remove_everything(docker_client, workspace)


def test_package_builds_a_labelled_light_image(packaged, docker_client):
    workspace, image = packaged
    artifact = workspace.get_artifact("squeezenet")
    built = docker_client.images.get(image.tag)
    # The tag carries the workspace's readable id: another workspace's squeezenet is another.
    assert image.tag == f"accel-widgets/{workspace.ident}/squeezenet:1" and image.version == 1
    assert image.info["image_id"] == built.id
    labels = built.labels
    assert labels["io.accel-widgets.model"] == "squeezenet"
    assert labels["io.accel-widgets.model-version"] == "1"
    assert labels["io.accel-widgets.precision"] == "fp16"
    assert labels["io.accel-widgets.onnx-sha256"] == file_sha256(artifact.file)
    config = built.attrs["Config"]
    assert config["User"] == "10001:10001", "the server must not run as root"
    assert "accel_widgets.serving.healthcheck" in " ".join(config["Healthcheck"]["Test"])
    assert labels["io.accel-widgets.workspace"] == workspace.ident
    assert labels["io.accel-widgets.keys"] == "file"
    # Private in the workspace (0600), readable by the server's user in the image.
    listing = docker_client.containers.run(
        image.tag,
        ["-c", "import os; print(oct(os.stat('/srv/model/model.onnx').st_mode & 0o777))"],
        entrypoint="python",
        remove=True,
        network_mode="none",
    )
    assert listing.decode().strip() == "0o644"
    assert (workspace.get_artifact("squeezenet").file.stat().st_mode & 0o777) == 0o600
    assert image.info["size_bytes"] <= MAX_IMAGE_BYTES, image.info["size_bytes"]
    # The light serving set only: neither TensorFlow nor Jupyter is in the image.
    probe = (
        "import importlib.util as u; "
        "heavy = ('tensorflow', 'jupyterlab', 'ipywidgets', 'tf2onnx'); "
        "print([m for m in heavy if u.find_spec(m)])"
    )
    output = docker_client.containers.run(
        image.tag, ["-c", probe], entrypoint="python", remove=True, network_mode="none"
    )
    assert output.decode().strip() == "[]"
    # The build context stays in the workspace: the same image can be built elsewhere.
    assert (image.path / "Dockerfile").is_file()
    assert "ARG BASE=python:3.11-slim-bookworm" in (image.path / "Dockerfile").read_text()
    # The build's own steps arrive as progress, moving forward.
    events = image.info["_events"]
    fractions = [e.fraction for e in events if e.step == "package" and e.fraction is not None]
    assert len(fractions) > 5 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("step 1/" in e.message for e in events)


def test_packaging_an_unchanged_model_again_reuses_the_image(packaged, base_image):
    workspace, image = packaged
    again = pkg.package("squeezenet", base=base_image, workspace=workspace)
    assert (again.version, again.tag, again.info["image_id"]) == (
        image.version,
        image.tag,
        image.info["image_id"],
    )
    assert again.info["reused"] is True
    assert len(workspace.list_images()) == 1


def test_container_serves_with_a_key_that_is_in_no_image_and_no_log(packaged, docker_client):
    workspace, image = packaged
    events = EventLog()
    service = deploy(
        "squeezenet", target="container", auth=True, workspace=workspace, progress=events
    )
    try:
        assert service.target == "container" and service.image_id == image.id
        assert service.key and service.info["ready_seconds"] > 0
        assert events[-1].fraction == 1.0 and "ready" in events[-1].message
        with client_from_service(service) as client:
            scores = client.score_image(_cat())
        assert int(np.argmax(scores)) in CAT_CLASSES
        no_key = dataclasses.replace(service, key=None)
        with client_from_service(no_key) as client, pytest.raises(ScoringError) as refused:
            client.score_image(_cat())
        assert refused.value.code == "UNAUTHENTICATED"

        [status] = list_services(workspace)
        assert status.live == "running" and status.service.target == "container"
        logs = service_logs("squeezenet", workspace=workspace)
        assert "ready: models squeezenet" in logs
        assert service.key not in logs
        built = docker_client.images.get(image.tag)
        assert service.key not in json.dumps(built.attrs)
        assert all(service.key not in (h.get("CreatedBy") or "") for h in built.history())
        # `docker inspect`: a path to a read-only file, never the key.
        container = docker_client.containers.get(service.info["container_id"])
        inspected = json.dumps(container.attrs)
        assert service.key not in inspected
        assert f"ACCEL_WIDGETS_API_KEYS_FILE={SECRET_PATH}" in container.attrs["Config"]["Env"]
        assert not any(
            e.startswith("ACCEL_WIDGETS_API_KEYS=") for e in container.attrs["Config"]["Env"]
        )
        [mount] = [m for m in container.attrs["Mounts"] if m["Destination"] == SECRET_PATH]
        assert mount["RW"] is False
        assert container.name.startswith(f"accel-widgets-{workspace.ident}-squeezenet-")
    finally:
        delete_service("squeezenet", workspace)
    assert not _containers(docker_client, workspace, "squeezenet")
    assert workspace.list_services() == []
    assert not workspace.service_folder("squeezenet").exists()


def test_a_container_stopped_behind_our_back_reads_dead(packaged, docker_client):
    workspace, _ = packaged
    service = deploy("squeezenet", name="stopped", target="container", workspace=workspace)
    docker_client.containers.get(service.info["container_id"]).stop(timeout=2)
    assert service_status("stopped", workspace).live == "dead"
    delete_service("stopped", workspace)  # a dead container is removed all the same
    assert not _containers(docker_client, workspace, "stopped")


def test_deleting_an_image_a_service_runs_is_refused(packaged, docker_client):
    workspace, image = packaged
    deploy("squeezenet", name="busy", target="container", workspace=workspace)
    try:
        with pytest.raises(DependencyError, match="used by service busy"):
            pkg.delete_image("squeezenet", workspace=workspace)
        assert docker_client.images.get(image.tag)
        assert service_status("busy", workspace).healthy
        assert [i.ref for i in workspace.list_images()] == ["squeezenet:1"]
    finally:
        delete_service("busy", workspace)


def test_port_in_use_is_named_and_nothing_is_left(packaged, docker_client):
    workspace, _ = packaged
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServingError, match=f"port {port} on 127.0.0.1 is already in use"):
            deploy("squeezenet", name="clash", target="container", port=port, workspace=workspace)
    assert workspace.list_services() == []
    assert not _containers(docker_client, workspace, "clash")


def test_unreachable_registry_is_named_and_the_image_stays(packaged, docker_client):
    workspace, image = packaged
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    registry = f"127.0.0.1:{closed}/models"
    with pytest.raises(
        PackageError, match=f"could not push 127.0.0.1:{closed}/models/squeezenet:1"
    ):
        pkg.push_image("squeezenet", None, registry, workspace=workspace)
    assert docker_client.images.get(image.tag)
    assert not any(registry in t for t in docker_client.images.get(image.tag).tags)
    assert workspace.get_image("squeezenet").info["pushed"] == []


def test_image_removed_behind_our_back_names_a_package_command_that_works(
    packaged, docker_client, base_image, weights_dir, capsys
):
    workspace, _ = packaged
    _register_squeezenet(workspace, weights_dir, name="gone")  # its own image content
    gone = pkg.package("gone", name="gone-img", base=base_image, workspace=workspace)
    docker_client.images.remove(gone.tag)
    [status] = [s for s in pkg.list_images(workspace) if s.image.name == "gone-img"]
    assert status.present is False
    with pytest.raises(PackageError, match="no longer in the Docker engine") as error:
        deploy("gone", target="container", workspace=workspace)
    command = "accel-widgets package gone --version 1 --precision fp16 --name gone-img"
    assert f"`{command}`" in str(error.value)
    assert workspace.list_services() == []
    # The command it names works as it is (the image name is not the model's).
    args = [*command.split()[1:], "--base", base_image]
    assert main(["--workspace", str(workspace.root), *args]) == 0
    assert "gone-img:2" in capsys.readouterr().out
    service = deploy("gone", target="container", workspace=workspace)
    try:
        assert service.image_id == workspace.get_image("gone-img", 2).id
    finally:
        delete_service("gone", workspace)
    pkg.delete_image("gone-img", workspace=workspace)  # forgetting the removed one works too
    workspace.delete_model("gone")
    assert [i.name for i in workspace.list_images()] == ["squeezenet"]


def test_container_that_exits_at_start_shows_its_last_log_lines(
    packaged, docker_client, base_image, weights_dir
):
    workspace, image = packaged
    _register_squeezenet(workspace, weights_dir, name="broken")
    # The model file replaced by garbage: the server in the image cannot load it and exits.
    workspace.get_artifact("broken").file.write_bytes(b"this is not an ONNX model\n" * 64)
    broken = pkg.package("broken", base=base_image, workspace=workspace)
    try:
        with pytest.raises(ServingError, match="stopped while starting") as error:
            deploy("broken", target="container", workspace=workspace)
        assert "model.onnx" in str(error.value), "the error must show the container's log"
        assert workspace.list_services() == []
        assert not _containers(docker_client, workspace, "broken")
    finally:
        pkg.delete_image("broken", workspace=workspace)
        workspace.delete_model("broken")
    assert docker_client.images.list(name=broken.tag.rpartition(":")[0]) == []
    assert docker_client.images.get(image.tag)  # the other image of the workspace is kept


def test_no_docker_engine_writes_the_context_and_says_what_to_install(
    packaged, monkeypatch, base_image, docker_client
):
    workspace, _ = packaged
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    before = workspace.list_images()
    with pytest.raises(DockerUnavailableError) as error:
        pkg.package("squeezenet", name="offline", base=base_image, workspace=workspace)
    message = str(error.value)
    assert "apt-get install docker.io" in message and "docker build" in message
    context = Path(message.split("The build context is written to ")[1].split(";")[0])
    assert (context / "Dockerfile").is_file() and (context / "model" / "model.onnx").is_file()
    assert any((context / "wheels").glob("onnxruntime-*.whl"))
    assert workspace.list_images() == before
    # Private like the rest of the workspace, and the command the error names builds an
    # image whose server can read its files (run here with the engine back).
    assert (context.stat().st_mode & 0o777, (context / "Dockerfile").stat().st_mode & 0o777) == (
        0o700,
        0o600,
    )
    command = message.split("the image): ")[1].strip()
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    built = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env)
    tag = command.rsplit(" -t ", 1)[1].split()[0]
    try:
        assert built.returncode == 0, built.stderr[-2000:]
        readable = docker_client.containers.run(
            tag,
            ["-c", "print(len(open('/srv/model/model.onnx', 'rb').read()) > 0)"],
            entrypoint="python",
            remove=True,
            network_mode="none",
        )
        assert readable.decode().strip() == "True"
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag)
    with pytest.raises(DockerUnavailableError, match="no Docker engine answers"):
        deploy("squeezenet", name="offline", target="container", workspace=workspace)
    assert workspace.list_services() == []


def test_cli_lists_and_saves_images(packaged, tmp_path, capsys):
    workspace, image = packaged
    archive = tmp_path / "squeezenet.tar"
    code = main(
        [
            "--workspace",
            str(workspace.root),
            "package",
            "squeezenet",
            "--base",
            image.info["base"],
            "--save",
            str(archive),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert image.tag in out and str(archive) in out
    assert (
        "deploy it accel-widgets deploy squeezenet --version 1 --precision fp16 --target "
        "container --image squeezenet:1"
    ) in out
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == [image.tag]
    assert main(["--workspace", str(workspace.root), "images"]) == 0
    out = capsys.readouterr().out
    assert "squeezenet:1" in out and image.tag in out and "yes" in out
    # A setting the local target does not take is refused with the ones it does take.
    code = main(["--workspace", str(workspace.root), "deploy", "squeezenet", "--network", "host"])
    assert code == 1
    assert "--network is not a setting of the local target" in capsys.readouterr().err


def test_walkthrough_packages_and_runs_a_container_by_clicks(
    tmp_path, docker_client, base_image, weights_dir
):
    """Convert -> Package -> Deploy (container target) -> Score, each by its button."""
    from accel_widgets.widgets import Walkthrough

    workspace = Workspace(tmp_path / "walk-ws")
    walk = Walkthrough(model="squeezenet", workspace=workspace)

    def click(step, control) -> None:
        control.click()
        assert step.wait(300), f"{step.title} still running"
        assert step.error == "", step.error

    try:
        click(walk.quota, walk.quota.check_button)
        click(walk.model, walk.model.use_button)
        click(walk.convert, walk.convert.convert_button)
        assert not walk.package.locked and not walk.deploy.locked  # both need the model only
        walk.package.base.value = base_image
        click(walk.package, walk.package.package_button)
        tag = f"accel-widgets/{workspace.ident}/squeezenet:1"
        assert tag in walk.package.details.value
        assert walk.package.status.startswith(f"{tag} is ready")

        walk.deploy.target.value = "container"
        assert walk.deploy.form_box.children == (walk.deploy.forms["container"],)
        assert set(walk.deploy.controls["container"]) >= {"host", "port", "auth", "network"}
        click(walk.deploy, walk.deploy.deploy_button)
        service = walk.deploy.service
        assert service.target == "container" and service.image_id == walk.package.image.id
        assert tag in walk.deploy.details.value

        click(walk.score, walk.score.score_button)
        assert walk.score.result.top[0][0] in CAT_CLASSES
        kinds = [item.kind for item in walk.cleanup.refresh()]
        assert kinds == ["service", "image", "model"]
        image_row = walk.cleanup.rows.children[1]
        assert image_row.children[-1].disabled, "an image a service runs must not be deletable"
    finally:
        _remove_everything(docker_client, workspace)


def _served_requests(service) -> int:
    """Predict calls a server answered, from its own Prometheus counter (REST /metrics)."""
    import re
    import urllib.request

    url = f"http://127.0.0.1:{service.info['rest_port']}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    pattern = r'accel_widgets_requests_total\{[^}]*protocol="grpc"[^}]*\} (\d+)'
    counts = re.findall(pattern, text)
    return sum(int(c) for c in counts)


def test_client_round_robin_spreads_requests_over_two_containers(packaged):
    """Two containers of one image, one client with both addresses: both do the work."""
    from accel_widgets.engine.clients.grpc_client import PredictionClient

    workspace, _ = packaged
    first = deploy("squeezenet", name="rr-a", target="container", workspace=workspace)
    second = deploy("squeezenet", name="rr-b", target="container", workspace=workspace)
    try:
        before = [_served_requests(s) for s in (first, second)]
        cat = _cat()
        with PredictionClient(
            "127.0.0.1", first.port, replicas=[f"127.0.0.1:{second.port}"]
        ) as client:
            tops = {int(np.argmax(client.score_image(cat))) for _ in range(20)}
        assert tops <= set(CAT_CLASSES)
        served = [_served_requests(s) - b for s, b in zip((first, second), before, strict=True)]
        assert sum(served) == 20
        assert min(served) >= 8, f"requests were not spread over both replicas: {served}"
    finally:
        delete_service("rr-a", workspace)
        delete_service("rr-b", workspace)
