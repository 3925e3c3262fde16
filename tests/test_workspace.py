"""Tests for the workspace catalog (``accel_widgets.engine.store.workspace``).

Every test works in its own ``tmp_path`` workspace and checks what a user would notice: the
versions they get back, what ``list`` shows, the files on disk, and the words of the error
they read when something is refused.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ImageRecord,
    ModelRecord,
    Workspace,
    check_name,
    default_root,
)
from accel_widgets.errors import (
    AccelError,
    DependencyError,
    DiskSpaceError,
    InvalidNameError,
    NotFoundError,
    WorkspaceError,
)

# -- helpers ---------------------------------------------------------------------------


def register(ws: Workspace, name: str, payload: bytes = b"graph", **kwargs) -> ModelRecord:
    """Stage one file and register it as the next version of ``name``."""
    kwargs.setdefault("kind", "savedmodel")
    with ws.staging() as staged:
        (staged / "saved_model.pb").write_bytes(payload)
        (staged / "variables").mkdir()
        (staged / "variables" / "variables.index").write_bytes(b"index")
        return ws.register_model(name, staged, **kwargs)


def add_onnx(
    ws: Workspace, model: ModelRecord, precision: str, payload: bytes = b"onnx"
) -> ArtifactRecord:
    with ws.staging() as staged:
        (staged / "model.onnx").write_bytes(payload)
        return ws.add_artifact(model, staged, precision=precision, report={"top1": 0.76})


def add_image(ws: Workspace, name: str, artifact: ArtifactRecord) -> ImageRecord:
    with ws.staging() as staged:
        (staged / "Dockerfile").write_text("FROM scratch\n")
        return ws.register_image(name, artifact, staged, info={"tag": f"{name}:latest"})


def tmp_entries(ws: Workspace) -> list[str]:
    return sorted(p.name for p in (ws.root / "tmp").iterdir())


def model_rows(ws: Workspace) -> list[str]:
    return [m.ref for m in ws.list_models()]


def dead_pid() -> int:
    """The pid of a process that has surely exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _register_many(root: str, name: str, count: int) -> list[int]:
    """Worker for the two-kernels test: a separate process registering ``count`` versions."""
    ws = Workspace(root)
    versions = []
    for i in range(count):
        model = register(ws, name, payload=f"{os.getpid()}-{i}".encode())
        versions.append(model.version)
    return versions


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


# -- register ---------------------------------------------------------------------------


def test_versions_count_up_per_name_and_independently_across_names(ws: Workspace) -> None:
    assert [register(ws, "resnet").version for _ in range(3)] == [1, 2, 3]
    assert register(ws, "densenet").version == 1
    assert register(ws, "resnet").version == 4
    assert register(ws, "densenet").version == 2
    assert model_rows(ws) == [
        "densenet:1",
        "densenet:2",
        "resnet:1",
        "resnet:2",
        "resnet:3",
        "resnet:4",
    ]


