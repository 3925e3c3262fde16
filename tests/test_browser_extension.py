"""The JupyterLab extension in a real JupyterLab and headless Chromium, clicked like a person.

What only a browser can show: the launcher card copies and opens the walkthrough, and the
"Deployments" sidebar shows a service deployed from Python with its live health and stops it
through its confirmation dialog, after which the process is gone and the workspace forgets
it. The lab loads the extension built from this checkout (``accel_widgets/labextension``,
linked into the test's own Jupyter data folder) and enables the server extension with the
config file the wheel installs. Screenshots of each step go to
``test-artifacts/screenshots/<test>/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from browser_support import (
    REPO,
    LabServer,
    Sandbox,
    delete_services,
    start_lab,
)

from accel_widgets.engine.notebooks import bundled_notebook
from accel_widgets.engine.workspace import Workspace

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

BUILT = REPO / "accel_widgets" / "labextension"
SOURCE = REPO / "labextension"
SERVER_CONFIG = REPO / "jupyter-config" / "jupyter_server_config.d" / "accel_widgets.json"
SIDEBAR_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="accel-widgets-deployments"]'
EMPTY_TEXT = (
    "No services yet: open the Accelerated model walkthrough from the launcher to deploy one."
)


def built_extension() -> Path:
    """The extension built from this checkout; a missing or stale build is a clear failure.

    ``pip install -e .`` builds it (hatch-jupyter-builder); by hand: ``cd labextension &&
    npm install && npm run build:prod``. Without npm on a workstation the test is skipped.
    """
    package = BUILT / "package.json"
    if not package.is_file():
        message = f"the JupyterLab extension is not built ({package} is missing)"
        hint = "; run `pip install -e .` or `cd labextension && npm install && npm run build:prod`"
        if os.environ.get("CI") or shutil.which("npm"):
            pytest.fail(message + hint)
        pytest.skip(message + " and npm is not installed")
    newest_source = max(p.stat().st_mtime for p in (SOURCE / "src").rglob("*.ts"))
    if newest_source > package.stat().st_mtime:
        pytest.fail(
            "the built JupyterLab extension is older than labextension/src; "
            "run `cd labextension && npm run build:prod`"
        )
    return BUILT


def install_into(sandbox: Sandbox) -> None:
    """Link the built extension and enable the server extension in the sandbox's folders.

    The sandbox's data folder comes first on Jupyter's path, so this checkout's build wins
    over any copy installed in the environment.
    """
    labextensions = sandbox.root / "jupyter-data" / "labextensions"
    labextensions.mkdir(parents=True, exist_ok=True)
    (labextensions / "accel-widgets").symlink_to(built_extension(), target_is_directory=True)
    config_d = sandbox.root / "jupyter-config" / "jupyter_server_config.d"
    config_d.mkdir(parents=True, exist_ok=True)
    shutil.copy(SERVER_CONFIG, config_d / SERVER_CONFIG.name)


def deploy_squeezenet(workspace: Workspace, weights_dir: Path, name: str):
    """A real SqueezeNet service, deployed from Python as a notebook would."""
    from accel_widgets.engine.prepare import prepare_onnx
    from accel_widgets.engine.targets import deploy

    prepare_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        "squeezenet",
        preprocessing={"channel_order": "BGR"},
        workspace=workspace,
    )
    return deploy("squeezenet", name=name, workspace=workspace)


def process_gone(pid: int) -> bool:
    """Gone, or a zombie waiting for this test process (its parent) to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def open_lab(page, lab: LabServer) -> None:
    """JupyterLab with a reset layout, once the launcher is drawn."""
    page.goto(lab.url("/lab", reset=""), wait_until="domcontentloaded")
    page.locator(".jp-Launcher").first.wait_for(state="visible", timeout=90_000)


def open_sidebar(page) -> Any:
    """Click the Deployments tab in the left sidebar; the panel's locator."""
    page.locator(SIDEBAR_TAB).click()
    sidebar = page.locator(".accel-sidebar")
    sidebar.wait_for(state="visible")
    return sidebar


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Iterator[Sandbox]:
    """Jupyter folders with the extension installed, an empty root folder and workspace.

    Teardown (after the server stops) deletes any service a test left behind and fails if
    a service process survives.
    """
    box = Sandbox(tmp_path_factory.mktemp("lab-extension"))
    install_into(box)
    (box.root / "root").mkdir()
    yield box
    deleted = delete_services(box.workspace)
    if deleted:
        print(f"deleted services left behind: {', '.join(deleted)}")


@pytest.fixture(scope="module")
def lab(sandbox) -> Iterator[LabServer]:
    """One JupyterLab for the module, serving ``<sandbox>/root``; stopped whatever happens."""
    server = start_lab(sandbox, sandbox.root / "root")
    try:
        yield server
    finally:
        server.server.stop()
    assert not server.server.group_alive(), "jupyter lab left processes behind"


@pytest.fixture
def workspace(sandbox) -> Iterator[Workspace]:
    """The lab's workspace (its ``ACCEL_WIDGETS_WORKSPACE``); services are deleted after."""
    yield Workspace(sandbox.workspace)
    delete_services(sandbox.workspace)


# --------------------------------------------------------------------------- tests


