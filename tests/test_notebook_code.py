"""The code walkthrough notebook, run headless as a reader would run it.

``notebooks/walkthrough-code.ipynb`` is the walk for people who prefer code, so these tests
execute the real file in a real kernel against a fresh workspace and assert on what the
reader sees: the capacity table, a cat for the cat photo, a benchmark line, and a workspace
left as the clean-up step promises (the model kept, no service, no server process). A second
run in the same workspace must reuse the registered model, because a workshop re-runs its
notebook many times. The first tests pin down the runner itself, which the widget notebook's
tests reuse.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import psutil
import pytest
from notebook_runner import (
    NotebookExecutionError,
    execute_notebook,
    notebook_text,
    output_mimes,
)

from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.engine.targets import delete_service

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough-code.ipynb"
CAT_LABELS = {"Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat", "lynx"}


def _server_processes(root: Path) -> list[psutil.Process]:
    """Serving processes started for this workspace (their command line names its config)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if "accel_widgets.serving" in cmdline and str(root) in cmdline:
            found.append(proc)
    return found


@pytest.fixture
def walk_workspace(workspace):
    """The test's workspace; whatever a failed run left running is stopped afterwards."""
    yield workspace
    for service in Workspace(workspace.root).list_services():
        delete_service(service.name, workspace=Workspace(workspace.root))
    for proc in _server_processes(workspace.root):  # a server whose row is gone
        proc.kill()


def _assert_left_clean(root: Path) -> None:
    """No service recorded and no server process alive for the workspace at ``root``."""
    left = [s.name for s in Workspace(root).list_services()]
    assert left == [], f"the notebook left services behind: {left}"
    assert _server_processes(root) == [], "a server process outlived its service"


def _top1(text: str) -> str:
    match = re.search(r"^top-1: (.+?) \(\d+\.\d%\)$", text, re.MULTILINE)
    assert match, f"no 'top-1: LABEL (SCORE)' line in the output:\n{text[-3000:]}"
    return match.group(1)


