"""The REST API behind the JupyterLab sidebar, against a real ``jupyter server``.

The server runs as its own process on a loopback port with a token, the extension enabled by
the same ``jupyter_server_config.d`` file the wheel installs, and the workspace given through
``ACCEL_WIDGETS_WORKSPACE`` (as a user's kernels see it). A real SqueezeNet service is deployed
from Python into that workspace, so health, stop and the dependency checks are the engine's
real answers, not mocks.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import secrets
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from browser_support import (
    LOOPBACK,
    REPO,
    Sandbox,
    ServerProcess,
    delete_services,
    free_port,
    http_status,
)

from accel_widgets.engine.known_files import SAMPLE_PREPROCESSING
from accel_widgets.engine.notebooks import copy_text
from accel_widgets.engine.workspace import Workspace

pytestmark = pytest.mark.timeout(180)

API = "/accel-widgets/api"
SERVER_CONFIG = REPO / "jupyter-config" / "jupyter_server_config.d" / "accel_widgets.json"


@dataclass
class Reply:
    status: int
    body: dict

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


@dataclass
class JupyterServer:
    """A running ``jupyter server`` and the folders it serves."""

    server: ServerProcess
    port: int
    token: str
    root: Path
    workspace: Workspace

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def call(
        self,
        method: str,
        path: str,
        body: dict | bytes | None = None,
        *,
        token: bool = True,
        headers: dict[str, str] | None = None,
        opener: urllib.request.OpenerDirector | None = None,
    ) -> Reply:
        """One request to the API; HTTP errors come back as replies, not exceptions."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(API + path), data=data, method=method)
        if token:
            request.add_header("Authorization", f"token {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=60) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            payload = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            payload = {"raw": raw.decode(errors="replace")}
        return Reply(status, payload)


def start_jupyter_server(sandbox: Sandbox, root: Path, timeout: float = 60.0) -> JupyterServer:
    """``jupyter server`` on loopback with the extension enabled as the wheel enables it."""
    config_d = sandbox.root / "jupyter-config" / "jupyter_server_config.d"
    config_d.mkdir(parents=True, exist_ok=True)
    shutil.copy(SERVER_CONFIG, config_d / SERVER_CONFIG.name)
    port, token = free_port(), secrets.token_hex(16)
    argv = [
        sys.executable,
        "-m",
        "jupyter",
        "server",
        "--no-browser",
        "--allow-root",
        f"--ServerApp.ip={LOOPBACK}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
    ]
    server = ServerProcess(
        "jupyter server", argv, env=sandbox.env(), cwd=root, log=sandbox.logs / "server.log"
    )
    try:
        probe = f"http://{LOOPBACK}:{port}{API}/services?token={token}"
        server.wait_until(lambda: http_status(probe) == 200, timeout, "serving the API")
    except BaseException:
        server.stop()
        raise
    return JupyterServer(server, port, token, root, Workspace(sandbox.workspace))


def deploy_squeezenet(workspace: Workspace, weights_dir: Path, name: str, **options):
    from accel_widgets.engine.prepare import prepare_onnx
    from accel_widgets.engine.targets import deploy

    prepare_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        "squeezenet",
        preprocessing=SAMPLE_PREPROCESSING,
        workspace=workspace,
    )
    return deploy("squeezenet", name=name, workspace=workspace, **options)


