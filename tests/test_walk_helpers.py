"""Engine helpers the widgets stand on: reuse instead of re-converting, benchmark, clean-up."""

from __future__ import annotations

import pytest

from accel_widgets.engine.benchmark import benchmark_service
from accel_widgets.engine.cleanup import cleanup_plan, delete_everything, delete_item
from accel_widgets.engine.prepare import prepare_onnx
from accel_widgets.engine.samples import sample_photos
from accel_widgets.engine.targets import deploy
from accel_widgets.errors import DependencyError
from accel_widgets.progress import EventLog

BGR = {"channel_order": "BGR"}


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
