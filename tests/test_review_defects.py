"""The defects a review found, each with the test that would have caught it (issue 12).

* the Deploy widget put the whole API key in its HTML (an ``onclick`` attribute), so it was
  in the page and in saved widget state;
* every runtime failure was answered INVALID_ARGUMENT, even running out of memory;
* the Jupyter server extension opened a new ``Workspace`` (schema script, recovery sweep)
  for every request while the sidebar polls every 5 s;
* the CLI repeated engine logic: scoring (tests/test_targets_local.py checks that ``score``
  goes through ``engine/clients/scoring.py``), the report table, key masking, the quantize rule;
* ``schema_version`` was written and never read.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from accel_widgets.engine.store.workspace import ServiceRecord, Workspace
from accel_widgets.errors import WorkspaceError
from accel_widgets.serving.config import ModelConfig, OutputConfig
from accel_widgets.serving.status import RequestError

KEY = "k-" + "5ecret" * 6


# -- the Deploy widget ---------------------------------------------------------------------------


def test_the_deploy_widget_never_puts_the_api_key_in_the_page_or_widget_state(tmp_path):
    pytest.importorskip("ipywidgets")
    from ipywidgets.embed import embed_data

    from accel_widgets.widgets import DeployWidget

    widget = DeployWidget(Workspace(tmp_path / "ws"))
    service = ServiceRecord(
        id=1,
        name="cats",
        artifact_id=1,
        image_id=None,
        target="local",
        address="127.0.0.1",
        port=8500,
        pid=None,
        key=KEY,
        state="running",
        log_path=None,
    )
    widget._show(service, "running")

    state = json.dumps(embed_data(views=[widget])["manager_state"])
    assert "copy key" in widget.details.value, "the copy button is still offered"
    assert KEY not in widget.details.value and KEY[4:-4] not in state
    assert KEY[:4] in widget.details.value  # the masked form tells two keys apart
    assert "accel-widgets/api/services/" in widget.details.value  # fetched when clicked


# -- runtime failures are not the client's fault ------------------------------------------------


def _model_file(path: Path, kind: str) -> Path:
    """A real ONNX model that fails at run time on large input values, in one of two ways.

    Input ``x`` float32 [N, 2, 2, 3] (the server's preprocessing at size 2), output ``y`` =
    ``x`` (+ 0 from the failing branch). A value above 1000 makes ``oom`` expand a
    [1, 2^20, 2^20] tensor (4 TiB: ONNX Runtime's arena fails to allocate) and ``fail``
    reshape 12 elements into rows of 5 (ORT's Fail status). Pixels of a real image (0..255)
    never trigger either, so the server's warm-up and good requests pass.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: object, dtype: object = np.int64) -> object:
        return numpy_helper.from_array(np.array(value, dtype=dtype), name)

    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Sub", ["m", "thousand"], ["over"]),
        helper.make_node("Relu", ["over"], ["excess"]),
        helper.make_node("Sign", ["excess"], ["flag_f"]),
        helper.make_node("Cast", ["flag_f"], ["flag"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["flag", "axes0"], ["flag1"]),
    ]
    if kind == "oom":
        nodes += [
            helper.make_node("Mul", ["flag1", "huge"], ["scaled"]),
            helper.make_node("Add", ["scaled", "one"], ["side"]),
            helper.make_node("Concat", ["one", "side", "side"], ["shape"], axis=0),
            helper.make_node("Expand", ["zero_f", "shape"], ["big"]),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        ]
    else:
        nodes += [
            helper.make_node("Mul", ["flag1", "four"], ["scaled"]),
            helper.make_node("Add", ["scaled", "one"], ["rows"]),  # 1, or 5 when triggered
            helper.make_node("Concat", ["minus_one", "rows"], ["shape"], axis=0),
            helper.make_node("Reshape", ["x", "shape"], ["reshaped"]),
            helper.make_node("ReduceSum", ["reshaped"], ["sum"], keepdims=0),
            helper.make_node("Mul", ["sum", "zero_f"], ["total"]),
        ]
    nodes.append(helper.make_node("Add", ["x", "total"], ["y"]))
    initializers = [
        const("thousand", 1000.0, np.float32),
        const("axes0", [0]),
        const("huge", [1 << 20]),
        const("one", [1]),
        const("four", [4]),
        const("minus_one", [-1]),
        const("zero_f", 0.0, np.float32),
    ]
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 2, 3])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("kind", "code", "words"),
    [("oom", "RESOURCE_EXHAUSTED", "ran out of memory"), ("fail", "INTERNAL", "the server's")],
)
def test_a_runtime_failure_is_the_servers_status_not_invalid_argument(tmp_path, kind, code, words):
    import onnxruntime as ort

    from accel_widgets.serving.model import LoadedModel

    path = _model_file(tmp_path / f"{kind}.onnx", kind)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    config = ModelConfig(
        name=kind, onnx=path, outputs=(OutputConfig(alias="output_alias", onnx_output="y"),)
    )
    model = LoadedModel(config, session, max_pixels=10**6, max_batch=4)
    fine = model.predict("x", np.full((1, 2, 2, 3), 200.0, np.float32), [])
    np.testing.assert_array_equal(fine["output_alias"], np.full((1, 2, 2, 3), 200.0, np.float32))
    with pytest.raises(RequestError) as info:
        model.predict("x", np.full((1, 2, 2, 3), 5000.0, np.float32), [])
    assert info.value.code == code and words in info.value.message
    # The runtime's own invalid-argument stays the client's (a rank the graph cannot take).
    from accel_widgets.serving.model import runtime_failure

    try:
        session.run(None, {"x": np.ones((1, 2, 2), np.float32)})
    except Exception as exc:
        assert runtime_failure(kind, exc).code == "INVALID_ARGUMENT"
    else:
        pytest.fail("ONNX Runtime accepted a rank-3 input for a rank-2 graph")