def test_tags_description_and_spec_round_trip(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    spec = {"input_size": 224, "labels": ["cat", "dog"], "preprocessing": {"mean": [1.0, 2.0]}}
    register(
        ws,
        "flowers",
        kind="onnx",
        description="Fine-tuned on flowers",
        tags={"team": "vision", "stage": "dev"},
        spec=spec,
    )
    # A fresh Workspace (a restarted kernel) reads back exactly what was written.
    model = Workspace(tmp_path / "ws").get_model("flowers", 1)
    assert model.kind == "onnx"
    assert model.description == "Fine-tuned on flowers"
    assert model.tags == {"team": "vision", "stage": "dev"}
    assert model.spec == spec
    assert model.ref == "flowers:1"


def test_registered_files_land_in_models_name_version_and_staging_is_gone(
    ws: Workspace,
) -> None:
    with ws.staging() as staged:
        assert staged.parent == ws.root / "tmp"
        assert staged.name.startswith(f"{os.getpid()}-")
        (staged / "saved_model.pb").write_bytes(b"graph-bytes")
        model = ws.register_model("resnet", staged, kind="savedmodel")
        assert not staged.exists()
    assert model.path == ws.root / "models" / "resnet" / "1"
    assert (model.path / "saved_model.pb").read_bytes() == b"graph-bytes"
    assert tmp_entries(ws) == []


def test_update_model_tags_replaces_the_tags(ws: Workspace) -> None:
    model = register(ws, "resnet", tags={"stage": "dev"})
    updated = ws.update_model_tags(model, {"stage": "prod"})
    assert updated.tags == {"stage": "prod"}
    assert ws.get_model("resnet", 1).tags == {"stage": "prod"}


def test_register_without_staged_files_says_to_write_them_first(ws: Workspace) -> None:
    missing = ws.root / "tmp" / "nothing-here"
    with pytest.raises(WorkspaceError, match="write the model files first") as info:
        ws.register_model("resnet", missing, kind="savedmodel")
    assert str(missing) in str(info.value)
    assert ws.list_models() == []


def test_get_latest_list_and_find_model(ws: Workspace) -> None:
    for _ in range(3):
        register(ws, "resnet")
    register(ws, "vgg")
    assert ws.get_model("resnet").version == 3
    assert ws.get_model("resnet", 2).version == 2
    assert ws.latest_model("resnet").version == 3
    assert [m.version for m in ws.list_models("resnet")] == [1, 2, 3]
    assert [m.ref for m in ws.list_models("vgg")] == ["vgg:1"]
    assert ws.list_models("nothing") == []
    found = ws.find_model("vgg")
    assert found is not None and found.ref == "vgg:1"
    assert ws.find_model("nothing") is None


def test_get_unknown_model_lists_the_models_there_are(ws: Workspace) -> None:
    register(ws, "resnet")
    register(ws, "vgg")
    with pytest.raises(NotFoundError) as info:
        ws.get_model("densenet")
    message = str(info.value)
    assert "'densenet'" in message
    assert "models: resnet, vgg" in message
    assert "Register one first" in message


def test_get_model_in_an_empty_workspace_says_none_yet(ws: Workspace) -> None:
    with pytest.raises(NotFoundError, match="models: none yet"):
        ws.get_model("resnet")


def test_get_unknown_version_lists_the_versions_there_are(ws: Workspace) -> None:
    for _ in range(3):
        register(ws, "resnet")
    with pytest.raises(NotFoundError) as info:
        ws.get_model("resnet", 7)
    message = str(info.value)
    assert "'resnet' has no version 7" in message
    assert "versions: 1, 2, 3" in message


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "suggestion"),
    [
        ("ResNet50", "resnet50"),
        ("my model", "my-model"),
        ("50layers", "m-50layers"),
        ("a" * 64, "a" * 63),
        ("", "my-model"),
    ],
    ids=["uppercase", "space", "leading-digit", "too-long", "empty"],
)
def test_bad_model_name_is_quoted_with_a_valid_spelling_and_nothing_is_written(
    ws: Workspace, bad: str, suggestion: str
) -> None:
    with ws.staging() as staged:
        (staged / "saved_model.pb").write_bytes(b"graph")
        with pytest.raises(InvalidNameError) as info:
            ws.register_model(bad, staged, kind="savedmodel")
    message = str(info.value)
    assert repr(bad) in message
    assert "lowercase" in message
    assert f"(for example {suggestion!r})" in message
    check_name(suggestion)  # the suggestion itself is accepted
    assert ws.list_models() == []
    assert list((ws.root / "models").iterdir()) == []
    assert tmp_entries(ws) == []


def test_name_with_a_trailing_newline_is_refused() -> None:
    # A name pasted with its line end would become a folder and a route with "\n" in it.
    with pytest.raises(InvalidNameError, match=re.escape(repr("resnet\n"))):
        check_name("resnet\n")


def test_bad_service_and_image_names_say_which_kind_of_name(ws: Workspace) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "fp32")
    with pytest.raises(InvalidNameError, match=r"^service name 'My Service'"):
        ws.add_service("My Service", artifact, target="local", state="running")
    with ws.staging() as staged, pytest.raises(InvalidNameError, match=r"^image name 'Img'"):
        ws.register_image("Img", artifact, staged)
    assert ws.list_services() == []
    assert ws.list_images() == []


def test_good_names_are_accepted_unchanged() -> None:
    for name in ("resnet50", "quantized-resnet50", "my_model-2", "a", "a" * 63):
        assert check_name(name) == name


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
@example("resnet\n")
@example("1" * 80)
@example("_-_")
def test_every_refused_name_comes_with_a_suggestion_that_is_accepted(name: str) -> None:
    try:
        accepted = check_name(name)
    except InvalidNameError as exc:
        match = re.search(r"\(for example '([^']*)'\)$", str(exc))
        assert match is not None, str(exc)
        assert check_name(match.group(1)) == match.group(1)
    else:
        # Whatever is accepted is safe as a folder name, route segment and k8s name.
        assert accepted == name
        assert re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", name)


# -- two kernels at once ----------------------------------------------------------------


