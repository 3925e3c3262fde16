"""The test command on a clone without ``../shared``: the pinned files are fetched, verified.

No test reaches the public addresses (these machines are offline): a loopback HTTP server
(Python's ``http.server``) serves the real files from the shared weights and data folders
under the names the download asks for, as ``tests/test_first_run.py`` does for the sample.
The command is run as the test command runs it, in its own process.
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

from accel_widgets.engine.checks.suite_files import (
    MANIFEST,
    PHOTOS_BASE,
    PHOTOS_SUBDIR,
    WEIGHTS_FILES,
    photo_files,
)
from accel_widgets.engine.models.sample_model import SAMPLE_URL_ENV

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = 500


def shared_data() -> Path:
    """The labelled photos' folder: the first of ``$ACCEL_WIDGETS_DATA_DIR`` or ../shared/data."""
    given = [p for p in os.environ.get("ACCEL_WIDGETS_DATA_DIR", "").split(os.pathsep) if p]
    folder = Path(given[0]) if given else ROOT.parent / "shared" / "data"
    if not (folder / PHOTOS_SUBDIR).is_dir():
        pytest.fail(
            f"the labelled photos are missing at {folder / PHOTOS_SUBDIR}; run scripts/test.sh "
            "(it fetches them) or set ACCEL_WIDGETS_DATA_DIR"
        )
    return folder


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def mirror(tmp_path, weights_dir) -> Iterator[tuple[str, Path]]:
    """A loopback server with the real files: ``<name>`` and ``imagenet-sample/<name>``.

    The photos are linked, not copied (54 MB); a test that spoils one replaces its link.
    """
    served = tmp_path / "served"
    photos = served / PHOTOS_SUBDIR
    photos.mkdir(parents=True)
    for file in WEIGHTS_FILES:
        (served / file.name).symlink_to(weights_dir / file.name)
    source = shared_data() / PHOTOS_SUBDIR
    for file in photo_files():
        (photos / file.name).symlink_to(source / file.name)
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def run_fetch(weights: Path, data: Path, url: str) -> subprocess.CompletedProcess[str]:
    """``python -m accel_widgets.engine.checks.suite_files`` as scripts/test.sh runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{SAMPLE_URL_ENV: url})
    folders = ["--weights", str(weights), "--data", str(data)]
    return subprocess.run(
        [sys.executable, "-m", "accel_widgets.engine.checks.suite_files", *folders],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_manifest_pins_the_shared_photos_byte_for_byte():
    """Every photo the tests read is in the manifest with its size and sha256, and back."""
    folder = shared_data() / PHOTOS_SUBDIR
    files = photo_files()
    assert len(files) == PHOTOS
    assert sorted(f.name for f in files) == sorted(p.name for p in folder.iterdir())
    for file in files:
        data = (folder / file.name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (file.size, file.sha256[0])
        assert file.url.startswith(PHOTOS_BASE + "/n")
    slipper = next(f for f in files if "'" in f.name)
    assert "%27" in slipper.url  # an address, not a shell word


def test_a_clone_without_shared_fetches_every_file_verified(tmp_path, mirror):
    url, _ = mirror
    weights, data = tmp_path / "cache" / "weights", tmp_path / "cache" / "data"
    done = run_fetch(weights, data, url)
    assert done.returncode == 0, done.stderr
    assert "the test files are all here" in done.stdout
    assert sorted(p.name for p in weights.iterdir()) == sorted(f.name for f in WEIGHTS_FILES)
    photos = data / PHOTOS_SUBDIR
    assert len(list(photos.iterdir())) == PHOTOS
    source = shared_data() / PHOTOS_SUBDIR
    for name in ("n01440764_tench.JPEG", "n12057211_yellow_lady's_slipper.JPEG"):
        assert (photos / name).read_bytes() == (source / name).read_bytes()
    # A second run checks them and fetches nothing (a closed port would fail any fetch).
    again = run_fetch(weights, data, "http://127.0.0.1:9")
    assert again.returncode == 0, again.stderr
    assert "fetching" not in again.stdout


def test_offline_one_message_names_each_missing_file_its_folder_and_address(tmp_path):
    weights, data = tmp_path / "weights", tmp_path / "data"
    weights.mkdir()
    (weights / "mobilenetv2-12-int8.onnx").write_bytes(b"not the model")  # wrong bytes count
    done = run_fetch(weights, data, "http://127.0.0.1:9")
    assert done.returncode == 2
    error = done.stderr
    assert "looks offline" in error and "503 file(s) the tests read are missing" in error
    assert f"into {weights}/ (3 file(s)):" in error
    assert f"into {data / PHOTOS_SUBDIR}/ ({PHOTOS} file(s)):" in error
    for file in [*WEIGHTS_FILES, *photo_files()]:
        assert f"  {file.name}  <- {file.url}\n" in error + "\n", file.name
    assert str(MANIFEST) in error
    assert not [p for p in tmp_path.rglob("*.part")]


def test_a_spoiled_photo_is_refused_and_the_rest_are_kept(tmp_path, mirror):
    """The mirror serves one wrong photo: the run fails naming it, keeps nothing of it, and
    a later run against a good server fetches only what is still missing."""
    url, served = mirror
    spoiled = photo_files()[7]
    link = served / PHOTOS_SUBDIR / spoiled.name
    link.unlink()
    link.write_bytes(b"<html>rate limited</html>")
    weights, data = tmp_path / "weights", tmp_path / "data"
    done = run_fetch(weights, data, url)
    assert done.returncode == 2
    assert f"the download of {spoiled.name}" in done.stderr
    assert "is not the expected file" in done.stderr
    assert f"  {spoiled.name}  <- {spoiled.url}" in done.stderr
    assert not (data / PHOTOS_SUBDIR / spoiled.name).exists()
    assert not [p for p in tmp_path.rglob("*.part")]
    assert sorted(p.name for p in weights.iterdir()) == sorted(f.name for f in WEIGHTS_FILES)

    link.unlink()
    link.symlink_to(shared_data() / PHOTOS_SUBDIR / spoiled.name)
    again = run_fetch(weights, data, url)
    assert again.returncode == 0, again.stderr
    missing = int(again.stdout.split("fetching ", 1)[1].split(" ", 1)[0])
    assert 1 <= missing < PHOTOS  # only what the first run had not verified
    assert len(list((data / PHOTOS_SUBDIR).iterdir())) == PHOTOS
