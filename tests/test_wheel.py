"""The wheel carries the built JupyterLab extension: it installs and is listed without Node.

``pip wheel .`` builds it (the extension is built once by the build's own Node.js from
PyPI, or reused when ``accel_widgets/labextension`` is already built, as after the test
command's install). Building needs the build tools from the package index, as any wheel
build does. The wheel is then installed into a fresh virtual environment with no Node.js,
npm or index in reach: ``--no-deps --no-index``, on a PATH without ``node`` or ``npm``. Its
dependencies (JupyterLab, ...) are lent from the running test environment by a path line,
so JupyterLab is there to list what the wheel installed into the new environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = "share/jupyter/labextensions/accel-widgets"

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = out.glob("accel_widgets-*.whl")
    return path


@pytest.fixture
def no_node_path(tmp_path) -> Path:
    """/usr/bin without node, nodejs, npm, npx or corepack."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if tool.name not in ("node", "nodejs", "npm", "npx", "corepack"):
            (bin_dir / tool.name).symlink_to(tool)
    return bin_dir


def test_the_wheel_holds_the_built_extension_the_server_config_and_the_notebooks(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "-".join(wheel.name.split("-")[:2]) + ".data"  # accel_widgets-0.1.0.data
    assert f"{data}/data/{EXTENSION}/package.json" in names
    assert f"{data}/data/{EXTENSION}/install.json" in names
    assert any(n.startswith(f"{data}/data/{EXTENSION}/static/remoteEntry.") for n in names)
    config = "etc/jupyter/jupyter_server_config.d/accel_widgets.json"
    assert f"{data}/data/{config}" in names
    for notebook in ("walkthrough.ipynb", "walkthrough-code.ipynb", "train-your-own.ipynb"):
        assert f"accel_widgets/notebooks/{notebook}" in names


def test_installed_without_node_jupyterlab_lists_the_extension(wheel, tmp_path, no_node_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {
        "HOME": str(tmp_path / "home"),
        "PATH": f"{venv / 'bin'}:{no_node_path}",
        "LANG": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        env=env,
        cwd=tmp_path,  # not the checkout: `python -c` would import it from the current folder
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # JupyterLab and the rest, lent from this environment (after the venv's own packages).
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            env=env,
            cwd=tmp_path,
            text=True,
        ).strip()
    )
    (site / "zz_lent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    listed = subprocess.run(
        [str(python), "-m", "jupyterlab.labextensions", "list"],
        env=env,
        cwd=tmp_path,  # not the checkout: `python -c` would import it from the current folder
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)  # colours
    assert listed.returncode == 0, out
    section = out.split(f"{venv}/share/jupyter/labextensions", 1)
    assert len(section) == 2, f"nothing listed from the new environment:\n{out}"
    assert "accel-widgets v0.1.0 enabled" in section[1] and "OK" in section[1], out

    where = subprocess.run(
        [str(python), "-c", "import accel_widgets; print(accel_widgets.__file__)"],
        env=env,
        cwd=tmp_path,  # not the checkout: `python -c` would import it from the current folder
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    servers = subprocess.run(
        [str(python), "-m", "jupyter_server.extension.serverextension", "list"],
        env=env,
        cwd=tmp_path,  # not the checkout: `python -c` would import it from the current folder
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = re.sub(r"\x1b\[[0-9;]*m", "", servers.stdout + servers.stderr)
    # The server extension is enabled by the config file the wheel put in the new environment.
    mine = out.split(f"Config dir: {venv}/etc/jupyter", 1)
    assert len(mine) == 2 and "accel_widgets enabled" in mine[1].split("Config dir:")[0], out