def test_two_kernels_registering_the_same_name_get_distinct_versions(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace(root)  # created once, as a notebook would before starting work
    per_process, processes = 15, 3
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        results = pool.starmap(_register_many, [(str(root), "resnet", per_process)] * processes)
    total = per_process * processes
    got = sorted(v for versions in results for v in versions)
    assert got == list(range(1, total + 1))
    for versions in results:
        assert versions == sorted(versions)  # each kernel sees its versions go up
    ws = Workspace(root)
    models = ws.list_models("resnet")
    assert [m.version for m in models] == list(range(1, total + 1))
    for model in models:
        assert (model.path / "saved_model.pb").is_file()
    payloads = {(m.path / "saved_model.pb").read_bytes() for m in models}
    assert len(payloads) == total  # no version's files overwrote another's
    assert tmp_entries(ws) == []


# -- crash safety -----------------------------------------------------------------------


def test_exception_while_staging_removes_the_temp_folder_and_adds_no_row(
    ws: Workspace,
) -> None:
    with pytest.raises(RuntimeError, match="kernel interrupted"), ws.staging() as staged:
        (staged / "saved_model.pb").write_bytes(b"half-written")
        (staged / "variables").mkdir()
        raise RuntimeError("kernel interrupted")
    assert not staged.exists()
    assert tmp_entries(ws) == []
    assert ws.list_models() == []
    assert list((ws.root / "models").iterdir()) == []


def test_crash_between_rename_and_commit_leaves_no_row_and_reopen_sweeps_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    ws = Workspace(root)
    register(ws, "resnet")  # version 1 is safe
    real_place = Workspace._place

    def place_then_crash(self: Workspace, staged: Path, rel: str) -> None:
        real_place(self, staged, rel)
        raise KeyboardInterrupt("kernel died before the commit")

    monkeypatch.setattr(Workspace, "_place", place_then_crash)
    with pytest.raises(KeyboardInterrupt):
        register(ws, "resnet")
    with pytest.raises(KeyboardInterrupt):
        register(ws, "densenet")
    monkeypatch.undo()

    orphan = root / "models" / "resnet" / "2"
    orphan_new_name = root / "models" / "densenet" / "1"
    assert orphan.is_dir() and orphan_new_name.is_dir()  # moved, but never committed
    assert model_rows(ws) == ["resnet:1"]

    reopened = Workspace(root)
    assert not orphan.exists()
    assert not orphan_new_name.exists()
    assert (root / "models" / "resnet" / "1" / "saved_model.pb").is_file()
    assert register(reopened, "resnet").version == 2
    assert register(reopened, "densenet").version == 1
    assert model_rows(reopened) == ["densenet:1", "resnet:1", "resnet:2"]


def test_crash_while_adding_an_artifact_keeps_the_model_and_sweeps_the_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    ws = Workspace(root)
    model = register(ws, "resnet")
    real_place = Workspace._place

    def place_then_crash(self: Workspace, staged: Path, rel: str) -> None:
        real_place(self, staged, rel)
        raise RuntimeError("crash")

    monkeypatch.setattr(Workspace, "_place", place_then_crash)
    with pytest.raises(RuntimeError):
        add_onnx(ws, model, "int8")
    monkeypatch.undo()
    orphan = model.path / "artifacts" / "int8"
    assert orphan.is_dir()
    assert ws.list_artifacts() == []

    removed = Workspace(root).recover()
    assert removed == []  # opening already swept it
    assert not orphan.exists()
    assert (model.path / "saved_model.pb").is_file()
    assert model_rows(ws) == ["resnet:1"]


def test_opening_sweeps_temp_folders_of_dead_processes_but_keeps_live_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ws"
    ws = Workspace(root)
    dead = root / "tmp" / f"{dead_pid()}-0123456789ab"
    (dead / "variables").mkdir(parents=True)
    (dead / "saved_model.pb").write_bytes(b"left by a crashed kernel")
    live = root / "tmp" / f"{os.getpid()}-ba9876543210"
    live.mkdir()
    (live / "model.onnx").write_bytes(b"still being written")

    Workspace(root)
    assert not dead.exists()
    assert (live / "model.onnx").read_bytes() == b"still being written"
    assert tmp_entries(ws) == [live.name]


def test_recover_reports_what_it_removed(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    dead = ws.root / "tmp" / f"{dead_pid()}-cafe"
    dead.mkdir()
    stray = ws.root / "models" / "ghost" / "3"
    stray.mkdir(parents=True)
    assert sorted(ws.recover()) == sorted([dead, stray])
    assert ws.recover() == []


# -- artifacts --------------------------------------------------------------------------


def test_add_artifact_without_model_onnx_says_to_convert_first(ws: Workspace) -> None:
    model = register(ws, "resnet")
    with ws.staging() as staged:
        (staged / "model.pb").write_bytes(b"not onnx")
        with pytest.raises(WorkspaceError) as info:
            ws.add_artifact(model, staged, precision="fp32")
    message = str(info.value)
    assert "no model.onnx" in message
    assert str(staged) in message
    assert "convert the model first" in message
    assert ws.list_artifacts() == []
    assert not (model.path / "artifacts").exists()


def test_artifact_files_size_and_report_are_recorded(ws: Workspace) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "fp32", payload=b"x" * 1234)
    assert artifact.path == model.path / "artifacts" / "fp32"
    assert artifact.file.read_bytes() == b"x" * 1234
    assert artifact.size_bytes == 1234
    assert artifact.report == {"top1": 0.76}
    assert (artifact.model_name, artifact.model_version) == ("resnet", 1)
    assert ws.get_artifact_by_id(artifact.id) == artifact
    assert tmp_entries(ws) == []


def test_get_artifact_prefers_int8_only_when_its_gate_recommends_it(ws: Workspace) -> None:
    """Deploy and package take the best artifact that passed: an INT8 the gate recommended
    beats fp32; an unproven INT8 (no gate in its report) is never the default over fp32."""
    model = register(ws, "resnet")
    add_onnx(ws, model, "fp32")
    add_onnx(ws, model, "int8")
    assert ws.get_artifact("resnet").precision == "fp32"
    assert ws.get_artifact("resnet", 1, precision="int8").precision == "int8"
    passed = {"gate": {"recommended": True, "reasons": []}}
    with ws.staging() as staged:
        (staged / "model.onnx").write_bytes(b"onnx")
        ws.add_artifact(model, staged, precision="int8", report=passed)
    assert ws.get_artifact("resnet").precision == "int8"
    assert ws.get_artifact("resnet", 1, precision="fp32").precision == "fp32"


def test_missing_precision_names_the_ones_there_are_and_says_to_convert(
    ws: Workspace,
) -> None:
    model = register(ws, "resnet")
    add_onnx(ws, model, "fp32")
    with pytest.raises(NotFoundError) as info:
        ws.get_artifact("resnet", precision="int8")
    message = str(info.value)
    assert "resnet:1 has no int8 artifact" in message
    assert "(it has: fp32)" in message
    assert "convert it first (`accel-widgets convert resnet`)" in message


def test_model_never_converted_says_so(ws: Workspace) -> None:
    register(ws, "resnet")
    with pytest.raises(NotFoundError) as info:
        ws.get_artifact("resnet")
    message = str(info.value)
    assert "resnet:1 has no converted artifact" in message
    assert "(it has: none)" in message
    assert "convert it first" in message


def test_get_artifact_by_unknown_id_is_not_found(ws: Workspace) -> None:
    with pytest.raises(NotFoundError, match="no artifact with id 42"):
        ws.get_artifact_by_id(42)


def test_records_handed_down_find_their_artifact_and_a_deleted_one_says_convert_again(
    ws: Workspace,
) -> None:
    """Steps hand on records, not names (issue 23): a ModelRecord stands for its own
    version even after a newer one is registered, and an ArtifactRecord deleted since it
    was handed on is an error that says what to do, not a path to a missing file."""
    first = register(ws, "resnet")
    first_fp32 = add_onnx(ws, first, "fp32")
    newer = register(ws, "resnet")
    add_onnx(ws, newer, "fp32")
    assert ws.get_artifact(first).id == first_fp32.id  # not the newest version's
    assert ws.get_artifact(first_fp32) == first_fp32
    ws.delete_model("resnet", 1)
    with pytest.raises(NotFoundError, match=r"fp32 artifact of resnet:1 was deleted; convert it"):
        ws.get_artifact(first_fp32)
    with pytest.raises(NotFoundError, match="resnet"):
        ws.get_artifact(first)


def test_replacing_an_unused_artifact_swaps_its_files(ws: Workspace) -> None:
    model = register(ws, "resnet")
    first = add_onnx(ws, model, "fp32", payload=b"old")
    second = add_onnx(ws, model, "fp32", payload=b"newer")
    assert second.path == first.path
    assert second.file.read_bytes() == b"newer"
    assert second.size_bytes == 5
    assert [a.precision for a in ws.list_artifacts(model)] == ["fp32"]
    assert ws.get_artifact("resnet", precision="fp32").id == second.id


def test_replacing_an_artifact_a_service_uses_is_refused(ws: Workspace) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "int8", payload=b"serving")
    ws.add_service("resnet-svc", artifact, target="local", state="running")
    with pytest.raises(DependencyError) as info:
        add_onnx(ws, model, "int8", payload=b"replacement")
    message = str(info.value)
    assert "int8 artifact of resnet:1" in message
    assert "service resnet-svc" in message
    assert "delete those first" in message
    assert ws.get_artifact("resnet").id == artifact.id
    assert artifact.file.read_bytes() == b"serving"
    assert tmp_entries(ws) == []