def process_gone(pid: int) -> bool:
    """Gone, or a zombie waiting for this test process (its parent) to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def health_of(server: JupyterServer, name: str) -> str | None:
    """The health the API reports for service ``name`` (None when it is not listed)."""
    rows = server.call("GET", "/services").body["services"]
    return next((row["health"] for row in rows if row["name"] == name), None)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[JupyterServer]:
    sandbox = Sandbox(tmp_path_factory.mktemp("server-extension"))
    root = sandbox.root / "root"
    root.mkdir()
    jupyter = start_jupyter_server(sandbox, root)
    try:
        yield jupyter
    finally:
        try:
            delete_services(sandbox.workspace)
        finally:
            jupyter.server.stop()


@pytest.fixture(scope="module")
def service(server, weights_dir):
    """A running SqueezeNet service ``sq`` with an API key, shared by the read-only tests."""
    record = deploy_squeezenet(server.workspace, weights_dir, "sq", auth=True)
    yield record
    with contextlib.suppress(Exception):
        from accel_widgets.engine.targets import delete_service

        delete_service("sq", workspace=server.workspace)


def test_lists_a_deployed_service_as_running(server, service):
    """The sidebar shows what the engine knows: the service, its model and live health."""
    reply = server.call("GET", "/services")
    assert reply.status == 200, reply
    assert reply.body["workspace"] == str(server.workspace.root)
    rows = {row["name"]: row for row in reply.body["services"]}
    row = rows["sq"]
    assert row["health"] == "running"
    assert row["target"] == "local"
    assert row["address"] == f"127.0.0.1:{service.port}"
    assert row["pid"] == service.pid
    assert (row["model"], row["version"], row["precision"]) == ("squeezenet", 1, "fp16")
    assert row["auth"] is True

    models = server.call("GET", "/models")
    assert models.status == 200
    squeezenet = next(m for m in models.body["models"] if m["name"] == "squeezenet")
    assert squeezenet["version"] == 1
    assert [a["precision"] for a in squeezenet["artifacts"]] == ["fp16"]
    assert squeezenet["artifacts"][0]["size_mb"] > 0


def test_key_is_the_services_own(server, service):
    """The key behind "copy key" is the one the service checks, and needs the token."""
    reply = server.call("GET", "/services/sq/key")
    assert reply.status == 200
    assert reply.body["key"] == service.key
    assert server.call("GET", "/services/sq/key", token=False).status in (401, 403)


def test_requests_without_the_token_are_refused(server, service):
    """Nobody without Jupyter's token can list, read keys, or stop a service."""
    for method, path in [
        ("GET", "/services"),
        ("GET", "/models"),
        ("DELETE", "/services/sq"),
        ("DELETE", "/models/squeezenet/1"),
        ("POST", "/walkthrough"),
    ]:
        body = {"path": ""} if method == "POST" else None
        reply = server.call(method, path, body, token=False)
        assert reply.status in (401, 403), (method, path, reply)
    wrong = server.call("GET", "/services", headers={"Authorization": "token wrong"}, token=False)
    assert wrong.status in (401, 403)
    assert not (server.root / "walkthrough.ipynb").exists()
    assert server.workspace.get_service("sq").pid == service.pid
    assert health_of(server, "sq") == "running"


def test_cookie_session_without_xsrf_is_refused(server, service):
    """A browser session (cookie) must also send the XSRF token, or a POST/DELETE is refused.

    This is what stops another web page from making a logged-in browser stop services.
    """
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar)
    )
    # Logging in with the token once leaves the session cookie, like opening /lab?token=...
    login = browser.open(server.url(f"/api/status?token={server.token}"), timeout=30)
    assert login.status == 200
    assert any(c.name.startswith("username-") for c in jar), [c.name for c in jar]

    listing = server.call("GET", "/services", token=False, opener=browser)
    assert listing.status == 200, "the cookie alone must be enough to read"

    folder = server.root / "xsrf"
    folder.mkdir()
    post = server.call("POST", "/walkthrough", {"path": "xsrf"}, token=False, opener=browser)
    assert post.status == 403, post
    assert "xsrf" in json.dumps(post.body).lower()
    assert not (folder / "walkthrough.ipynb").exists()
    delete = server.call("DELETE", "/services/sq", token=False, opener=browser)
    assert delete.status == 403, delete
    assert server.workspace.get_service("sq").pid == service.pid

    # The same session with the XSRF header JupyterLab sends is accepted. The _xsrf cookie
    # comes with a page (JupyterLab's own page sets it as it loads; here, /login).
    browser.open(server.url("/login"), timeout=30).read()
    xsrf = next((c.value for c in jar if c.name == "_xsrf"), None)
    assert xsrf, f"the server set no _xsrf cookie: {[c.name for c in jar]}"
    accepted = server.call(
        "POST",
        "/walkthrough",
        {"path": "xsrf"},
        token=False,
        opener=browser,
        headers={"X-XSRFToken": xsrf},
    )
    assert accepted.status == 201, accepted
    assert (folder / "walkthrough.ipynb").is_file()


def test_a_bad_service_name_is_a_clear_400(server, service):
    """A name that breaks the naming rules is answered 400 with the rule and a suggestion."""
    bad = urllib.parse.quote("Bad Name!")
    for method, path in [
        ("DELETE", f"/services/{bad}"),
        ("GET", f"/services/{bad}/key"),
        ("POST", f"/services/{bad}/notebook"),
    ]:
        reply = server.call(method, path, {"path": ""} if method == "POST" else None)
        assert reply.status == 400, (method, reply)
        assert "'Bad Name!' is not allowed" in reply.message
        assert "lowercase" in reply.message
        assert "'bad-name'" in reply.message  # the suggested spelling
    assert [s.name for s in server.workspace.list_services()] == ["sq"]


