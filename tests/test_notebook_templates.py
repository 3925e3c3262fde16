"""The walkthrough a user runs is a clean copy, never the tracked template.

A notebook saved by JupyterLab after a walk holds outputs, execution counts and the widget
state; copied as it is, it opens with "Error displaying widget: model not found" and stale
counts. These tests give the copy code such a notebook as its template (written here the way
JupyterLab saves one), and check what lands in the user's folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from accel_widgets.engine.walk import notebooks
from accel_widgets.engine.walk.notebooks import (
    TEMPLATES,
    bundled_notebook,
    clean_notebook,
    copy_walkthrough,
    linked_notebooks,
)
from accel_widgets.errors import AccelError

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def walked(name: str) -> str:
    """The bundled notebook ``name`` as JupyterLab saves it after a run of every cell."""
    notebook = json.loads(bundled_notebook(name).read_text())
    count = 0
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        count += 1
        cell["execution_count"] = count
        cell["metadata"]["execution"] = {"iopub.status.busy": "2026-12-04T10:00:00Z"}
        cell["outputs"] = [
            {
                "data": {WIDGET_VIEW: {"model_id": "f00d", "version_major": 2}},
                "execution_count": count,
                "metadata": {},
                "output_type": "execute_result",
            },
            {"name": "stdout", "output_type": "stream", "text": ["old run\n"]},
        ]
    notebook["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    return json.dumps(notebook, indent=1)


@pytest.fixture
def walked_templates(tmp_path, monkeypatch) -> Path:
    """Templates that a walk has dirtied (what an autosaved tracked notebook looked like)."""
    folder = tmp_path / "templates"
    folder.mkdir()
    for name in TEMPLATES:
        (folder / name).write_text(walked(name))
    monkeypatch.setattr(notebooks, "bundled_notebook", lambda name="": folder / name)
    return folder


def assert_clean(path: Path) -> None:
    notebook = json.loads(path.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, path.name
        assert "execution" not in cell["metadata"]
    assert "widgets" not in notebook["metadata"]


def test_the_launcher_copy_is_clean_and_brings_the_notebook_it_links_to(walked_templates, tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    path, created = copy_walkthrough(user)
    assert (path, created) == (user / "walkthrough.ipynb", True)
    assert sorted(p.name for p in user.iterdir()) == ["walkthrough-code.ipynb", "walkthrough.ipynb"]
    for copy in user.iterdir():
        assert_clean(copy)
    # The walkthrough's text points at its neighbour: the neighbour is there.
    text = path.read_text()
    assert "`walkthrough-code.ipynb`, beside this" in text
    # The parameters cell keeps its tag (papermill and the tests set MODEL through it).
    cells = json.loads(text)["cells"]
    assert any("parameters" in c["metadata"].get("tags", []) for c in cells)


def test_a_users_copies_are_kept_even_when_only_the_neighbour_exists(walked_templates, tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "walkthrough-code.ipynb").write_text('{"my": "edits"}')
    path, created = copy_walkthrough(user)
    assert created
    assert (user / "walkthrough-code.ipynb").read_text() == '{"my": "edits"}'
    path.write_text('{"mine": 1}')
    assert copy_walkthrough(user) == (path, False)
    assert path.read_text() == '{"mine": 1}'


def test_clean_templates_are_copied_byte_for_byte(tmp_path):
    """The tracked notebooks are clean: their copies are the very same bytes (no churn)."""
    for name in TEMPLATES:
        text = bundled_notebook(name).read_text()
        assert clean_notebook(text) == text, f"notebooks/{name} holds outputs or counts"
    assert linked_notebooks() == ["walkthrough-code.ipynb"]


def test_the_script_entry_copies_every_notebook_into_a_new_folder(tmp_path):
    """What scripts/walkthrough.sh runs: the folder is made, a second run keeps the copies."""
    folder = tmp_path / "home" / "accel-widgets"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "accel_widgets.engine.walk.notebooks", str(folder)]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(TEMPLATES)
    for name in TEMPLATES:
        assert f"copied {folder / name}" in first.stdout
    (folder / "walkthrough.ipynb").write_text('{"mine": 1}')
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert f"kept your {folder / 'walkthrough.ipynb'}" in second.stdout
    assert (folder / "walkthrough.ipynb").read_text() == '{"mine": 1}'
    bad = subprocess.run(argv[:-1], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_a_file_in_the_way_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AccelError, match="cannot make the folder"):
        notebooks.copy_notebooks(blocker / "sub")
