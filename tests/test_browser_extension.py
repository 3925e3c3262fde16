"""The JupyterLab extension in a real JupyterLab and headless Chromium, clicked like a person.

What only a browser can show: the launcher card copies and opens the walkthrough, and the
"Deployments" sidebar shows a service deployed from Python with its live health and stops it
through its confirmation dialog, after which the process is gone and the workspace forgets
it. With a Docker engine, the sidebar's Images section walks the dependency order: an image
a container service runs cannot be deleted until the service is stopped, then its Delete
removes it from the engine. The lab loads the extension built from this checkout
(``accel_widgets/labextension``, linked into the test's own Jupyter data folder) and enables
the server extension with the config file the wheel installs. Screenshots of each step go to
``test-artifacts/screenshots/<test>/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
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

from accel_widgets.engine.models.known_files import SAMPLE_PREPROCESSING
from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.engine.walk.notebooks import copy_text

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

BUILT = REPO / "accel_widgets" / "labextension"
SOURCE = REPO / "labextension"
SERVER_CONFIG = REPO / "jupyter-config" / "jupyter_server_config.d" / "accel_widgets.json"
SIDEBAR_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="accel-widgets-deployments"]'
STOPPED_TEXT = (
    "No services running: the ones listed here were stopped. Deploy again from the walkthrough."
)
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


def prepare_squeezenet(workspace: Workspace, weights_dir: Path) -> None:
    """The real pretrained SqueezeNet as model ``squeezenet:1`` (reused when already there)."""
    from accel_widgets.engine.walk.prepare import prepare_onnx

    prepare_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        "squeezenet",
        preprocessing=SAMPLE_PREPROCESSING,
        workspace=workspace,
    )


def deploy_squeezenet(workspace: Workspace, weights_dir: Path, name: str):
    """A real SqueezeNet service, deployed from Python as a notebook would."""
    from accel_widgets.engine.targets import deploy

    prepare_squeezenet(workspace, weights_dir)
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
        # Once the kernel has said who it is (JupyterLab writes its language_info into the
        # notebook), the tab shows no unsaved changes: the user has changed nothing.
        page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\|\s*Idle")).wait_for(
            timeout=90_000
        )
        page.wait_for_timeout(1000)
        current = page.locator(".jp-mod-current.lm-TabBar-tab", has_text="walkthrough.ipynb")
        assert "jp-mod-dirty" not in (current.first.get_attribute("class") or ""), (
            "the notebook shows unsaved changes right after opening"
        )
        shots.take(page, "walkthrough-open")

    copied = root / "walkthrough.ipynb"
    assert copied.read_text() == copy_text("walkthrough.ipynb")
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

        # Clean-up goes in dependency order: a model in use cannot be deleted, and one dialog
        # says so, with nothing to click but Close (no red Delete leading to a second one).
        model.locator(".accel-model-delete").click()
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for(state="visible")
        assert "squeezenet:1 is in use" in dialog.inner_text()
        assert "served by sq" in dialog.inner_text() and "delete it first" in dialog.inner_text()
        buttons = dialog.locator(".jp-Dialog-footer button")
        assert buttons.all_inner_texts() == ["Close"], buttons.all_inner_texts()
        assert dialog.locator("button.jp-mod-warn").count() == 0
        shots.take(page, "model-in-use")
        buttons.first.click()
        dialog.wait_for(state="detached")
        assert page.locator(".jp-Dialog").count() == 0, "a second dialog followed"
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
        # Not "No services yet": there was one, and it was stopped.
        assert empty.inner_text() == STOPPED_TEXT
        shots.take(page, "sidebar-stopped")

    assert process_gone(service.pid), f"service process {service.pid} still runs"
    assert workspace.list_services() == []

    # The open sidebar follows the workspace by itself: a new service shows up, no clicks.
    deploy_squeezenet(workspace, weights_dir, "again")
    with shots.on_failure(page, [lab.server]):
        # A poll during the deploy may show it starting first; the next one says running.
        again = page.locator('.accel-service-row[data-name="again"] .accel-service-health')
        again.filter(has_text="running").wait_for(state="visible", timeout=15_000)
        assert again.inner_text() == "running"
        assert sidebar.locator(".accel-empty").is_hidden()


def test_sidebar_room_shows_other_workspaces_services_and_stops_the_idle_one(
    lab, sandbox, workspace, weights_dir, tmp_path, page, shots
):
    """A workshop room (issue 24): a service another workspace left running shows under
    "This machine" with its memory, requests and idle time; "Stop idle", asked for 3 s,
    names it, stops it once confirmed, and its own workspace reads why it stopped."""
    from accel_widgets.engine.targets import service_status

    other = Workspace(tmp_path / "bob")
    theirs = deploy_squeezenet(other, weights_dir, "forgotten")
    row = page.locator('.accel-room-row[data-name="forgotten"]')
    try:
        with shots.on_failure(page, [lab.server]):
            open_lab(page, lab)
            sidebar = open_sidebar(page)
            row.wait_for(state="visible", timeout=30_000)
            text = " ".join(row.inner_text().split())
            assert "0 requests" in text and " MB" in text and "idle" in text
            assert str(other.root.resolve()) in text.replace(" ", "")
            summary = sidebar.locator(".accel-room-summary").inner_text()
            assert "from other workspaces" in summary
            time.sleep(4)  # idle for more than the 3 s asked for below
            shots.take(page, "room-section")

            sidebar.locator(".accel-room-stop-idle").click()
            dialog = page.locator(".jp-Dialog")
            dialog.wait_for(state="visible")
            seconds = dialog.locator("input.accel-idle-seconds")
            assert seconds.input_value() == "600"  # the room's default: ten minutes
            assert "No service has been idle for 10 min" in dialog.inner_text()
            seconds.fill("3")
            dialog.locator(".accel-idle-list", has_text="Stops forgotten").wait_for()
            shots.take(page, "room-stop-idle-dialog")
            dialog.locator("button.jp-mod-accept").click()
            row.wait_for(state="detached", timeout=30_000)
            shots.take(page, "room-after-stop")
        assert process_gone(theirs.pid), f"service process {theirs.pid} still runs"
        shown = service_status("forgotten", other).shown
        assert shown.startswith("stopped (idle: no request for"), shown
    finally:
        delete_services(other.root)


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


@pytest.mark.timeout(600)  # a cold image build (and the base image, when missing) takes minutes
def test_sidebar_deletes_an_image_once_its_service_is_stopped(
    lab, sandbox, workspace, weights_dir, docker_client, base_image, page, shots
):
    """Services, then images, then models: a container service shows its target and image;
    the image's Delete waits for the service to stop, then removes it from the engine."""
    from playwright.sync_api import expect

    from accel_widgets.engine.packaging.package import package
    from accel_widgets.engine.targets import deploy

    prepare_squeezenet(workspace, weights_dir)
    image = package("squeezenet", base=base_image, workspace=workspace)
    tag = f"accel-widgets/{workspace.ident}/squeezenet:1"  # the workspace's own name
    try:
        assert image.tag == tag
        deploy("squeezenet", name="sq-box", target="container", workspace=workspace)
        row = page.locator('.accel-service-row[data-name="sq-box"]')
        image_row = page.locator('.accel-image-row[data-name="squeezenet"][data-version="1"]')
        delete = image_row.locator(".accel-image-delete")
        with shots.on_failure(page, [lab.server]):
            open_lab(page, lab)
            sidebar = open_sidebar(page)
            health = row.locator(".accel-service-health")
            health.wait_for(state="visible")
            assert health.inner_text() == "running"
            target = row.locator(".accel-service-target")
            assert target.inner_text() == "Container (Docker)"
            assert target.get_attribute("data-target") == "container"
            assert row.locator(".accel-service-image").inner_text() == f"image {tag}"

            # Between services and models, as the dependency order goes; then the machine's
            # services of every workspace (the room).
            headings = sidebar.locator(".accel-sidebar-heading").all_inner_texts()
            assert [h.strip().lower() for h in headings] == [
                "services",
                "images",
                "models",
                "this machine",
            ]
            assert image_row.locator(".accel-image-tag").inner_text() == tag
            assert image_row.locator(".accel-image-model").inner_text() == "squeezenet:1 fp16"
            size = image_row.locator(".accel-image-size").inner_text()
            assert size.endswith(" MB") and float(size.split()[0]) > 0
            assert image_row.get_attribute("data-present") == "true"
            assert image_row.locator(".accel-image-warning").count() == 0
            assert image_row.locator(".accel-image-users").inner_text() == "used by sq-box"
            expect(delete).to_be_disabled()
            assert "sq-box" in delete.get_attribute("title")
            model = sidebar.locator('.accel-model-row[data-name="squeezenet"]')
            assert f"used by sq-box, image {tag}" in model.inner_text()
            image_row.scroll_into_view_if_needed()
            shots.take(page, "image-in-use")

            row.locator(".accel-service-stop").click()
            dialog = page.locator(".jp-Dialog")
            dialog.wait_for(state="visible")
            assert "Stop sq-box?" in dialog.inner_text()
            assert f"The image {tag} and the model stay." in dialog.inner_text()
            dialog.locator("button.jp-mod-accept").click()
            row.wait_for(state="detached", timeout=60_000)
            expect(delete).to_be_enabled()
            assert image_row.locator(".accel-image-users").count() == 0
            assert docker_client.images.list(name=tag.rpartition(":")[0]), "still there"
            shots.take(page, "image-unused")

            delete.click()
            dialog.wait_for(state="visible")
            assert f"Delete {tag}?" in dialog.inner_text()
            assert "the model squeezenet:1 fp16 stays" in dialog.inner_text()
            shots.take(page, "image-delete-dialog")
            dialog.locator("button.jp-mod-accept").click()
            image_row.wait_for(state="detached", timeout=60_000)
            none = sidebar.locator(".accel-sidebar-images .accel-sidebar-none")
            none.wait_for(state="visible")
            assert f"used by sq-box, image {tag}" not in model.inner_text()
            shots.take(page, "image-deleted")

        assert docker_client.images.list(name=tag.rpartition(":")[0]) == []
        assert workspace.list_images() == []
        assert workspace.list_services() == []
    finally:
        delete_services(sandbox.workspace)
        # Only the image this test built: the tag is the engine's, not this workspace's.
        with contextlib.suppress(Exception):
            if docker_client.images.get(tag).id == image.info.get("image_id"):
                docker_client.images.remove(tag, force=True)