def test_out_of_memory_reaches_a_grpc_client_as_resource_exhausted(tmp_path):
    from serving_fixtures import running_server, write_config

    from accel_widgets.engine.clients.grpc_client import PredictionClient
    from accel_widgets.serving import protocol
    from accel_widgets.serving.tensors import make_tensor_proto

    path = _model_file(tmp_path / "oom.onnx", "oom")
    model = {
        "name": "oom",
        "onnx": str(path),
        "preprocessing": {"size": 2, "short_side": 2},
        "outputs": [{"alias": "output_alias", "onnx_output": "y"}],
    }
    request = protocol.PredictRequest()
    request.inputs["x"].CopyFrom(make_tensor_proto(np.full((1, 2, 2, 3), 5000.0, np.float32)))
    with (
        running_server(tmp_path, write_config(tmp_path, [model])) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        predict = channel.unary_unary(protocol.PREDICT_METHOD)
        with pytest.raises(grpc.RpcError) as info:
            predict(request.SerializeToString(), timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "ran out of memory" in info.value.details()
        with PredictionClient("127.0.0.1", server.port, timeout=60) as client:
            good = client.score_numpy_array(np.full((1, 2, 2, 3), 7.0, np.float32), input_name="x")
    np.testing.assert_array_equal(good, np.full((1, 2, 2, 3), 7.0, np.float32))


# -- the server extension opens the workspace once -----------------------------------------------


def test_the_server_extension_opens_one_workspace_for_all_requests(tmp_path, monkeypatch):
    pytest.importorskip("jupyter_server")
    from accel_widgets import server_extension

    opened = []

    class Counting(Workspace):
        def __init__(self, root: object = None) -> None:
            opened.append(root)
            super().__init__(root)

    monkeypatch.setattr(server_extension, "Workspace", Counting)
    monkeypatch.setattr(server_extension, "_workspaces", {})
    monkeypatch.setenv("ACCEL_WIDGETS_WORKSPACE", str(tmp_path / "ws"))
    first = server_extension.shared_workspace()
    started = time.perf_counter()
    for _ in range(50):  # ~4 minutes of a sidebar polling every 5 s
        assert server_extension.shared_workspace() is first
    assert len(opened) == 1
    assert time.perf_counter() - started < 0.5, "opening it again each time"
    monkeypatch.setenv("ACCEL_WIDGETS_WORKSPACE", str(tmp_path / "other"))
    assert server_extension.shared_workspace().root == tmp_path / "other"
    assert len(opened) == 2


# -- the CLI takes the engine's rules --------------------------------------------------------------


@pytest.mark.parametrize("key", ["short-k3y", KEY])
def test_the_cli_masks_keys_as_the_widget_does_and_never_shows_a_short_one(key):
    from accel_widgets.cli.output import mask as _mask
    from accel_widgets.engine.store.keys import mask_key

    shown = _mask(key)
    assert shown == mask_key(key)
    assert key not in shown
    if len(key) <= 12:
        assert not any(c.isalnum() for c in shown), shown


def test_the_cli_and_the_walk_share_one_quantize_rule():
    from accel_widgets.engine.models.catalog import get_spec, quantize_for

    assert quantize_for(get_spec("quantized-resnet50"), None) == "int8"
    assert quantize_for(get_spec("resnet50"), None) is None
    assert quantize_for(get_spec("resnet50"), "int8") == "int8"


def test_cli_convert_prints_the_report_table_the_convert_widget_shows(capsys):
    from accel_widgets.cli.output import print_reports as _print_reports
    from accel_widgets.engine.conversion.reports import REPORT_COLUMNS, report_row
    from accel_widgets.engine.store.workspace import ArtifactRecord

    artifact = ArtifactRecord(
        id=1,
        model_id=1,
        model_name="resnet50",
        model_version=2,
        precision="int8",
        format="onnx",
        path=Path("/tmp/a"),
        size_bytes=26 * 2**20,
        report={
            "vs_fp32": {"max_abs_diff": 0.01, "top1_agree_count": 7, "n_images": 8},
            "latency": {"int8": {"p50_ms": 12.8}, "fp32": {"p50_ms": 40.4}},
        },
        created_at=0.0,
    )
    _print_reports([artifact])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split("  ")[0] == REPORT_COLUMNS[0]
    assert all(cell in out[2] for cell in report_row(artifact))
    assert "7/8 photos" in out[2] and "12.8" in out[2]


# -- schema_version is read -----------------------------------------------------------------------


def _set_version(root: Path, value: str) -> None:
    with sqlite3.connect(root / "catalog.db") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))