def test_launcher_card_opens_the_walkthrough(lab, sandbox, page, shots):
    """A user starts from the launcher: the card copies the walkthrough and opens it."""
    root = sandbox.root / "root"
    with shots.on_failure(page, [lab.server]):
        open_lab(page, lab)
        card = page.locator(".jp-LauncherCard", has_text="Accelerated model walkthrough")
        card.wait_for(state="visible")
        # On the Notebook row, with the kernels: where a user looks to start a notebook.
        section = page.locator(".jp-Launcher-section", has=card)
        assert "Notebook" in section.locator(".jp-Launcher-sectionTitle").inner_text()
        shots.take(page, "launcher")

        card.click()
        tab = page.locator(".jp-mod-current.lm-TabBar-tab .lm-TabBar-tabLabel")
        tab.filter(has_text="walkthrough.ipynb").wait_for(state="visible")
        page.locator(".jp-Notebook .jp-RenderedMarkdown h1").first.wait_for(state="visible")
        listing = page.locator(".jp-DirListing-item", has_text="walkthrough.ipynb")
        listing.wait_for(state="visible")
        shots.take(page, "walkthrough-open")

    copied = root / "walkthrough.ipynb"
    assert copied.read_bytes() == bundled_notebook().read_bytes()
    assert json.loads(copied.read_text())["cells"], "the copy is a notebook with cells"


def test_sidebar_shows_a_deployed_service_and_stops_it(
    lab, sandbox, workspace, weights_dir, page, shots
):
    """A service deployed from Python shows up healthy; Stop, confirmed, ends it for good.

    On the way: deleting the model it serves is refused with the server's reason, the
    scoring notebook opens, and a service deployed later appears on the next refresh.
    """
    service = deploy_squeezenet(workspace, weights_dir, "sq")
    row = page.locator('.accel-service-row[data-name="sq"]')
    with shots.on_failure(page, [lab.server]):
        open_lab(page, lab)
        sidebar = open_sidebar(page)
        health = row.locator(".accel-service-health")
        health.wait_for(state="visible")
        assert health.inner_text() == "running"
        assert f"127.0.0.1:{service.port}" in row.inner_text()
        assert "squeezenet:1" in row.inner_text()
        model = sidebar.locator('.accel-model-row[data-name="squeezenet"]')
        assert "fp16" in model.inner_text()
        assert "used by sq" in model.inner_text()
        assert sidebar.locator(".accel-empty").is_hidden()
        shots.take(page, "sidebar-running")

        # Clean-up goes in dependency order: the model in use is refused, in the server's words.
        model.locator(".accel-model-delete").click()
        dialog = page.locator(".jp-Dialog")
        dialog.locator("button.jp-mod-accept").click()
        refused = page.locator(".jp-Dialog", has_text="squeezenet:1 is still in use")
        refused.wait_for(state="visible")
        assert "still used by service sq" in refused.inner_text()
        shots.take(page, "model-in-use")
        refused.locator(".jp-Dialog-footer button").first.click()
        dialog.wait_for(state="detached")
        assert model.is_visible()

        # A scoring notebook for the service lands in the file browser's folder and opens.
        row.locator(".accel-service-notebook").click()
        tab = page.locator(".jp-mod-current.lm-TabBar-tab .lm-TabBar-tabLabel")
        tab.filter(has_text="score-sq.ipynb").wait_for(state="visible")
        assert (sandbox.root / "root" / "score-sq.ipynb").is_file()
        shots.take(page, "scoring-notebook")

        row.locator(".accel-service-stop").click()
        dialog.wait_for(state="visible")
        assert "Stop sq?" in dialog.inner_text()
        shots.take(page, "stop-dialog")
        dialog.locator("button.jp-mod-accept").click()

        row.wait_for(state="detached", timeout=30_000)
        empty = sidebar.locator(".accel-empty")
        empty.wait_for(state="visible")
        assert empty.inner_text() == EMPTY_TEXT
        shots.take(page, "sidebar-stopped")

    assert process_gone(service.pid), f"service process {service.pid} still runs"
    assert workspace.list_services() == []

    # The open sidebar follows the workspace by itself: a new service shows up, no clicks.
    deploy_squeezenet(workspace, weights_dir, "again")
    with shots.on_failure(page, [lab.server]):
        again = page.locator('.accel-service-row[data-name="again"] .accel-service-health')
        again.wait_for(state="visible", timeout=15_000)
        assert again.inner_text() == "running"
        assert sidebar.locator(".accel-empty").is_hidden()


def test_sidebar_says_what_to_do_when_the_api_fails(lab, page, shots):
    """When the REST API does not answer, the sidebar says so and how to check the server
    extension, then recovers on its own once the API answers again."""
    api = "**/accel-widgets/api/**"
    with shots.on_failure(page, [lab.server]):
        open_lab(page, lab)
        page.route(api, lambda route: route.fulfill(status=404, body="Not Found"))
        sidebar = open_sidebar(page)
        error = sidebar.locator(".accel-error-state")
        error.wait_for(state="visible")
        text = error.inner_text()
        assert "404" in text
        assert "Is the accel-widgets server extension enabled?" in text
        assert "jupyter server extension list" in text
        shots.take(page, "sidebar-error")

        page.unroute(api)
        with contextlib.suppress(Exception):
            sidebar.locator(".accel-sidebar-refresh").click()
        sidebar.locator(".accel-empty").wait_for(state="visible")
        assert error.is_hidden()