def test_replacing_an_artifact_an_image_uses_is_refused(ws: Workspace) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "fp32", payload=b"packaged")
    add_image(ws, "resnet-img", artifact)
    with pytest.raises(DependencyError, match="image resnet-img:1"):
        add_onnx(ws, model, "fp32", payload=b"replacement")
    assert artifact.file.read_bytes() == b"packaged"


def test_artifact_for_a_deleted_model_says_register_again(ws: Workspace) -> None:
    model = register(ws, "resnet")
    ws.delete_model("resnet")
    with pytest.raises(NotFoundError, match="resnet:1 was deleted meanwhile; register it again"):
        add_onnx(ws, model, "fp32")
    assert tmp_entries(ws) == []


# -- dependency order -------------------------------------------------------------------


def test_delete_model_used_by_a_service_is_refused_and_keeps_everything(
    ws: Workspace,
) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "int8")
    ws.add_service("resnet-svc", artifact, target="local", state="running")
    with pytest.raises(DependencyError) as info:
        ws.delete_model("resnet", 1)
    message = str(info.value)
    assert "resnet:1" in message
    assert "service resnet-svc" in message
    assert "services, then images, then the model" in message
    assert model_rows(ws) == ["resnet:1"]
    assert [a.id for a in ws.list_artifacts()] == [artifact.id]
    assert (model.path / "saved_model.pb").is_file()
    assert artifact.file.is_file()


def test_delete_image_used_by_a_service_is_refused(ws: Workspace) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "fp32")
    image = add_image(ws, "resnet-img", artifact)
    ws.add_service("resnet-svc", artifact, image=image, target="docker", state="running")
    with pytest.raises(DependencyError) as info:
        ws.delete_image("resnet-img")
    message = str(info.value)
    assert "image resnet-img:1" in message
    assert "service resnet-svc" in message
    assert "delete the service first" in message
    assert [i.name for i in ws.list_images()] == ["resnet-img"]
    assert (image.path / "Dockerfile").is_file()