def test_a_workspace_from_a_newer_accel_widgets_is_refused_with_what_to_do(tmp_path):
    Workspace(tmp_path / "ws")
    _set_version(tmp_path / "ws", "99")
    with pytest.raises(WorkspaceError, match=r"newer accel-widgets.*schema 99.*pip install -U"):
        Workspace(tmp_path / "ws")
    _set_version(tmp_path / "ws", "x")
    with pytest.raises(WorkspaceError, match="not a number"):
        Workspace(tmp_path / "ws")


def test_an_older_workspace_is_migrated_once_and_keeps_its_data(tmp_path, monkeypatch):
    from accel_widgets.engine.store import workspace as workspace_module

    current = workspace_module.SCHEMA_VERSION  # the test adds the step after it
    old = Workspace(tmp_path / "ws")
    with sqlite3.connect(old.db_path) as db:
        db.execute("INSERT INTO versions (kind, name, last) VALUES ('model', 'cats', 3)")
    monkeypatch.setattr(workspace_module, "SCHEMA_VERSION", current + 1)
    monkeypatch.setattr(
        workspace_module,
        "MIGRATIONS",
        {**workspace_module.MIGRATIONS, current + 1: "ALTER TABLE services ADD COLUMN note TEXT"},
    )
    Workspace(tmp_path / "ws")
    Workspace(tmp_path / "ws")  # a second open finds the new version: no second ALTER
    with sqlite3.connect(old.db_path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        columns = [row[1] for row in db.execute("PRAGMA table_info(services)")]
        kept = db.execute("SELECT last FROM versions WHERE name = 'cats'").fetchone()
    assert version == (str(current + 1),) and "note" in columns and kept == (3,)
    monkeypatch.setattr(workspace_module, "SCHEMA_VERSION", current + 2)
    with pytest.raises(
        WorkspaceError, match=f"no upgrade from catalog schema {current + 1} to {current + 2}"
    ):
        Workspace(tmp_path / "ws")
