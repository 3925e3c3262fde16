"""The build context of a model image: Dockerfile, model, server config, code, pinned wheels.

The context is complete on its own: ``docker build`` (or ``buildah bud``) on any machine
turns it into the same image, which is why it is written even where no Docker engine runs.
The image carries the light serving set only (ONNX Runtime, gRPC, protobuf, numpy,
simplejpeg, Pillow and ``accel_widgets.serving``): no TensorFlow, no Jupyter.

Wheels are pinned to the versions installed here, so the image's protobuf and gRPC are the
ones the server was tested with, and downloaded once per set of pins into a cache shared by
every workspace (``$ACCEL_WIDGETS_CACHE`` or ``~/.cache/accel-widgets``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import accel_widgets
from accel_widgets.engine.packaging.service_config import model_config_for
from accel_widgets.engine.store.workspace import ArtifactRecord, Workspace
from accel_widgets.errors import PackageError
from accel_widgets.progress import Reporter
from accel_widgets.serving.config import ServerConfig

#: Docker Hub's official slim Python on the Debian release our wheels are built for.
DEFAULT_BASE = "python:3.11-slim-bookworm"
#: A machine with no registry (a workshop room) names its own base once, here.
BASE_ENV = "ACCEL_WIDGETS_BASE_IMAGE"
#: What ``python -m accel_widgets.serving`` imports, and nothing else.
SERVING_PACKAGES = (
    "numpy",
    "onnxruntime",
    "grpcio",
    "protobuf",
    "simplejpeg",
    "pillow",
    "prometheus-client",
    "grpcio-health-checking",
    "tornado",
)
#: The second runtime (the ``openvino`` extra): the image carries it when it is installed
#: where the image is made, so the image's ``runtime: auto`` can pick it (serving/
#: runtime_choice.py). Pruned to its CPU plugin and ONNX reader in the image: 100 MB of 180.
OPTIONAL_SERVING_PACKAGES = ("openvino", "openvino-telemetry")
#: Modules of this package the server needs (accel_widgets/__init__ imports progress).
APP_MODULES = ("__init__.py", "errors.py", "progress.py", "preprocess.py")
#: Inside the image. TF Serving's own ports: 8500 gRPC, 8501 REST.
MODEL_DIR = "/srv/model"
GRPC_PORT, REST_PORT = 8500, 8501
#: Numeric, so Kubernetes' runAsNonRoot can check it without a passwd entry.
SERVING_UID = 10001
LABEL = "io.accel-widgets"

#: The first stage drops what the server never imports (ONNX Runtime's model tools and every
#: package's tests: 24 MB), so the image is 389 MB for SqueezeNet on Debian's Python (was 413).
DOCKERFILE = """\
# A model image made by accel-widgets: one converted model and the light serving set.
# Build it anywhere: docker build [--build-arg BASE=<another Python 3 image>] -t NAME .
ARG BASE={default_base}