def test_delete_model_used_by_an_image_names_the_image(ws: Workspace) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "fp32")
    add_image(ws, "resnet-img", artifact)
    with pytest.raises(DependencyError, match="image resnet-img:1"):
        ws.delete_model("resnet")
    assert model_rows(ws) == ["resnet:1"]


def test_deleting_service_then_image_then_model_removes_everything(ws: Workspace) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "fp32")
    image = add_image(ws, "resnet-img", artifact)
    ws.add_service("resnet-svc", artifact, image=image, target="docker", state="running")

    assert ws.remove_service("resnet-svc").name == "resnet-svc"
    deleted_images = ws.delete_image("resnet-img")
    assert [(i.name, i.version) for i in deleted_images] == [("resnet-img", 1)]
    assert not image.path.exists()
    deleted = ws.delete_model("resnet", 1)
    assert [m.ref for m in deleted] == ["resnet:1"]
    assert not model.path.exists()
    assert not (ws.root / "models" / "resnet").exists()
    assert ws.list_models() == []
    assert ws.list_artifacts() == []
    assert ws.list_images() == []
    assert ws.list_services() == []


def test_delete_model_without_a_version_deletes_every_version(ws: Workspace) -> None:
    models = [register(ws, "resnet") for _ in range(3)]
    add_onnx(ws, models[1], "fp32")
    keep = register(ws, "vgg")
    deleted = ws.delete_model("resnet")
    assert [m.ref for m in deleted] == ["resnet:1", "resnet:2", "resnet:3"]
    assert model_rows(ws) == ["vgg:1"]
    assert ws.list_artifacts() == []
    assert not (ws.root / "models" / "resnet").exists()
    assert (keep.path / "saved_model.pb").is_file()


def test_delete_one_version_keeps_the_others(ws: Workspace) -> None:
    models = [register(ws, "resnet") for _ in range(3)]
    ws.delete_model("resnet", 2)
    assert model_rows(ws) == ["resnet:1", "resnet:3"]
    assert not models[1].path.exists()
    assert models[0].path.is_dir() and models[2].path.is_dir()


def test_delete_unknown_model_lists_the_models_there_are(ws: Workspace) -> None:
    register(ws, "resnet")
    with pytest.raises(NotFoundError, match="models: resnet"):
        ws.delete_model("vgg")
    with pytest.raises(NotFoundError, match="versions: 1"):
        ws.delete_model("resnet", 5)


def test_delete_unknown_image_lists_the_images_there_are(ws: Workspace) -> None:
    model = register(ws, "resnet")
    add_image(ws, "resnet-img", add_onnx(ws, model, "fp32"))
    with pytest.raises(NotFoundError, match="no image 'vgg-img'; images: resnet-img:1"):
        ws.delete_image("vgg-img")
    with pytest.raises(NotFoundError, match="no image 'resnet-img:3'; images: resnet-img:1"):
        ws.delete_image("resnet-img", 3)


def test_images_count_versions_per_name(ws: Workspace) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "fp32")
    first = add_image(ws, "resnet-img", artifact)
    second = add_image(ws, "resnet-img", artifact)
    assert (first.version, second.version) == (1, 2)
    assert second.path == ws.root / "images" / "resnet-img" / "2"
    assert (second.path / "Dockerfile").is_file()
    assert second.info == {"tag": "resnet-img:latest"}
    assert ws.get_image("resnet-img").version == 2
    assert ws.get_image("resnet-img", 1).id == first.id


# -- services ---------------------------------------------------------------------------


def test_service_add_get_update_list_remove(ws: Workspace, tmp_path: Path) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "int8")
    log = tmp_path / "svc.log"
    added = ws.add_service(
        "resnet-svc",
        artifact,
        target="local",
        state="starting",
        address="127.0.0.1",
        port=50051,
        pid=os.getpid(),
        key="secret",
        log_path=log,
        info={"tls": True},
    )
    assert added.artifact_id == artifact.id
    assert (added.address, added.port, added.key, added.state) == (
        "127.0.0.1",
        50051,
        "secret",
        "starting",
    )
    assert added.log_path == log
    assert added.use_ssl

    updated = ws.update_service("resnet-svc", state="running", port=50052, info={"tls": False})
    assert (updated.state, updated.port) == ("running", 50052)
    assert not updated.use_ssl
    assert updated.updated_at >= added.updated_at
    assert ws.get_service("resnet-svc") == updated

    ws.add_service("another", artifact, target="local", state="stopped")
    assert [s.name for s in ws.list_services()] == ["another", "resnet-svc"]

    removed = ws.remove_service("resnet-svc")
    assert removed.name == "resnet-svc"
    assert [s.name for s in ws.list_services()] == ["another"]


def test_duplicate_service_name_says_to_delete_the_old_one_first(ws: Workspace) -> None:
    artifact = add_onnx(ws, register(ws, "resnet"), "fp32")
    ws.add_service("resnet-svc", artifact, target="local", state="running", port=1)
    with pytest.raises(WorkspaceError) as info:
        ws.add_service("resnet-svc", artifact, target="local", state="running", port=2)
    message = str(info.value)
    assert "'resnet-svc' already exists" in message
    assert "delete it first (`accel-widgets delete service resnet-svc`)" in message
    assert ws.get_service("resnet-svc").port == 1