def test_the_room_lists_this_machines_services_and_refuses_a_bad_idle_time(server, service):
    """The sidebar's "This machine": the workspace's own service is marked as such, the
    room's idle time-out is ten minutes when no workshop set one, and a stop with a bad
    idle time is a clear 400 that stops nothing (the sidebar test stops a real one)."""
    reply = server.call("GET", "/room")
    assert reply.status == 200, reply
    assert reply.body["idle_after"] == 600
    [row] = [r for r in reply.body["services"] if r["pid"] == service.pid]
    assert (row["name"], row["mine"], row["target"]) == ("sq", True, "local")
    assert row["rss_mb"] > 40 and row["idle_seconds"] is not None
    for body in ({"seconds": 0}, {"seconds": "soon"}):
        refused = server.call("POST", "/room/stop-idle", body)
        assert refused.status == 400, (body, refused)
        assert "seconds" in refused.message
    assert health_of(server, "sq") == "running"
    assert server.call("GET", "/room", token=False).status in (401, 403)


def test_an_unknown_service_is_404(server, service):
    """Stopping or asking about a service that is not there says so, with its name."""
    for method, path in [("DELETE", "/services/nosuch"), ("GET", "/services/nosuch/key")]:
        reply = server.call(method, path)
        assert reply.status == 404, (method, reply)
        assert "nosuch" in reply.message
    reply = server.call("DELETE", "/models/nosuch/1")
    assert reply.status == 404
    assert "nosuch" in reply.message


def test_a_model_in_use_cannot_be_deleted(server, service):
    """Clean-up goes in dependency order: the model stays while a service serves it."""
    reply = server.call("DELETE", "/models/squeezenet/1")
    assert reply.status == 409, reply
    assert "model squeezenet:1 is still used by service sq" in reply.message
    assert [m.ref for m in server.workspace.list_models()] == ["squeezenet:1"]
    assert health_of(server, "sq") == "running"


def test_delete_stops_the_process_and_forgets_the_service(server, weights_dir, service):
    """DELETE ends the server process, the workspace forgets it, then the model can go too."""
    doomed = deploy_squeezenet(server.workspace, weights_dir, "doomed")
    try:
        assert psutil.pid_exists(doomed.pid)
        reply = server.call("DELETE", "/services/doomed")
        assert reply.status == 200, reply
        assert reply.body == {"deleted": "doomed"}
        assert process_gone(doomed.pid)
        assert "doomed" not in [s.name for s in server.workspace.list_services()]
        listed = [s["name"] for s in server.call("GET", "/services").body["services"]]
        assert listed == ["sq"]
        assert server.call("DELETE", "/services/doomed").status == 404
    finally:
        with contextlib.suppress(Exception):
            from accel_widgets.engine.targets import delete_service

            delete_service("doomed", workspace=server.workspace)


def test_walkthrough_copy_never_overwrites_a_users_copy(server):
    """The launcher opens a user's edited walkthrough as it is; a new folder gets a copy."""
    mine = server.root / "mine"
    mine.mkdir()
    edited = mine / "walkthrough.ipynb"
    edited.write_text('{"my": "edits"}')
    reply = server.call("POST", "/walkthrough", {"path": "mine"})
    assert reply.status == 200, reply
    assert reply.body == {"path": "mine/walkthrough.ipynb", "created": False}
    assert edited.read_text() == '{"my": "edits"}'

    (server.root / "fresh").mkdir()
    reply = server.call("POST", "/walkthrough", {"path": "fresh/"})
    assert reply.status == 201, reply
    assert reply.body == {"path": "fresh/walkthrough.ipynb", "created": True}
    copied = server.root / "fresh" / "walkthrough.ipynb"
    assert copied.read_text() == copy_text("walkthrough.ipynb")  # the template + language_info
    # The notebook it points to "beside this notebook" comes with it.
    neighbour = server.root / "fresh" / "walkthrough-code.ipynb"
    assert neighbour.read_text() == copy_text("walkthrough-code.ipynb")

    missing = server.call("POST", "/walkthrough", {"path": "no/such/folder"})
    assert missing.status == 400
    assert "not a folder" in missing.message


