"""A packaged image carries the workspace it belongs to, so one workspace never deletes
another's image.

Two workspaces (two users, two test runs) on one Docker engine package the same model: the
builds are byte-for-byte the same but for the ``io.accel-widgets.workspace`` label. Without
it the engine would make one image of both, and deleting the image in one workspace would
remove the other's. Built for real on the engine (the local base image, the real SqueezeNet)
under a model name no other test uses; everything built is removed at the end.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil

import pytest

from accel_widgets.engine.models.register import register_onnx
from accel_widgets.engine.packaging import package as pkg
from accel_widgets.engine.store.workspace import Workspace

pytestmark = pytest.mark.timeout(600)

WORKSPACE_LABEL = "io.accel-widgets.workspace"


@pytest.fixture
def two_workspaces(tmp_path, docker_client, base_image, weights_dir):
    """The same model, registered under one unique name in two workspaces, packaged in each."""
    name = "pinned-" + secrets.token_hex(4)
    register_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        name,
        workspace=Workspace(tmp_path / "a"),
        preprocessing={"channel_order": "BGR"},
        labels=None,
    )
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same model, another workspace
    built = []
    images = []
    try:
        for side in ("a", "b"):
            workspace = Workspace(tmp_path / side)
            image = pkg.package(name, base=base_image, workspace=workspace)
            built.append(image.info["image_id"])
            images.append((workspace, image))
        yield name, images
    finally:
        for image_id in built:  # by id: whatever the engine's tags are called
            with contextlib.suppress(Exception):
                docker_client.images.remove(image_id, force=True)


def test_each_workspace_gets_its_own_image_and_deleting_one_keeps_the_other(
    two_workspaces, docker_client
):
    name, [(first_ws, first), (second_ws, second)] = two_workspaces
    first_labels = docker_client.images.get(first.info["image_id"]).labels
    second_labels = docker_client.images.get(second.info["image_id"]).labels
    assert first_labels[WORKSPACE_LABEL] and second_labels[WORKSPACE_LABEL]
    assert first_labels[WORKSPACE_LABEL] != second_labels[WORKSPACE_LABEL]
    # Everything else is the same model: the workspace is the only difference.
    assert {k: v for k, v in first_labels.items() if k != WORKSPACE_LABEL} == {
        k: v for k, v in second_labels.items() if k != WORKSPACE_LABEL
    }
    assert first.info["image_id"] != second.info["image_id"]
    # The same workspace packaging again gets its own image back, labelled the same.
    again = pkg.package(name, workspace=second_ws, base=second.info["base"])
    assert again.info["image_id"] == second.info["image_id"] and again.info["reused"]

    pkg.delete_image(name, workspace=first_ws)
    assert first_ws.list_images() == []
    still = docker_client.images.get(second.info["image_id"])
    assert still.labels[WORKSPACE_LABEL] == second_labels[WORKSPACE_LABEL]
    assert [i.ref for i in second_ws.list_images()] == [f"{name}:1"]
