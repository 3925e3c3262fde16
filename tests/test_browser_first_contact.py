"""The README's main command, walked in a real browser, leaves the checkout as it was.

``bash scripts/walkthrough.sh`` (with ``ACCEL_WIDGETS_SKIP_SETUP``: this machine is set up)
copies clean notebooks into the user's folder and serves that folder; the walk then runs in
JupyterLab from capacity to a scored cat, the notebook is saved as JupyterLab saves it, and
``git status`` of ``notebooks/`` and ``labextension/`` must not have changed: the tracked
notebooks are templates, never the file a user runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_support import (
    LabServer,
    Sandbox,
    ServerProcess,
    delete_services,
    free_port,
    http_status,
)
from test_browser_walkthrough import PAGE_LOAD_MS, assert_cat_first, walk_to_a_cat

from accel_widgets.engine.walk.notebooks import TEMPLATES

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[1]
TRACKED = ["notebooks", "labextension"]


def git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--", *TRACKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def digests() -> dict[str, str]:
    return {
        name: hashlib.sha256((ROOT / "notebooks" / name).read_bytes()).hexdigest()
        for name in TEMPLATES
    }


def test_the_walkthrough_command_serves_a_copy_and_the_walk_leaves_git_clean(tmp_path, page, shots):
    before, templates = git_status(), digests()
    box = Sandbox(tmp_path / "browser")
    home = tmp_path / "home"
    home.mkdir()
    folder = home / "accel-widgets-notebooks"
    port, token = free_port(), secrets.token_hex(16)
    env = box.env()
    env.update(
        HOME=str(home),
        ACCEL_WIDGETS_SKIP_SETUP="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]),
    )
    argv = [
        "bash",
        str(ROOT / "scripts" / "walkthrough.sh"),
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--LabApp.app_settings_dir={box.lab_settings_dir}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    server = ServerProcess("walkthrough.sh", argv, env=env, cwd=ROOT, log=box.logs / "walk.log")
    lab = LabServer(server, port, token)
    try:
        status = f"http://127.0.0.1:{port}/api/status?token={token}"
        server.wait_until(lambda: http_status(status) == 200, 120, "serving")
        log = server.log_path.read_text()
        for name in TEMPLATES:
            assert f"copied {folder / name}" in log
        assert f"Opening JupyterLab on {folder}/walkthrough.ipynb" in log

        with shots.on_failure(page, [server]):
            # The server's own address leads to its default URL: the walkthrough itself.
            page.goto(lab.url("/"), timeout=PAGE_LOAD_MS)
            page.wait_for_url(re.compile(r"/lab/tree/walkthrough\.ipynb"), timeout=60_000)
            statusbar = page.locator("#jp-main-statusbar")
            statusbar.get_by_text(re.compile(r"\|\s*Idle")).wait_for(timeout=90_000)
            page.locator("#jp-menu-panel, .lm-MenuBar").get_by_role(
                "menuitem", name="Run", exact=True
            ).first.click()
            page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
            assert_cat_first(walk_to_a_cat(page, shots))
            page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.click()
            page.keyboard.press("Control+s")
            saved = folder / "walkthrough.ipynb"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                cells = json.loads(saved.read_text())["cells"]
                if any(c.get("outputs") for c in cells if c["cell_type"] == "code"):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"JupyterLab did not save the walk's outputs in {saved}")
    finally:
        server.stop()
        delete_services(box.workspace)
    assert not server.group_alive(), "walkthrough.sh left processes behind"
    assert digests() == templates, "a tracked notebook changed"
    assert git_status() == before, "the walk changed notebooks/ or labextension/"
