"""The room view: every accel-widgets service on this machine, across workspaces.

Two workspaces (two workshop participants) each deploy the real SqueezeNet sample as a real
local server; the room lists both with their memory, requests and idle time, read from the
processes and from each server's own ``/metrics``, and stops the idle one after asking.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from accel_widgets.cli import main
from accel_widgets.engine.client import client_from_service
from accel_widgets.engine.known_files import SAMPLE_PREPROCESSING
from accel_widgets.engine.register import register_onnx
from accel_widgets.engine.samples import sample_photos
from accel_widgets.engine.targets import delete_service, deploy, service_status
from accel_widgets.engine.targets.room import others, room_services
from accel_widgets.engine.workspace import Workspace

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, weights_dir) -> Path:
    root = tmp_path_factory.mktemp("room") / "workspace"
    register_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        "squeezenet",
        preprocessing=SAMPLE_PREPROCESSING,
        workspace=Workspace(root),
    )
    return root


@pytest.fixture
def participants(registered, tmp_path) -> Iterator[tuple[Workspace, Workspace]]:
    """Two workspaces holding the sample; every service they start is deleted after."""
    pair = []
    for who in ("ada", "bob"):
        shutil.copytree(registered, tmp_path / who)
        pair.append(Workspace(tmp_path / who))
    try:
        yield pair[0], pair[1]
    finally:
        for workspace in pair:
            for service in workspace.list_services():
                delete_service(service.name, workspace=workspace)


def _mine(workspace: Workspace) -> list:
    return [s for s in room_services() if s.workspace == str(workspace.root.resolve())]


def test_the_room_lists_every_workspaces_services_and_stops_the_idle_one(
    participants, capsys, monkeypatch
):
    ada, bob = participants
    idle = deploy("squeezenet", name="forgotten", workspace=bob, ready_timeout=120)
    busy = deploy("squeezenet", name="busy", workspace=ada, ready_timeout=120)
    deadline = time.monotonic() + 60
    while (_mine(bob)[0].idle_seconds or 0) < 8:
        assert time.monotonic() < deadline, "the idle gauge never reached 8 s"
        time.sleep(0.5)
    photo = sample_photos(["chelsea"])[0].data
    with client_from_service(busy) as client:
        for _ in range(3):
            client.score_image(photo)

    [seen_busy] = _mine(ada)
    [seen_idle] = _mine(bob)
    assert (seen_busy.name, seen_busy.pid, seen_busy.requests) == ("busy", busy.pid, 3)
    assert (seen_idle.name, seen_idle.pid, seen_idle.requests) == ("forgotten", idle.pid, 0)
    assert seen_idle.idle_seconds >= 8 > seen_busy.idle_seconds
    assert 40 < seen_busy.rss_mb < 1000 and seen_busy.address == f"127.0.0.1:{busy.port}"
    assert [s.name for s in others(ada) if s.workspace == str(bob.root.resolve())] == ["forgotten"]
    assert all(s.workspace != str(ada.root.resolve()) for s in others(ada))

    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["room", "--stop-idle", "8"]) == 0
    out = capsys.readouterr().out
    assert "forgotten" in out and "busy" in out and "Nothing stopped." in out
    assert service_status("forgotten", bob).live == "running"

    assert main(["room", "--stop-idle", "8", "--yes"]) == 0
    assert "stopped 1: forgotten" in capsys.readouterr().out
    stopped = service_status("forgotten", bob)
    assert stopped.live == "dead" and stopped.shown.startswith("stopped (idle: no request for")
    assert service_status("busy", ada).live == "running"
    assert [s.name for s in _mine(ada)] == ["busy"] and _mine(bob) == []


def test_the_capacity_check_counts_the_services_other_workspaces_run(participants, capsys):
    """Issue 24, item 3: the local check sets this deployment's own need (from the file it
    would serve) against what is left beside the room's other services, and names them."""
    from dataclasses import replace

    from accel_widgets.engine.quota import SERVE_BASE_MB, SERVE_MB_PER_MODEL_MB, check_quota

    ada, bob = participants
    deploy("squeezenet", name="bobs", workspace=bob, ready_timeout=120)
    [theirs] = _mine(bob)

    mine = check_quota("local", model="squeezenet", workspace=ada)
    artifact = ada.get_artifact("squeezenet")
    need = SERVE_BASE_MB + SERVE_MB_PER_MODEL_MB * artifact.size_bytes / 2**20
    [(label, judged)] = mine.details["models"].items()
    assert label == f"squeezenet:1 ({artifact.precision})" and judged["ok"] is True
    assert judged["serve_mb"] == round(need) and 135 < need < 160
    assert [s["name"] for s in mine.details["others"] if s["workspace"] == theirs.workspace] == [
        "bobs"
    ]
    assert mine.details["others_mb"] >= theirs.rss_mb > 40
    assert mine.verdict is True
    assert (
        "other service" in mine.advice
        and f"bobs in {theirs.workspace}".replace(str(Path.home()), "~") in mine.advice
    )

    # A model this machine cannot hold: the reason names what the others already use.
    huge = replace(artifact, size_bytes=2**50)
    too_big = check_quota("local", model=huge, workspace=ada)
    [judged] = too_big.details["models"].values()
    assert too_big.verdict is False and judged["serve"] is False
    assert "serving needs" in judged["reason"] and "bobs in" in judged["reason"]
    assert "accel-widgets room --stop-idle" in too_big.advice

    # Bob's own check does not count his own service as another's.
    his = check_quota("local", model="squeezenet", workspace=bob)
    assert all(s["workspace"] != str(bob.root.resolve()) for s in his.details["others"])

    # And on the command line the verdict shows the estimate and the others.
    assert main(["--workspace", str(ada.root), "quota", "--model", "squeezenet"]) == 0
    out = capsys.readouterr().out
    assert "ENOUGH:" in out and "bobs in" in out and f"about {round(need)} MB" in out