def test_paths_outside_the_server_root_are_refused(server, service, tmp_path):
    """No notebook is written outside the folder JupyterLab serves, however it is spelled."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (server.root / "escape").symlink_to(outside, target_is_directory=True)
    for path in ["../..", "..", "a/../../..", "escape"]:
        for route in ["/walkthrough", "/services/sq/notebook"]:
            reply = server.call("POST", route, {"path": path})
            assert reply.status == 400, (route, path, reply)
            assert "outside the folder JupyterLab serves" in reply.message
    assert list(outside.iterdir()) == []
    assert not (server.root.parent / "walkthrough.ipynb").exists()

    garbage = server.call("POST", "/walkthrough", b"../..")
    assert garbage.status == 400
    assert "must be JSON" in garbage.message


def test_scoring_notebook_is_written_for_the_service(server, service):
    """The sidebar's scoring notebook names the service and is written once, then kept."""
    (server.root / "scores").mkdir()
    reply = server.call("POST", "/services/sq/notebook", {"path": "scores"})
    assert reply.status == 201, reply
    assert reply.body == {"path": "scores/score-sq.ipynb", "created": True}
    notebook = json.loads((server.root / "scores" / "score-sq.ipynb").read_text())
    assert notebook["nbformat"] == 4
    assert any('get_service("sq")' in "".join(c["source"]) for c in notebook["cells"])
    again = server.call("POST", "/services/sq/notebook", {"path": "scores"})
    assert again.status == 200
    assert again.body["created"] is False


def test_targets_are_the_registry_the_widgets_and_cli_read(server):
    from accel_widgets.engine.targets import target_names

    reply = server.call("GET", "/targets")
    assert reply.status == 200
    names = [t["name"] for t in reply.body["targets"]]
    assert names == list(target_names()) and names[:2] == ["local", "container"]
    container = reply.body["targets"][1]
    assert container["needs_image"] is True
    assert "network" in [s["name"] for s in container["settings"]]
    assert "key" not in [s["name"] for s in container["settings"]]  # Python-only settings


def test_images_are_listed_and_deleted_in_dependency_order(
    server, service, docker_client, base_image
):
    """An image a container service runs is listed with its user and cannot go before it."""
    from accel_widgets.engine.package import package
    from accel_widgets.engine.targets import deploy

    workspace = server.workspace
    image = package("squeezenet", base=base_image, workspace=workspace)
    try:
        deploy("squeezenet", name="sq-box", target="container", workspace=workspace)
        rows = {row["name"]: row for row in server.call("GET", "/services").body["services"]}
        box = rows["sq-box"]
        assert (box["target"], box["target_title"]) == ("container", "Container (Docker)")
        assert box["image"] == image.tag and box["health"] == "running"

        [row] = server.call("GET", "/images").body["images"]
        assert (row["name"], row["version"], row["tag"]) == ("squeezenet", 1, image.tag)
        assert row["present"] is True and row["used_by"] == ["sq-box"]
        assert row["model"] == "squeezenet:1 fp16" and row["size_mb"] > 0

        refused = server.call("DELETE", "/images/squeezenet/1")
        assert refused.status == 409 and "used by service sq-box" in refused.message
        assert docker_client.images.get(image.tag)

        assert server.call("DELETE", "/services/sq-box").status == 200
        deleted = server.call("DELETE", "/images/squeezenet/1")
        assert deleted.status == 200 and deleted.body["deleted"] == ["squeezenet:1"]
        assert docker_client.images.list(name=image.tag.rpartition(":")[0]) == []
        assert server.call("GET", "/images").body["images"] == []
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(image.tag, force=True)


def test_engine_calls_run_off_the_event_loop(server, service):
    """A call that waits (here: for the catalog's write lock, held by another process as a
    long convert would hold it) must not stop the server from answering anything else."""
    import sqlite3
    import threading

    blocker = sqlite3.connect(server.workspace.db_path, timeout=30, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock: a delete_model now waits on it
    waiting: list[Reply] = []
    deleting = threading.Thread(
        target=lambda: waiting.append(server.call("DELETE", "/models/squeezenet/1"))
    )
    try:
        deleting.start()
        deleting.join(1.0)  # the delete is under way, waiting for the lock
        assert deleting.is_alive(), waiting
        for path in ("/targets", "/services", "/models", "/services/sq/key"):
            reply = server.call("GET", path)
            assert reply.status == 200, (path, reply)
            assert deleting.is_alive(), f"{path} was answered only after the delete"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        deleting.join(60)
    [refused] = waiting
    assert refused.status == 409 and "still used by service sq" in refused.message
