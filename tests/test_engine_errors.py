"""Bad input gets a clear error and the workspace stays as it was."""

from __future__ import annotations

import shutil
from collections import namedtuple

import psutil
import pytest

from accel_widgets.cli import main
from accel_widgets.engine.conversion.convert import convert
from accel_widgets.engine.models.build import build_model
from accel_widgets.engine.models.catalog import get_spec
from accel_widgets.engine.models.register import register_onnx
from accel_widgets.engine.store import workspace as workspace_module
from accel_widgets.errors import (
    CancelledError,
    CatalogError,
    ConversionError,
    DiskSpaceError,
    InvalidNameError,
    WeightsError,
)
from accel_widgets.progress import CancelToken


def _untouched(workspace) -> None:
    assert workspace.list_models() == []
    assert workspace.list_artifacts() == []
    assert list((workspace.root / "tmp").iterdir()) == []
    assert list((workspace.root / "models").iterdir()) == []


def test_unknown_model_lists_the_catalog(workspace, capsys):
    with pytest.raises(CatalogError) as caught:
        get_spec("resnet51")
    for name in ("resnet50", "resnet152", "densenet121", "vgg16", "ssd_vgg"):
        assert name in str(caught.value)
    code = main(["--workspace", str(workspace.root), "convert", "resnet51", "--weights", "random"])
    assert code == 1
    assert "unknown model 'resnet51'" in capsys.readouterr().err
    _untouched(workspace)


@pytest.mark.parametrize("bad", ["ResNet50", "my model", "9lives", "a" * 70, ""])
def test_bad_model_name_is_refused_before_any_work(workspace, bad):
    with pytest.raises(InvalidNameError, match="lowercase"):
        build_model("densenet121", weights="random", name=bad, workspace=workspace)
    _untouched(workspace)


def test_imagenet_weights_offline_name_the_file_and_the_ways_out(workspace):
    with pytest.raises(WeightsError) as caught:
        build_model("resnet50", weights="imagenet", workspace=workspace)
    message = str(caught.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in message
    assert 'weights="random"' in message and "offline" in message
    _untouched(workspace)


def test_missing_weights_file_is_named(workspace, tmp_path):
    missing = tmp_path / "nowhere.h5"
    with pytest.raises(WeightsError, match=r"nowhere\.h5 does not exist"):
        build_model("vgg16", weights=str(missing), workspace=workspace)
    _untouched(workspace)


def test_corrupt_and_truncated_onnx_files_are_refused(workspace, weights_dir, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model" * 100)
    truncated = tmp_path / "truncated.onnx"
    data = (weights_dir / "SqueezeNet_fp16.onnx").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    for path in (garbage, truncated):
        with pytest.raises(ConversionError, match="not a valid ONNX model"):
            register_onnx(path, "broken", workspace=workspace)
    with pytest.raises(ConversionError, match="no ONNX file"):
        register_onnx(tmp_path / "absent.onnx", "broken", workspace=workspace)
    _untouched(workspace)


def test_no_disk_space_stops_the_build_and_writes_nothing(workspace, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(
        workspace_module.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 1024, 1024)
    )
    with pytest.raises(DiskSpaceError, match="MiB needed"):
        build_model("densenet121", weights="random", workspace=workspace)
    _untouched(workspace)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """One DenseNet-121 build shared by the conversion-failure tests (copied per test)."""
    from accel_widgets.engine.store.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("small-model"))
    build_model("densenet121", weights="random", workspace=ws)
    return ws


@pytest.fixture
def built(small_model, tmp_path):
    from accel_widgets.engine.store.workspace import Workspace

    shutil.copytree(small_model.root, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def _converter_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "convert_worker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def test_cancel_during_conversion_stops_the_child_and_keeps_nothing(built):
    cancel = CancelToken()

    def progress(event):
        if event.step == "convert" and event.fraction is None:  # tf2onnx is at work
            cancel.cancel()

    with pytest.raises(CancelledError):
        convert("densenet121", workspace=built, progress=progress, cancel=cancel)
    assert _converter_processes() == []
    assert built.list_artifacts() == []
    assert list((built.root / "tmp").iterdir()) == []
    assert built.get_model("densenet121").version == 1  # the model itself is untouched


def test_broken_saved_model_fails_with_the_log_and_keeps_the_model(built):
    model = built.get_model("densenet121")
    shutil.rmtree(model.path / "saved_model" / "variables")
    with pytest.raises(ConversionError, match="conversion failed"):
        convert("densenet121", workspace=built)
    assert built.list_artifacts() == []
    assert list((built.root / "tmp").iterdir()) == []
    assert built.get_model("densenet121").ref == "densenet121:1"


def test_unknown_quantization_is_refused(built):
    with pytest.raises(ConversionError, match="int8"):
        convert("densenet121", workspace=built, quantize="int4")