def _write_notebook(path: Path, *sources: str, parameters: str | None = None) -> Path:
    cells = []
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
    cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def test_committed_notebook_is_clean_and_parameterised():
    """The lead commits the file as built: no stored outputs, python3 kernel, one parameters
    cell holding the defaults the tests override."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert 'MODEL = "squeezenet"' in tagged[0].source
    assert "WEIGHTS_DIR = None" in tagged[0].source


def test_runner_gives_the_kernel_the_workspace_and_the_parameters(tmp_path):
    """The kernel must see the test's workspace (or the walk would fill the user's real one),
    inherit the offline setting from conftest, run outside the repository, and see injected
    parameters override the defaults."""
    path = _write_notebook(
        tmp_path / "probe.ipynb",
        "import os\n"
        "print('workspace=' + os.environ['ACCEL_WIDGETS_WORKSPACE'])\n"
        "print('offline=' + os.environ.get('ACCEL_WIDGETS_OFFLINE', ''))\n"
        "print('cwd=' + os.getcwd())\n"
        "print(f'answer={ANSWER} name={NAME}')",
        parameters="ANSWER = 1\nNAME = 'default'",
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    nb = execute_notebook(
        path, workspace_dir=tmp_path / "ws", parameters={"ANSWER": 42, "NAME": "it's"}
    )
    text = notebook_text(nb)
    assert f"workspace={tmp_path / 'ws'}" in text
    assert "offline=1" in text
    cwd = re.search(r"^cwd=(.*)$", text, re.MULTILINE).group(1)
    assert not Path(cwd).resolve().is_relative_to(NOTEBOOK.parents[1])
    assert "answer=42 name=it's" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written beside it


def test_runner_error_names_the_cell_and_shows_the_traceback(tmp_path):
    """A failing walk must say which cell broke and why, in plain text, with what ran before
    still available for inspection."""
    path = _write_notebook(
        tmp_path / "broken.ipynb",
        "print('first cell ran')",
        "value = 'boom-marker'\nraise ValueError(value)",
    )
    with pytest.raises(NotebookExecutionError) as caught:
        execute_notebook(path, workspace_dir=tmp_path / "ws")
    message = str(caught.value)
    assert "broken.ipynb: code cell 2 failed" in message
    assert "raise ValueError(value)" in message  # the cell's source
    assert "ValueError: boom-marker" in message  # the traceback
    assert "\x1b[" not in message
    assert "first cell ran" in notebook_text(caught.value.notebook)


def test_code_walkthrough_shows_each_step_and_cleans_up(walk_workspace):
    """One full run: what the reader sees at each step, then the state clean-up promises."""
    root = walk_workspace.root
    committed = NOTEBOOK.read_bytes()
    nb = execute_notebook(NOTEBOOK, workspace_dir=root, timeout=300)
    text = notebook_text(nb)

    assert f"Workspace: {root}" in text  # the kernel used the test's workspace
    assert re.search(r"resource\s+used\s+limit\s+free\s+needed\s+unit\s+enough", text)
    assert re.search(r"^cores\s+\d+\s+\d+", text, re.MULTILINE)
    assert "ENOUGH: " in text  # the verdict line with its advice
    assert "resnet50" in text and "ResNet-50" in text  # the catalog table
    assert "squeezenet:1 (onnx): new" in text
    # The artifact checks table: registered as is, timed with ONNX Runtime here.
    assert re.search(r"^squeezenet:1\s+fp16\s+[\d.]+\s+- \(registered as is\)", text, re.M)
    assert "serves   squeezenet:1 fp16" in text
    assert re.search(r"^port\s+\d+", text, re.MULTILINE)
    assert re.search(r"^ready in \d+(\.\d+)? s$", text, re.MULTILINE)

    top1 = _top1(text)
    assert top1 in CAT_LABELS or "cat" in top1.lower(), f"the cat photo scored as {top1!r}"
    assert "image/png" in output_mimes(nb)  # the bar chart (and nothing failed drawing it)
    summary = re.search(r"^50 requests, 1 at a time: p50 [\d.]+ ms.*$", text, re.MULTILINE)
    assert summary, "no benchmark summary with p50"
    assert "errors" not in summary.group(0)

    assert "stopped and deleted service walkthrough-code" in text
    assert re.search(r"^model\s+squeezenet\s+1\s", text, re.MULTILINE)  # the clean-up plan
    assert "kept squeezenet:1; to delete it: Workspace().delete_model('squeezenet')" in text
    assert [m.ref for m in Workspace(root).list_models()] == ["squeezenet:1"]
    _assert_left_clean(root)
    assert NOTEBOOK.read_bytes() == committed  # the run wrote nothing into the repository


def test_code_walkthrough_rerun_reuses_the_registered_model(walk_workspace):
    """The walk promises re-runs are cheap: the second run finds squeezenet:1 and reuses it
    instead of registering version 2, and still deploys and cleans up its service."""
    root = walk_workspace.root
    first = notebook_text(execute_notebook(NOTEBOOK, workspace_dir=root, timeout=300))
    assert "squeezenet:1 (onnx): new" in first
    second = notebook_text(execute_notebook(NOTEBOOK, workspace_dir=root, timeout=300))
    assert "squeezenet:1 (onnx): reused from an earlier run" in second
    assert "stopped and deleted service walkthrough-code" in second
    assert [m.version for m in Workspace(root).list_models("squeezenet")] == [1]
    _assert_left_clean(root)


def test_wrong_weights_dir_stops_with_where_it_looked(walk_workspace, tmp_path):
    """A reader who points WEIGHTS_DIR at the wrong folder learns which folder was searched
    and what to set, and the walk stops before anything is registered or deployed."""
    nowhere = tmp_path / "nowhere"
    with pytest.raises(NotebookExecutionError) as caught:
        execute_notebook(
            NOTEBOOK, workspace_dir=walk_workspace.root, parameters={"WEIGHTS_DIR": str(nowhere)}
        )
    message = str(caught.value)
    assert f"FileNotFoundError: SqueezeNet_fp16.onnx is not in {nowhere}" in message
    assert "set WEIGHTS_DIR to the shared weights folder" in message
    assert Workspace(walk_workspace.root).list_models() == []
    _assert_left_clean(walk_workspace.root)


@pytest.mark.slow
def test_code_walkthrough_with_a_catalog_model(walk_workspace):
    """MODEL = a catalog name takes the other branch: build in TensorFlow, convert, validate
    against TensorFlow, quantize, and serve. Random weights (offline), so the labels mean
    nothing: every photo gets one class, agreement is flagged as not informative, the INT8
    gate cannot recommend it, and deploy serves fp32. What is checked is that every step shows
    its result and that nothing unproven is served by default (~90 s)."""
    root = walk_workspace.root
    nb = execute_notebook(
        NOTEBOOK,
        workspace_dir=root,
        parameters={"MODEL": "resnet50", "CATALOG_WEIGHTS": "random"},
        timeout=300,
    )
    text = notebook_text(nb)
    assert "resnet50:1 (catalog): new" in text
    vacuous = r"\(not informative: the reference gives nearly every photo one class\)"
    fp32_row = r"^resnet50:1\s+fp32\s+[\d.]+\s+TensorFlow\s+\S+\s+32/32 photos " + vacuous
    int8_row = r"^resnet50:1\s+int8\s+[\d.]+\s+FP32 ONNX\s+\S+\s+\d+/64 photos " + vacuous
    assert re.search(fp32_row, text, re.M)
    assert re.search(int8_row, text, re.M)
    assert "not recommended" in text
    assert "serves   resnet50:1 fp32" in text
    _top1(text)
    assert re.search(r"^50 requests, 1 at a time: p50 [\d.]+ ms", text, re.MULTILINE)
    assert [(m.ref, m.kind) for m in Workspace(root).list_models()] == [("resnet50:1", "catalog")]
    _assert_left_clean(root)