def test_update_service_with_an_unknown_field_lists_the_allowed_ones(ws: Workspace) -> None:
    artifact = add_onnx(ws, register(ws, "resnet"), "fp32")
    ws.add_service("resnet-svc", artifact, target="local", state="running")
    with pytest.raises(WorkspaceError) as info:
        ws.update_service("resnet-svc", state="stopped", colour="blue")
    message = str(info.value)
    assert "cannot change ['colour']" in message
    for allowed in ("address", "port", "pid", "key", "state", "log_path", "info", "image_id"):
        assert repr(allowed) in message
    assert ws.get_service("resnet-svc").state == "running"


def test_update_service_with_no_changes_keeps_the_record(ws: Workspace) -> None:
    artifact = add_onnx(ws, register(ws, "resnet"), "fp32")
    added = ws.add_service("resnet-svc", artifact, target="local", state="running")
    touched = ws.update_service("resnet-svc")
    assert (touched.state, touched.artifact_id) == ("running", added.artifact_id)


def test_update_unknown_service_is_not_found(ws: Workspace) -> None:
    with pytest.raises(NotFoundError, match="no service 'ghost'"):
        ws.update_service("ghost", state="running")


def test_get_unknown_service_lists_the_services_there_are(ws: Workspace) -> None:
    with pytest.raises(NotFoundError, match="services: none running"):
        ws.get_service("ghost")
    artifact = add_onnx(ws, register(ws, "resnet"), "fp32")
    ws.add_service("beta", artifact, target="local", state="running")
    ws.add_service("alpha", artifact, target="local", state="running")
    with pytest.raises(NotFoundError) as info:
        ws.get_service("ghost")
    assert "no service 'ghost'; services: alpha, beta" in str(info.value)
    with pytest.raises(NotFoundError, match="services: alpha, beta"):
        ws.remove_service("ghost")


# -- disk -------------------------------------------------------------------------------


def test_not_enough_disk_says_mib_needed_and_free_and_what_to_delete(ws: Workspace) -> None:
    with pytest.raises(DiskSpaceError) as info:
        ws.check_disk(10**18)
    message = str(info.value)
    assert re.search(r"953,674,316,406 MiB needed, [\d,]+ MiB free", message), message
    assert str(ws.root) in message
    assert "Delete old models (`accel-widgets delete model NAME`)" in message


def test_small_or_no_requirement_passes_the_disk_check(ws: Workspace) -> None:
    ws.check_disk(0)
    ws.check_disk(-5)
    ws.check_disk(1)


def test_staging_that_cannot_fit_raises_before_creating_anything(ws: Workspace) -> None:
    with pytest.raises(DiskSpaceError, match="MiB needed"), ws.staging(min_free_bytes=10**18):
        pytest.fail("the staging folder should not have been handed out")
    assert tmp_entries(ws) == []


# -- root -------------------------------------------------------------------------------


