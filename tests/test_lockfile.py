"""The extension's lockfile is complete: npm installs from it without rewriting it.

The build (hatch-jupyter-builder) runs ``npm --no-save install``; the committed lockfile once
lacked the optional per-platform packages, so every ``pip install -e .`` rewrote it (+234
lines) and left the clone dirty. ``npm ci`` refuses a lockfile that does not match
package.json; its dry run, offline, checks exactly that in a second, without a download.
The full build is checked for a clean ``git status`` by ``scripts/fresh_machine.sh``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_npm_ci_accepts_the_committed_lockfile(tmp_path):
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not on PATH (the build brings its own, from PyPI)")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(ROOT / "labextension" / name, tmp_path / name)
    done = subprocess.run(
        [npm, "ci", "--dry-run", "--ignore-scripts", "--offline", "--no-audit", "--no-fund"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "package-lock.json").read_bytes() == (
        ROOT / "labextension" / "package-lock.json"
    ).read_bytes()


def test_the_build_never_writes_the_lockfile():
    text = (ROOT / "pyproject.toml").read_text()
    # Both the wheel and the editable build run npm with --no-save (no lockfile writes).
    assert text.count('npm = ["npm", "--no-save"]') == 2
