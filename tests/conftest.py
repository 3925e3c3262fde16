"""Shared test set-up: offline, loopback only, real weights read from ../shared/weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# The browser fixtures (browser, page, shots) live beside the servers they drive; the process
# guard kills any server a test's own clean-up left running (process_guard.py).
pytest_plugins = ["browser_support", "docker_support", "process_guard"]

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = Path(os.environ.get("ACCEL_WIDGETS_WEIGHTS_DIR", ROOT.parent / "shared" / "weights"))

# Set before any engine import: no test may try to download weights.
os.environ["ACCEL_WIDGETS_OFFLINE"] = "1"
os.environ.setdefault("ACCEL_WIDGETS_WEIGHTS_DIR", str(WEIGHTS_DIR))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Fail any test that would open an IP connection to anything but this machine."""
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise AssertionError(f"a test tried to connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def _private_keras_home(tmp_path_factory, monkeypatch):
    """An empty Keras cache: tests see what a fresh, offline machine sees."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.getbasetemp() / "keras-home"))


@pytest.fixture
def workspace(tmp_path):
    from accel_widgets.engine.store.workspace import Workspace

    return Workspace(tmp_path / "workspace")


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    if not (WEIGHTS_DIR / "SqueezeNet_fp16.onnx").is_file():
        pytest.fail(
            f"the shared weights are missing at {WEIGHTS_DIR}; set ACCEL_WIDGETS_WEIGHTS_DIR"
        )
    return WEIGHTS_DIR