def test_workspace_under_a_regular_file_is_refused_with_a_clear_message(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    root = blocker / "ws"
    with pytest.raises(WorkspaceError) as info:
        Workspace(root)
    message = str(info.value)
    assert f"cannot create the workspace folder {root}" in message
    assert "Choose a writable folder" in message
    assert "ACCEL_WIDGETS_WORKSPACE" in message
    assert isinstance(info.value, AccelError)


def test_default_root_follows_accel_widgets_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "from-env"
    monkeypatch.setenv("ACCEL_WIDGETS_WORKSPACE", str(target))
    assert default_root() == target
    ws = Workspace()
    assert ws.root == target
    assert (target / "catalog.db").is_file()
    assert repr(ws) == f"Workspace({str(target)!r})"


def test_default_root_expands_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ACCEL_WIDGETS_WORKSPACE", "~/my-ws")
    assert default_root() == tmp_path / "my-ws"


def test_default_root_without_the_variable_uses_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACCEL_WIDGETS_WORKSPACE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_root() == tmp_path / "data" / "accel-widgets" / "workspace"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_root() == tmp_path / ".local" / "share" / "accel-widgets" / "workspace"


def test_reopening_keeps_the_catalog(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    first = Workspace(root)
    model = register(first, "resnet")
    add_onnx(first, model, "fp32")
    second = Workspace(root)
    assert model_rows(second) == ["resnet:1"]
    assert second.get_artifact("resnet").file.is_file()


def test_deleted_version_number_is_never_reused(tmp_path):
    """resnet50:2 always means the same model, even after it was deleted."""
    ws = Workspace(tmp_path / "ws")
    for _ in range(2):
        with ws.staging() as staged:
            (staged / "model.json").write_text("{}")
            ws.register_model("resnet50", staged, kind="catalog")
    ws.delete_model("resnet50", 2)
    with ws.staging() as staged:
        (staged / "model.json").write_text("{}")
        again = ws.register_model("resnet50", staged, kind="catalog")
    assert again.version == 3
    assert [m.version for m in ws.list_models("resnet50")] == [1, 3]


# -- keys at rest and privacy (issue 22) ---------------------------------------------------

KEY = "kT9-" + "q" * 39  # the shape of a generated key: 43 URL-safe characters


def _catalog_bytes(ws: Workspace) -> bytes:
    """Everything SQLite keeps on disk for the catalog: the file, its WAL and shared memory."""
    return b"".join(path.read_bytes() for path in ws.root.glob("catalog.db*") if path.is_file())


def _modes(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): path.stat().st_mode & 0o777
        for path in [root, *root.rglob("*")]
    }


def test_the_catalog_keeps_a_hash_and_the_key_lives_in_a_private_file(ws: Workspace) -> None:
    from accel_widgets.engine.store.keys import verify_key

    artifact = add_onnx(ws, register(ws, "resnet"), "fp32")
    added = ws.add_service("svc", artifact, target="local", state="running", key=KEY)
    assert added.key == KEY and ws.get_service("svc").key == KEY  # the owner still reads it
    assert verify_key(KEY, added.key_hash) and not verify_key(KEY + "x", added.key_hash)
    key_file = ws.key_file("svc")
    assert key_file.read_text().strip() == KEY
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert KEY.encode() not in _catalog_bytes(ws)
    with sqlite3.connect(ws.db_path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(services)")]
    assert "key" not in columns and "key_hash" in columns

    other = "Zz-" + "w" * 40
    rotated = ws.update_service("svc", key=other)
    assert rotated.key == other and verify_key(other, rotated.key_hash)
    assert key_file.read_text().strip() == other
    no_key = ws.update_service("svc", key=None)
    assert no_key.key is None and no_key.key_hash is None and not key_file.exists()
    ws.update_service("svc", key=KEY)
    ws.remove_service("svc")
    assert not key_file.exists() and not ws.service_folder("svc").exists()
    assert KEY.encode() not in _catalog_bytes(ws) and other.encode() not in _catalog_bytes(ws)


def test_a_taken_service_name_keeps_the_first_services_key(ws: Workspace) -> None:
    artifact = add_onnx(ws, register(ws, "resnet"), "fp32")
    ws.add_service("svc", artifact, target="local", state="running", key=KEY)
    with pytest.raises(WorkspaceError, match="already exists"):
        ws.add_service("svc", artifact, target="local", state="running", key="another-" * 5)
    assert ws.get_service("svc").key == KEY
    assert [p.name for p in ws.service_folder("svc").iterdir()] == ["keys"]


def test_every_folder_is_0700_and_every_file_0600(ws: Workspace) -> None:
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "fp32")
    add_image(ws, "resnet", artifact)
    ws.add_service("svc", artifact, target="local", state="running", key=KEY)
    modes = _modes(ws.root)
    loose = {
        path: oct(mode)
        for path, mode in modes.items()
        if mode != (0o700 if (ws.root / path).is_dir() or path == "." else 0o600)
    }
    assert loose == {}, loose
    assert "catalog.db" in modes and "services/svc/keys" in modes


def test_opening_an_older_workspace_makes_it_private(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace(root)
    os.chmod(root, 0o755)
    os.chmod(root / "models", 0o755)
    os.chmod(root / "catalog.db", 0o644)
    Workspace(root)
    assert (root.stat().st_mode & 0o777, (root / "models").stat().st_mode & 0o777) == (
        0o700,
        0o700,
    )
    assert (root / "catalog.db").stat().st_mode & 0o777 == 0o600


def test_a_hard_link_to_a_file_outside_keeps_its_mode(ws: Workspace, tmp_path: Path) -> None:
    """A build context links the installed package's code: chmod would change the original."""
    shared = tmp_path / "shared.py"
    shared.write_text("print('public code')\n")
    os.chmod(shared, 0o644)
    model = register(ws, "resnet")
    artifact = add_onnx(ws, model, "fp32")
    with ws.staging() as staged:
        (staged / "Dockerfile").write_text("FROM scratch\n")
        os.link(shared, staged / "shared.py")
        image = ws.register_image("resnet", artifact, staged, info={})
    assert shared.stat().st_mode & 0o777 == 0o644
    assert (image.path / "Dockerfile").stat().st_mode & 0o777 == 0o600


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE versions (kind TEXT NOT NULL, name TEXT NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (kind, name));
CREATE TABLE models (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
    version INTEGER NOT NULL, kind TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '{}', spec TEXT NOT NULL DEFAULT '{}', path TEXT NOT NULL,
    created_at REAL NOT NULL, UNIQUE (name, version));
CREATE TABLE artifacts (id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id INTEGER NOT NULL REFERENCES models(id), precision TEXT NOT NULL,
    format TEXT NOT NULL DEFAULT 'onnx', path TEXT NOT NULL, size_bytes INTEGER NOT NULL,
    report TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, UNIQUE (model_id, precision));
CREATE TABLE images (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
    version INTEGER NOT NULL, artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    path TEXT NOT NULL, info TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL,
    UNIQUE (name, version));
CREATE TABLE services (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id), image_id INTEGER REFERENCES images(id),
    target TEXT NOT NULL, address TEXT NOT NULL DEFAULT '', port INTEGER, pid INTEGER, key TEXT,
    state TEXT NOT NULL, log_path TEXT, info TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO models VALUES (1, 'resnet', 1, 'onnx', '', '{}', '{}', 'models/resnet/1', 0);
INSERT INTO artifacts VALUES (1, 1, 'fp32', 'onnx', 'models/resnet/1/artifacts/fp32', 4, '{}', 0);
"""


def test_a_schema_1_catalog_with_plain_keys_is_migrated_and_no_copy_is_left(
    tmp_path: Path,
) -> None:
    """A workspace written before issue 22: keys in plain text in catalog.db (0644)."""
    from accel_widgets.engine.store.keys import verify_key

    root = tmp_path / "old"
    (root / "models" / "resnet" / "1" / "artifacts" / "fp32").mkdir(parents=True)
    (root / "models" / "resnet" / "1" / "artifacts" / "fp32" / "model.onnx").write_bytes(b"onnx")
    with sqlite3.connect(root / "catalog.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA_1)
        for index, (name, key) in enumerate([("alpha", KEY), ("beta", None)]):
            db.execute(
                "INSERT INTO services (name, artifact_id, target, port, key, state, info, "
                "created_at, updated_at) VALUES (?, 1, 'local', ?, ?, 'dead', '{}', 0, 0)",
                (name, 9000 + index, key),
            )
    assert KEY.encode() in (root / "catalog.db").read_bytes() + b"".join(
        p.read_bytes() for p in root.glob("catalog.db-*")
    )

    ws = Workspace(root)

    alpha, beta = ws.list_services()
    assert (alpha.name, alpha.key, alpha.port) == ("alpha", KEY, 9000)
    assert verify_key(KEY, alpha.key_hash)
    assert (beta.key, beta.key_hash) == (None, None)
    assert ws.key_file("alpha").stat().st_mode & 0o777 == 0o600
    assert not ws.key_file("beta").exists()
    assert KEY.encode() not in _catalog_bytes(ws), "a copy of the key is left in the catalog"
    with sqlite3.connect(ws.db_path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == ("2",)
    assert Workspace(root).get_service("alpha").key == KEY  # opened again: nothing changes


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_can_read_nothing_of_the_workspace(tmp_path: Path) -> None:
    """As ``nobody`` (uid 65534), list and read every path of a workspace with a keyed service.

    The workspace sits in a folder anyone may enter (pytest's own temp folders are 0700,
    which would hide everything whatever the workspace did).
    """
    import shutil as sh
    import tempfile

    open_to_all = Path(tempfile.mkdtemp(prefix="accel-widgets-test-"))
    os.chmod(open_to_all, 0o755)
    try:
        _nobody_reads_nothing(Workspace(open_to_all / "ws"))
    finally:
        sh.rmtree(open_to_all, ignore_errors=True)


def _nobody_reads_nothing(ws: Workspace) -> None:
    artifact = add_onnx(ws, register(ws, "resnet"), "fp32")
    ws.add_service("svc", artifact, target="local", state="running", key=KEY)
    paths = [p for p in [ws.root, *ws.root.rglob("*")]]
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the other user: a forked child that gave up root for good
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            opened, found = 0, []
            for path in paths:
                try:
                    data = path.read_bytes() if path.is_file() else repr(os.listdir(path)).encode()
                except OSError:
                    continue
                opened += 1
                found += [str(path)] if KEY.encode() in data else []
            os.write(write, json.dumps({"read": opened, "found": found}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        seen = json.loads(pipe.read() or b"null")
    os.waitpid(child, 0)
    assert seen == {"read": 0, "found": []}, seen
    # The same walk as the owner reads the key in its file: the probe would have found it.
    assert any(KEY.encode() in p.read_bytes() for p in paths if p.is_file())


def test_the_service_lock_is_one_holders_and_dies_with_it(ws: Workspace) -> None:
    with ws.service_lock("svc") as first:
        assert first is True
        with ws.service_lock("svc") as second:
            assert second is False  # another holder (another deploy) is refused at once
        assert ws.lock_holder("svc") == os.getpid()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from accel_widgets.engine.store.workspace import Workspace\n"
            "with Workspace(sys.argv[1]).service_lock('svc') as held:\n"
            "    print(held, flush=True)\n"
            "    time.sleep(600)\n",
            str(ws.root),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        with ws.service_lock("svc") as taken:
            assert taken is False
        holder.kill()  # kill -9: the kernel drops the lock with its holder
        holder.wait()
        with ws.service_lock("svc") as taken:
            assert taken is True
    finally:
        holder.kill()
        holder.wait()


def test_the_workspace_id_is_readable_kept_and_new_for_a_copy(tmp_path: Path) -> None:
    import getpass
    import shutil as sh

    first = Workspace(tmp_path / "a")
    assert re.fullmatch(r"[a-z0-9-]+-[0-9a-f]{8}", first.ident), first.ident
    assert first.ident.startswith(re.sub(r"[^a-z0-9]+", "-", getpass.getuser().lower())[:20])
    assert Workspace(tmp_path / "a").ident == first.ident
    sh.copytree(tmp_path / "a", tmp_path / "copy")
    assert Workspace(tmp_path / "copy").ident != first.ident  # the original is still there
    (tmp_path / "a").rename(tmp_path / "moved")
    assert Workspace(tmp_path / "moved").ident == first.ident  # a move keeps its objects
