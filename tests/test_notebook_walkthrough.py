"""notebooks/walkthrough.ipynb runs headless, top to bottom, with the widget state stored.

The notebook is executed in a real kernel (nbclient) with ``RUN_ALL = True``: the widgets
click through every step with the real SqueezeNet from the shared weights. What a reader of
the saved notebook sees is the stored widget state, so the assertions read it: the top-5
table's first class is a cat, the deploy status says ready, the convert report is there.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from notebook_runner import execute_notebook, notebook_text

from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.engine.targets import delete_service

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"
CATS = {"Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat", "lynx"}


def widget_values(nb) -> list[str]:
    """Every HTML widget's value in the notebook's stored widget state."""
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return [
        model["state"]["value"]
        for model in state.values()
        if model.get("model_name") == "HTMLModel" and isinstance(model["state"].get("value"), str)
    ]


def test_walkthrough_notebook_runs_headless_and_scores_a_cat(tmp_path):
    workspace_dir = tmp_path / "workspace"
    try:
        nb = execute_notebook(
            NOTEBOOK, workspace_dir=workspace_dir, parameters={"RUN_ALL": True}, timeout=600
        )
        printed = notebook_text(nb)
        # The run_all cell prints the score step's status, e.g. "cat (chelsea): Egyptian cat".
        assert re.search(r"chelsea\)?: (" + "|".join(CATS) + ")", printed), printed[-2000:]

        values = widget_values(nb)
        top5 = next(v for v in values if "accel-top5-row" in v)
        first = re.search(r"<tr class='accel-top5-row'><td[^>]*>(.*?)</td>", top5).group(1)
        assert html.unescape(first) in CATS
        assert any("is ready at 127.0.0.1:" in v for v in values)
        assert any("registered squeezenet:1 as is" in v for v in values)
        # The widget views are in the outputs, so Lab and Voila can render them from the file.
        views = [
            o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
            for c in nb.cells
            for o in c.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        ]
        state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        assert views and all(model_id in state for model_id in views)
        services = Workspace(workspace_dir).list_services()
        assert [s.name for s in services] == ["squeezenet"]  # left running, as a user expects
    finally:
        workspace = Workspace(workspace_dir)
        for service in workspace.list_services():
            delete_service(service.name, workspace)


def test_walkthrough_notebook_without_the_weights_folder_says_why_and_scores(tmp_path, monkeypatch):
    """A fresh clone, offline, with ACCEL_WIDGETS_WEIGHTS_DIR at an empty folder: the walk
    preselects the smallest catalog model with random weights, says so, and still scores."""
    empty = tmp_path / "weights"
    empty.mkdir()
    monkeypatch.setenv("ACCEL_WIDGETS_WEIGHTS_DIR", str(empty))
    monkeypatch.setenv("ACCEL_WIDGETS_OFFLINE", "1")
    root = str(NOTEBOOK.parents[1])  # the kernel imports this checkout's code
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    workspace_dir = tmp_path / "workspace"
    try:
        nb = execute_notebook(
            NOTEBOOK, workspace_dir=workspace_dir, parameters={"RUN_ALL": True}, timeout=600
        )
        printed = notebook_text(nb)
        assert "The SqueezeNet sample (SqueezeNet_fp16.onnx) is not on this machine" in printed
        assert str(empty) in printed and "accel-widgets sample" in printed
        assert "DenseNet-121 with random weights" in printed and "meaningless" in printed
        # Scored, with class numbers: random weights, and no label file to name them.
        assert re.search(r"chelsea\)?: \d+\n", printed), printed[-2000:]
        values = widget_values(nb)
        assert any("is ready at 127.0.0.1:" in v for v in values)
        services = Workspace(workspace_dir).list_services()
        assert [s.name for s in services] == ["densenet121"]
    finally:
        workspace = Workspace(workspace_dir)
        for service in workspace.list_services():
            delete_service(service.name, workspace)
