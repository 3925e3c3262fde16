"""A first run without the shared weights folder: the sample is a verified download, and the
walk (notebook and command line) goes on with what works here, saying what it skipped.

No test reaches the sample's public address (these machines are offline): the download is
served from a loopback HTTP server holding the real files from the shared weights folder.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from accel_widgets.cli import main
from accel_widgets.engine import choices
from accel_widgets.engine.labels import weights_dirs
from accel_widgets.engine.sample_model import (
    LABELS_FILE,
    SAMPLE_FILE,
    SAMPLE_FILES,
    SAMPLE_URL_ENV,
    download_sample,
)
from accel_widgets.errors import WeightsError
from accel_widgets.progress import EventLog

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def empty_weights(tmp_path, monkeypatch) -> Path:
    """ACCEL_WIDGETS_WEIGHTS_DIR at an empty folder: what a fresh clone sees."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("ACCEL_WIDGETS_WEIGHTS_DIR", str(folder))
    return folder


@pytest.fixture
def mirror(tmp_path, weights_dir) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server serving a folder (the real files by default); yields its URL."""
    served = tmp_path / "served"
    served.mkdir()
    for file in SAMPLE_FILES:
        (served / file.name).write_bytes((weights_dir / file.name).read_bytes())
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def test_the_sample_has_a_public_address_and_checksums_of_the_real_files(weights_dir):
    for file in SAMPLE_FILES:
        assert file.url.startswith("https://raw.githubusercontent.com/")
        digest = hashlib.sha256((weights_dir / file.name).read_bytes()).hexdigest()
        assert digest in file.sha256, file.name
    assert SAMPLE_FILES[0].size == (weights_dir / SAMPLE_FILE).stat().st_size


def test_download_verifies_writes_atomically_and_the_walk_finds_it(empty_weights, mirror):
    url, _ = mirror
    events = EventLog()
    assert choices.sample_model_path() is None
    path = download_sample(base_url=url, progress=events)
    assert path == empty_weights / SAMPLE_FILE
    assert sorted(p.name for p in empty_weights.iterdir()) == sorted([SAMPLE_FILE, LABELS_FILE])
    assert events.steps() == ["download"] and events[-1].fraction == 1.0
    assert any("sha256 verified" in e.message for e in events)
    assert choices.sample_model_path() == path
    assert choices.preselect().key == "squeezenet" and not choices.preselect().note
    # A second run keeps the verified files and fetches nothing.
    again = EventLog()
    download_sample(base_url="http://127.0.0.1:9/unused", progress=again)
    assert all("already in" in e.message for e in again)


def test_a_wrong_file_is_refused_and_nothing_is_left_behind(empty_weights, mirror):
    url, served = mirror
    (served / SAMPLE_FILE).write_bytes(b"<html>not a model</html>")
    with pytest.raises(WeightsError, match="not the expected file") as caught:
        download_sample(base_url=url)
    assert "nothing was kept" in str(caught.value)
    assert not (empty_weights / SAMPLE_FILE).exists()
    assert not [p for p in empty_weights.iterdir() if p.name.endswith(".part")]


def test_offline_download_names_the_file_the_folder_and_the_address(
    empty_weights, capsys, monkeypatch
):
    """Through the CLI, with the mirror variable pointing at a closed loopback port."""
    monkeypatch.setenv(SAMPLE_URL_ENV, "http://127.0.0.1:9")
    assert main(["sample"]) == 1
    error = capsys.readouterr().err
    assert "looks offline" in error and SAMPLE_FILE in error
    assert str(empty_weights) in error and "ACCEL_WIDGETS_WEIGHTS_DIR" in error
    assert SAMPLE_FILES[0].url in error  # where to fetch it by hand
    assert list(empty_weights.iterdir()) == []


def test_sample_command_downloads_into_the_weights_folder(empty_weights, mirror, capsys):
    url, _ = mirror
    assert main(["sample", "--url", url]) == 0
    out = capsys.readouterr().out
    assert f"the sample model is ready: {empty_weights / SAMPLE_FILE}" in out
    assert weights_dirs() == [empty_weights]


def test_without_the_sample_the_walk_preselects_a_catalog_model_with_random_weights(
    empty_weights,
):
    pick = choices.preselect("squeezenet")  # offline in tests (ACCEL_WIDGETS_OFFLINE)
    assert (pick.key, pick.weights, pick.sample_missing) == ("densenet121", "random", True)
    assert "accel-widgets sample" in pick.note and str(empty_weights) in pick.note
    assert "meaningless" in pick.note
    with pytest.raises(WeightsError, match="accel-widgets sample"):
        choices.get_choice("squeezenet")


def test_offline_imagenet_error_speaks_the_callers_language(tmp_path, capsys):
    from accel_widgets.engine.build import resolve_weights
    from accel_widgets.engine.catalog import get_spec

    with pytest.raises(WeightsError) as caught:
        resolve_weights(get_spec("densenet121"), "imagenet")
    assert 'weights="random"' in str(caught.value) and "--weights" not in str(caught.value)
    assert main(["--workspace", str(tmp_path / "workspace"), "convert", "densenet121"]) == 1
    error = capsys.readouterr().err
    assert "--weights random" in error and "weights=" not in error


def _env(empty: Path, workspace: Path) -> dict[str, str]:
    """This checkout's code in child processes, an empty weights folder, offline."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "ACCEL_WIDGETS_WEIGHTS_DIR": str(empty),
        "ACCEL_WIDGETS_WORKSPACE": str(workspace),
        "ACCEL_WIDGETS_OFFLINE": "1",
    }


