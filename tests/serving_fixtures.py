"""Shared helpers for the serving tests: real server processes on loopback, test images.

A server is started the way the engine's local target will start it: ``python -m
accel_widgets.serving --config FILE --port 0 --ready-file FILE``, waited for through the
ready file (60 s at most), and stopped with SIGTERM. Its stderr goes to a file the tests
can read (to prove keys are never logged).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 60.0
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def weights_path() -> Path:
    """The shared real weights (``$ACCEL_WIDGETS_WEIGHTS_DIR`` or ``../shared/weights``)."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "weights"
    path = Path(os.environ.get("ACCEL_WIDGETS_WEIGHTS_DIR", default))
    if not (path / "SqueezeNet_fp16.onnx").is_file():
        pytest.fail(f"SqueezeNet_fp16.onnx is missing from {path}; set ACCEL_WIDGETS_WEIGHTS_DIR")
    return path


def squeezenet_model(**overrides: Any) -> dict[str, Any]:
    """The real SqueezeNet 1.1 (fp16, BGR 0..255 minus the Caffe mean, NCHW) as a config model
    entry: the pixels it was trained on (engine/models/known_files.py)."""
    weights = weights_path()
    model = {
        "name": "squeezenet",
        "version": 1,
        "onnx": str(weights / "SqueezeNet_fp16.onnx"),
        "precision": "fp16",
        "preprocessing": {
            "channel_order": "BGR",
            "mean": [104.0, 117.0, 123.0],
            "layout": "NCHW",
            "dtype": "float16",
        },
        "input_alias": "images",
        "input_names": ["Placeholder:0", "images:0"],
        "outputs": [
            {
                "alias": "output_alias",
                "onnx_output": "softmaxout_1",
                "names": ["classifier/squeezenet/predictions/Softmax:0"],
                "postprocess": "flatten",
            }
        ],
        "labels": str(weights / "imagenet_classes.txt"),
    }
    model.update(overrides)
    return model


def write_config(folder: Path, models: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    path = folder / "server-config.json"
    path.write_text(json.dumps({"models": models or [squeezenet_model()], **extra}))
    return path


def jpeg_bytes(name: str = "chelsea", quality: int = 90) -> bytes:
    """A scikit-image sample photo (``chelsea`` is a cat, ``coffee`` an espresso) as JPEG."""
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


class ServerProcess:
    """A ``python -m accel_widgets.serving`` child process on loopback."""

    def __init__(self, folder: Path, config: Path, *args: str) -> None:
        self.folder = folder
        self.ready_file = folder / "ready.json"
        self.log_path = folder / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        command = [
            sys.executable,
            "-m",
            "accel_widgets.serving",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ready-file",
            str(self.ready_file),
            *args,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=folder
        )
        self.info: dict[str, Any] = {}

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                self.info = json.loads(self.ready_file.read_text())
                return self
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.process.returncode} before ready:\n{self.log()}"
                )
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"server not ready within {timeout} s:\n{self.log()}")

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def rest_port(self) -> int:
        return int(self.info["rest_port"])

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


@contextmanager
def running_server(folder: Path, config: Path, *args: str) -> Iterator[ServerProcess]:
    """Start, wait for ready, yield, then SIGTERM (SIGKILL if it does not stop)."""
    server = ServerProcess(folder, config, *args)
    try:
        server.wait_ready()
        yield server
    finally:
        try:
            server.terminate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            raise


def slow_model(path: Path, matmuls: int = 60) -> Path:
    """A compute-bound ONNX model (batch fixed at 1) for drain tests: a MatMul chain.

    Input float32 [1, 224, 224, 3] (the default preprocessing), output [1, 1]. One weight
    initializer is reused by every MatMul, so the file stays small while each run costs
    ``matmuls`` x 0.1 GFLOP. A batch of N rows runs N times (the server loops rows).
    """
    onnx = pytest.importorskip("onnx")  # the engine extra; the serving set does not need it
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(672, dtype=np.float32) * 0.999, "w")
    shape = numpy_helper.from_array(np.array([224, 672], dtype=np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["h0"])]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("ReduceMean", [f"h{matmuls}"], ["m"], keepdims=0))
    nodes.append(helper.make_node("Reshape", ["m", "one"], ["y"]))
    one = numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "one")
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 224, 224, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        initializer=[weight, shape, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key, as PEM files (test-only)."""
    pytest.importorskip("cryptography")
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path