FROM ${{BASE}} AS wheels
LABEL {label}.stage="wheels"
COPY requirements.txt /tmp/requirements.txt
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/accel-widgets \\
 && /opt/accel-widgets/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \\
      --find-links /tmp/wheels -r /tmp/requirements.txt \\
 && /opt/accel-widgets/bin/pip uninstall --yes --quiet pip setuptools \\
 && cd /opt/accel-widgets/lib/python3*/site-packages \\
 && rm -rf onnxruntime/transformers onnxruntime/quantization onnxruntime/tools tornado/test \\
      openvino/include openvino/tools openvino/libs/cache.json \\
      openvino/libs/libopenvino_intel_gpu_plugin.so openvino/libs/libopenvino_intel_npu_plugin.so \\
      openvino/libs/*tensorflow*_frontend* openvino/libs/*pytorch_frontend* \\
      openvino/libs/*paddle_frontend* openvino/libs/*jax_frontend* openvino/libs/*gguf_frontend* \\
      openvino/frontend/tensorflow openvino/frontend/pytorch openvino/frontend/paddle \\
      openvino/frontend/jax \\
 && find . -depth -type d -name tests -exec rm -rf {{}} +

FROM ${{BASE}}
COPY --from=wheels /opt/accel-widgets /opt/accel-widgets
COPY app/ /opt/accel-widgets/app/
COPY model/ {model_dir}/
ENV PATH=/opt/accel-widgets/bin:$PATH \\
    PYTHONPATH=/opt/accel-widgets/app \\
    PYTHONUNBUFFERED=1 \\
    HOME=/tmp \\
    ACCEL_WIDGETS_HOST=0.0.0.0 \\
    ACCEL_WIDGETS_PORT={grpc_port} \\
    ACCEL_WIDGETS_REST_PORT={rest_port}
# Fail the build, not the deploy, when a module is missing; compile once, not at each start.
RUN python -c "import accel_widgets.serving.server, onnxruntime, simplejpeg" \\
 && python -m compileall -q /opt/accel-widgets/app
USER {uid}:{uid}
EXPOSE {grpc_port} {rest_port}
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \\
    CMD ["python", "-m", "accel_widgets.serving.healthcheck"]
{labels}
ENTRYPOINT ["python", "-m", "accel_widgets.serving", "--config", "{model_dir}/config.json"]
"""


def default_base() -> str:
    """``$ACCEL_WIDGETS_BASE_IMAGE``, else :data:`DEFAULT_BASE`."""
    return os.environ.get(BASE_ENV, "").strip() or DEFAULT_BASE


@dataclass(frozen=True)
class BuildContext:
    """A written context: its folder, its digest (of every file), and the image labels."""

    path: Path
    digest: str
    labels: dict[str, str]
    base: str
    python: str

    @property
    def dockerfile(self) -> Path:
        return self.path / "Dockerfile"


def workspace_label(workspace: Workspace) -> str:
    """Which workspace made an image or a container (several users or test runs may share
    one engine): its readable id (:attr:`Workspace.ident`), as its tags and container
    names carry it. In the image's labels it makes the image the workspace's own: two
    workspaces packaging the same model get two images, so deleting one never removes the
    other's."""
    return workspace.ident


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def serving_pins() -> dict[str, str]:
    """The serving packages at the versions installed here (what the image installs)."""
    pins = {}
    for package in SERVING_PACKAGES:
        try:
            pins[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            raise PackageError(
                f"{package} is not installed here, so its version cannot be pinned for the "
                f"image: `pip install {package}`"
            ) from None
    for package in OPTIONAL_SERVING_PACKAGES:  # carried when installed here
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pins[package] = importlib.metadata.version(package)
    return pins


def cache_root() -> Path:
    env = os.environ.get("ACCEL_WIDGETS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "accel-widgets"


def _wheel_platforms(machine: str) -> list[str]:
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())
    return [f"manylinux2014_{arch}", f"manylinux_2_17_{arch}", f"manylinux_2_28_{arch}"]


def wheels_for(python: str, machine: str, report: Reporter) -> Path:
    """A folder of wheels for the pins, Python ``python`` (``"3.11"``) and CPU ``machine``.

    Downloaded with pip once per (pins, Python, CPU) and kept in the cache; a failed
    download leaves nothing half-written behind.
    """
    pins = serving_pins()
    key = hashlib.sha256(json.dumps([pins, python, machine], sort_keys=True).encode()).hexdigest()
    folder = cache_root() / "wheels" / f"py{python}-{machine}-{key[:16]}"
    if folder.is_dir() and any(folder.glob("*.whl")):
        report("wheels", 1.0, f"{len(list(folder.glob('*.whl')))} wheels from the cache")
        return folder
    report("wheels", None, f"downloading wheels for Python {python} ({machine}) with pip")
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        *[arg for p in _wheel_platforms(machine) for arg in ("--platform", p)],
        "--dest",
        str(staging),
        *[f"{name}=={version}" for name, version in pins.items()],
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        raise PackageError(
            f"pip could not download the serving wheels for Python {python} on {machine} "
            f"({', '.join(f'{n}=={v}' for n, v in pins.items())}): check that this machine "
            f"reaches your package index (PIP_INDEX_URL), or use a base image with Python "
            f"{python}.\n{tail}"
        )
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    report("wheels", 1.0, f"{len(list(folder.glob('*.whl')))} wheels downloaded")
    return folder


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows (a VGG-16 model is 550 MB), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _copy_app(target: Path) -> None:
    """``accel_widgets`` as the server imports it: the top modules and ``serving/``."""
    package = Path(accel_widgets.__file__).parent
    for module in APP_MODULES:
        _link_or_copy(package / module, target / "accel_widgets" / module)
    for source in sorted((package / "serving").rglob("*.py")):
        _link_or_copy(source, target / "accel_widgets" / source.relative_to(package))


def _folder_digest(folder: Path) -> str:
    """One digest over every file's path and content: the same context, the same digest."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode() + b"\n")
    return "sha256:" + digest.hexdigest()


def write_context(
    workspace: Workspace,
    artifact: ArtifactRecord,
    folder: Path,
    *,
    base: str = DEFAULT_BASE,
    python: str = "3.11",
    machine: str | None = None,
    report: Reporter,
) -> BuildContext:
    """Write the build context for ``artifact`` into ``folder`` (created, must be empty)."""
    machine = machine or platform.machine()
    folder.mkdir(parents=True, exist_ok=True)
    report("context", 0.1, f"writing the build context in {folder}")
    model_dir = folder / "model"
    model_dir.mkdir()
    _link_or_copy(artifact.file, model_dir / "model.onnx")
    model = model_config_for(workspace, artifact)
    labels = None
    if model.labels is not None and Path(model.labels).is_file():
        _link_or_copy(Path(model.labels), model_dir / "labels.txt")
        labels = Path("labels.txt")
    # Relative paths resolve against the config file's folder (serving/config.py).
    in_image = dataclasses.replace(model, onnx=Path("model.onnx"), labels=labels)
    # "auto": the image races the runtimes it carries on the machine it runs on.
    config = ServerConfig(models=(in_image,), default_model=model.name, runtime="auto")
    (model_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    _copy_app(folder / "app")
    pins = serving_pins()
    (folder / "requirements.txt").write_text(
        "".join(f"{name}=={version}\n" for name, version in pins.items())
    )
    wheels = wheels_for(python, machine, report)
    for wheel in sorted(wheels.glob("*.whl")):
        _link_or_copy(wheel, folder / "wheels" / wheel.name)
    onnx_sha = file_sha256(artifact.file)
    labels_map = {
        f"{LABEL}.model": artifact.model_name,
        f"{LABEL}.model-version": str(artifact.model_version),
        f"{LABEL}.precision": artifact.precision,
        f"{LABEL}.onnx-sha256": onnx_sha,
        f"{LABEL}.serving": accel_widgets.__version__,
        f"{LABEL}.workspace": workspace_label(workspace),
        # The server reads its key from a mounted file (ACCEL_WIDGETS_API_KEYS_FILE), never
        # from its environment: the container target refuses images without this label.
        f"{LABEL}.keys": "file",
        "org.opencontainers.image.title": f"{artifact.model_name} ({artifact.precision})",
        "org.opencontainers.image.description": "ONNX model served over TF Serving's gRPC API",
    }
    label_lines = "LABEL " + " \\\n      ".join(
        f"{key}={json.dumps(value)}" for key, value in labels_map.items()
    )
    (folder / "Dockerfile").write_text(
        DOCKERFILE.format(
            default_base=DEFAULT_BASE,
            model_dir=MODEL_DIR,
            grpc_port=GRPC_PORT,
            rest_port=REST_PORT,
            uid=SERVING_UID,
            labels=label_lines,
            label=LABEL,
        )
    )
    # The base is a build argument, not part of the files: fold it into the digest, so the
    # same model on another base is another image.
    digest = _folder_digest(folder)
    digest = "sha256:" + hashlib.sha256(f"{digest}\0{base}".encode()).hexdigest()
    report("context", 1.0, f"build context ready ({digest[7:19]})")
    return BuildContext(folder, digest, labels_map, base, python)
