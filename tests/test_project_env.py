"""The scripts' own Python environment (scripts/python_env.sh), on a PATH like stock Debian's.

Each test copies the real ``scripts/prerequisites.sh`` and ``scripts/python_env.sh`` into a
throwaway checkout whose project is a stand-in (a package named ``accel_widgets`` with an
in-tree build backend that writes an editable wheel), so the install takes a second and
needs no network: what is tested is the scripts' choice of environment, the venv they make
with ``python3 -m venv``, the reuse of an install, and what they tell the user. The real
install of the real project is what ``scripts/fresh_machine.sh`` runs on a bare Debian 12.

The PATH holds every command of /usr/bin except ``python``, ``python3*`` and ``apt-get``,
plus a ``python3``: no test can lean on a ``python`` command or install system packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BACKEND = '''
"""A PEP 517 backend that installs this folder editable: a .pth file and nothing else."""
import base64, hashlib, os, zipfile

NAME, VERSION = "accel_widgets", "0.0.1"

def _record(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"

def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    info = f"{NAME}-{VERSION}.dist-info"
    metadata = f"Metadata-Version: 2.1\\nName: accel-widgets\\nVersion: {VERSION}\\n"
    wheel = "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    files = {
        f"{NAME}.pth": (os.path.dirname(os.path.abspath(__file__)) + "\\n").encode(),
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": wheel.encode(),
    }
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        records = []
        for path, data in files.items():
            wheel.writestr(path, data)
            records.append(_record(path, data))
        records.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\\n".join(records) + "\\n")
    return name

def get_requires_for_build_editable(config_settings=None):
    return []

build_wheel = build_editable
get_requires_for_build_wheel = get_requires_for_build_editable
'''

PYPROJECT = """
[build-system]
requires = []
build-backend = "editable_backend"
backend-path = ["."]

[project]
name = "accel-widgets"
version = "0.0.1"
"""

DRIVER = """
set -euo pipefail
cd "$(dirname "$0")"
source scripts/prerequisites.sh
source scripts/python_env.sh
project_env all
echo "PY=$PY"
"$PY" -c 'import accel_widgets, sys; print("IMPORTED", accel_widgets.__file__, "IN", sys.prefix)'
"""


@pytest.fixture
def stock_path(tmp_path) -> Path:
    """A bin folder like a stock Debian PATH: no ``python``, no ``apt-get``; a ``python3``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in Path("/usr/bin").iterdir():
        name = tool.name
        if name.startswith("python") or name in ("apt-get", "apt", "sudo"):
            continue
        (bin_dir / name).symlink_to(tool)
    (bin_dir / "python3").symlink_to(sys.executable)
    return bin_dir


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A checkout with the real scripts and a stand-in project."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    for script in ("prerequisites.sh", "python_env.sh"):
        shutil.copy(ROOT / "scripts" / script, root / "scripts" / script)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "editable_backend.py").write_text(BACKEND)
    (root / "accel_widgets").mkdir()
    (root / "accel_widgets" / "__init__.py").write_text("")
    (root / "drive.sh").write_text(textwrap.dedent(DRIVER))
    return root


def run(checkout: Path, path: Path | str, **extra: str) -> subprocess.CompletedProcess[str]:
    """The driver in a clean environment: no active venv or conda, pip offline."""
    wheels = Path(__import__("ensurepip").__file__).parent / "_bundled"
    env = {
        "HOME": str(checkout.parent / "home"),
        "PATH": str(path),
        "LANG": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),  # pip's own wheel, for `pip install --upgrade pip`
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "ACCEL_WIDGETS_INSTALLER": "pip",
        **extra,
    }
    return subprocess.run(
        ["/bin/bash", str(checkout / "drive.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_new_checkout_gets_its_own_venv_and_the_next_run_reuses_it(checkout, stock_path):
    venv = checkout / ".venv"
    first = run(checkout, stock_path)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert f"making the Python environment {venv} (python3 -m venv" in out
    assert f"installing accel-widgets[all] with pip into {venv}" in out
    assert f"PY={venv}/bin/python" in out
    assert f"IMPORTED {checkout}/accel_widgets/__init__.py IN {venv}" in out
    assert f"Python environment: {venv} (Python 3." in out
    assert f"To use accel-widgets from it later: source {venv}/bin/activate" in out

    second = run(checkout, stock_path)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert f"accel-widgets[all] is installed in {venv} already" in out
    assert "installing" not in out and "making the Python environment" not in out

    # A changed pyproject.toml (a new dependency, say) means installing again.
    (checkout / "pyproject.toml").write_text(PYPROJECT + "\n# changed\n")
    third = run(checkout, stock_path)
    assert "installing accel-widgets[all] with pip" in third.stdout, third.stderr


def test_an_active_virtual_environment_is_used_not_a_new_one(checkout, stock_path, tmp_path):
    mine = tmp_path / "mine"
    subprocess.run([sys.executable, "-m", "venv", str(mine)], check=True, timeout=120)
    done = run(checkout, f"{mine / 'bin'}:{stock_path}", VIRTUAL_ENV=str(mine))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"IN {mine}" in out and f"Python environment: {mine}" in out
    assert not (checkout / ".venv").exists()


def test_a_named_environment_is_made_where_the_variable_says(checkout, stock_path):
    done = run(checkout, stock_path, ACCEL_WIDGETS_VENV="envs/accel")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"IN {checkout / 'envs' / 'accel'}" in out  # relative: to the checkout
    assert not (checkout / ".venv").exists()


def test_without_venv_support_or_apt_the_error_says_what_to_install(checkout, stock_path):
    """A python3 whose venv module cannot bootstrap pip (Debian without python3-venv), on a
    system without apt-get: one clear error, and no half-made environment left behind."""
    fake = stock_path / "python3"
    fake.unlink()
    fake.write_text(
        "#!/bin/bash\n"
        'if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then\n'
        '  mkdir -p "$3/bin"\n'
        '  echo "The virtual environment was not created successfully because ensurepip is'
        ' not available." >&2\n'
        "  exit 1\n"
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    fake.chmod(0o755)
    done = run(checkout, stock_path)
    assert done.returncode == 1
    assert "ensurepip is not available" in done.stderr
    assert "could not make a virtual environment with python3 -m venv" in done.stderr
    assert "(Debian/Ubuntu: python3-venv)" in done.stderr
    assert "set ACCEL_WIDGETS_VENV to it" in done.stderr
    assert not (checkout / ".venv").exists()


def test_skip_setup_installs_nothing_and_uses_python3_as_it_is(checkout, stock_path):
    done = run(checkout, stock_path, ACCEL_WIDGETS_SKIP_SETUP="1", PYTHONPATH=str(checkout))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "ACCEL_WIDGETS_SKIP_SETUP: using" in out and "installing" not in out
    assert not (checkout / ".venv").exists()