def test_cli_walk_without_weights_explains_what_it_skips_and_finishes(tmp_path, empty_weights):
    """scripts/cli_walk.sh with an empty weights folder: exit 0, and it says why (~75 s)."""
    env = _env(empty_weights, tmp_path / "workspace")
    env.update(ACCEL_WIDGETS_SKIP_SETUP="1", ACCEL_WIDGETS_DEMO_MODEL="densenet121")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "cli_walk.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "SKIPPED the real pretrained SqueezeNet sample" in out
    assert "accel-widgets sample" in out and str(empty_weights) in out
    assert "Deploying densenet121 (random weights) instead" in out and "meaningless" in out
    assert "deleted service walkthrough" in out


def _sample_widget():
    from accel_widgets.widgets.model import ModelWidget

    widget = ModelWidget(model="squeezenet")
    assert widget.sample_box.layout.display == ""  # offered: the walk asked for the sample
    assert widget.choice.value == "densenet121"
    assert "squeezenet" not in [key for _, key in widget.choice.options]
    return widget


def test_get_the_sample_button_downloads_with_progress_and_selects_it(
    empty_weights, mirror, monkeypatch
):
    """The model step's button: live progress, then the sample is in the list and chosen."""
    url, _ = mirror
    monkeypatch.setenv(SAMPLE_URL_ENV, url)
    widget = _sample_widget()
    widget.sample_button.click()
    assert widget.wait(60)
    assert widget.error == ""
    assert widget.progress.updates > 0 and "sha256 verified" in widget.progress.log_text
    assert widget.choice.value == "squeezenet"
    assert widget.sample_box.layout.display == "none" and widget.note.value == ""
    assert "downloaded" in widget.status
    assert widget.confirm()["choice"].kind == "sample"
    assert (empty_weights / SAMPLE_FILE).is_file()


def test_get_the_sample_button_shows_a_failed_download_and_keeps_the_choices(
    empty_weights, mirror, monkeypatch
):
    url, served = mirror
    (served / SAMPLE_FILE).write_bytes(b"<html>not a model</html>")
    monkeypatch.setenv(SAMPLE_URL_ENV, url)
    widget = _sample_widget()
    options = list(widget.choice.options)
    widget.sample_button.click()
    assert widget.wait(60)
    assert "not the expected file" in widget.error and "nothing was kept" in widget.error
    assert list(widget.choice.options) == options and widget.choice.value == "densenet121"
    assert widget.sample_box.layout.display == ""  # still offered, to try again
    assert not widget.sample_button.disabled
    assert list(empty_weights.iterdir()) == []