def test_sidebar_warns_of_an_image_docker_lost_and_shows_delete_errors(lab, page, shots):
    """An image removed from Docker behind the workspace's back reads as such, and a delete
    the server refuses shows the server's own words (here: the workspace has no such image)."""
    from playwright.sync_api import expect

    ghost = {
        "name": "ghost",
        "version": 3,
        "tag": "accel-widgets/ghost:3",
        "model": "ghost:1 int8",
        "size_mb": 41.5,
        "base": "local/debian-py:bookworm",
        "present": False,
        "pushed": ["127.0.0.1:5000/models/ghost:3"],
        "used_by": [],
    }

    def listing(route) -> None:  # only the listing is invented; the DELETE is the server's
        if route.request.method == "GET":
            route.fulfill(status=200, json={"images": [ghost]})
        else:
            route.continue_()

    with shots.on_failure(page, [lab.server]):
        page.route("**/accel-widgets/api/images*", listing)
        page.route("**/accel-widgets/api/images/**", listing)
        open_lab(page, lab)
        sidebar = open_sidebar(page)
        row = sidebar.locator('.accel-image-row[data-name="ghost"][data-version="3"]')
        row.wait_for(state="visible")
        assert "accel-image-missing" in row.get_attribute("class").split()
        assert row.get_attribute("data-present") == "false"
        assert row.locator(".accel-image-warning").inner_text() == "removed from Docker"
        assert "pushed to 127.0.0.1:5000/models/ghost:3" in row.inner_text()
        assert sidebar.locator(".accel-sidebar-images .accel-sidebar-none").is_hidden()
        delete = row.locator(".accel-image-delete")
        expect(delete).to_be_enabled()
        row.scroll_into_view_if_needed()
        shots.take(page, "image-missing")

        delete.click()
        dialog = page.locator(".jp-Dialog")
        assert "stay in their registries" in dialog.inner_text()
        dialog.locator("button.jp-mod-accept").click()
        refused = page.locator(".jp-Dialog", has_text="Cannot delete accel-widgets/ghost:3")
        refused.wait_for(state="visible")
        assert "ghost" in refused.locator(".jp-Dialog-body").inner_text()
        shots.take(page, "image-delete-refused")
        refused.locator(".jp-Dialog-footer button").first.click()
        dialog.wait_for(state="detached")
        assert row.is_visible()
