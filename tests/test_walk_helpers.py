"""Engine helpers the widgets stand on: reuse instead of re-converting, benchmark, clean-up."""

from __future__ import annotations

import pytest

from accel_widgets.engine.checks.samples import sample_photos
from accel_widgets.engine.clients.benchmark import benchmark_service
from accel_widgets.engine.models.known_files import SAMPLE_PREPROCESSING
from accel_widgets.engine.store.cleanup import cleanup_plan, delete_everything, delete_item
from accel_widgets.engine.targets import deploy
from accel_widgets.engine.walk.prepare import prepare_onnx
from accel_widgets.errors import DependencyError
from accel_widgets.progress import EventLog

BGR = SAMPLE_PREPROCESSING  # the pixels the sample was trained on (known_files.py)


def test_second_prepare_of_the_same_file_reuses_it(workspace, weights_dir):
    path = weights_dir / "SqueezeNet_fp16.onnx"
    first, _, reused = prepare_onnx(path, "squeezenet", preprocessing=BGR, workspace=workspace)
    assert not reused
    again, artifacts, reused = prepare_onnx(
        path, "squeezenet", preprocessing=BGR, workspace=workspace
    )
    assert reused and again.ref == first.ref == "squeezenet:1"
    assert [a.precision for a in artifacts] == ["fp16"]


def test_benchmark_and_cleanup_in_dependency_order(workspace, weights_dir):
    prepare_onnx(
        weights_dir / "SqueezeNet_fp16.onnx", "squeezenet", preprocessing=BGR, workspace=workspace
    )
    service = deploy("squeezenet", workspace=workspace)
    try:
        events = EventLog()
        result = benchmark_service(
            service, sample_photos(["chelsea"])[0].data, requests=20, concurrency=2, progress=events
        )
        assert len(result.latencies_ms) == 20 and result.errors == 0
        assert 0 < result.p50_ms <= result.p99_ms and result.throughput > 0
        assert events[-1].fraction == 1.0 and "p50" in events[-1].message

        plan = cleanup_plan(workspace)
        assert [i.kind for i in plan] == ["service", "model"]
        model_row = plan[1]
        assert model_row.blocked_by == ("service squeezenet",)
        with pytest.raises(DependencyError, match="service squeezenet"):
            delete_item(model_row, workspace)
    finally:
        deleted = delete_everything(workspace)
    assert [i.label for i in deleted] == ["service squeezenet", "model squeezenet:1"]
    assert cleanup_plan(workspace) == []


def test_model_choices_offer_the_real_sample_first_then_the_catalog(weights_dir):
    from accel_widgets.engine.walk.choices import get_choice, model_choices

    choices = model_choices()
    assert choices[0].key == "squeezenet" and choices[0].kind == "sample"
    assert choices[0].path == weights_dir / "SqueezeNet_fp16.onnx"
    assert {"resnet50", "quantized-resnet50", "vgg16"} <= {c.key for c in choices}
    assert "ssd_vgg" in {c.key for c in choices}  # the detector is offered too
    assert get_choice("ResNet50").key == "resnet50"


def test_unknown_model_choice_lists_what_there_is():
    from accel_widgets.engine.walk.choices import get_choice
    from accel_widgets.errors import CatalogError

    with pytest.raises(CatalogError, match=r"unknown model 'alexnet'; choose one of: .*resnet50"):
        get_choice("alexnet")


def test_missing_sample_model_says_where_it_looked(tmp_path, monkeypatch):
    from accel_widgets.engine.walk import choices
    from accel_widgets.errors import WeightsError

    monkeypatch.setattr(choices, "weights_dirs", lambda: [tmp_path])
    with pytest.raises(WeightsError, match="ACCEL_WIDGETS_WEIGHTS_DIR") as caught:
        choices.get_choice("squeezenet")
    assert str(tmp_path) in str(caught.value)


def test_walkthrough_copy_never_overwrites_the_users_copy(tmp_path):
    from accel_widgets.engine.walk.notebooks import WALKTHROUGH, copy_walkthrough

    path, created = copy_walkthrough(tmp_path)
    assert created and path == tmp_path / WALKTHROUGH
    assert b"Walkthrough(model=MODEL)" in path.read_bytes()
    path.write_text("my edits")
    again, created = copy_walkthrough(tmp_path)
    assert again == path and not created and path.read_text() == "my edits"


def test_deploy_or_reuse_keeps_a_matching_service_and_replaces_one_on_another_port(
    workspace, weights_dir
):
    import socket

    import psutil

    from accel_widgets.engine.targets import delete_service, deploy_or_reuse

    prepare_onnx(
        weights_dir / "SqueezeNet_fp16.onnx", "squeezenet", preprocessing=BGR, workspace=workspace
    )
    first, reused = deploy_or_reuse("squeezenet", name="sq", workspace=workspace)
    try:
        assert not reused
        again, reused = deploy_or_reuse("squeezenet", name="sq", workspace=workspace)
        assert reused and (again.pid, again.port) == (first.pid, first.port)

        with socket.socket() as probe:  # a free port that is not the one serving now
            probe.bind(("127.0.0.1", 0))
            wanted = probe.getsockname()[1]
        moved, reused = deploy_or_reuse("squeezenet", name="sq", port=wanted, workspace=workspace)
        assert not reused and moved.port == wanted and moved.pid != first.pid
        assert not psutil.pid_exists(first.pid) or (
            psutil.Process(first.pid).status() == psutil.STATUS_ZOMBIE
        )
        assert [s.name for s in workspace.list_services()] == ["sq"]
    finally:
        for service in workspace.list_services():
            delete_service(service.name, workspace)
