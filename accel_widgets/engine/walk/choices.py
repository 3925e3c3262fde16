"""What the walk can deploy: the catalog plus the real pretrained sample model, as one list.

The catalog models need ImageNet weights from the Keras download (or a file) to give
meaningful labels; a workshop room that is offline would only ever see random weights. The
sample is a small real pretrained classifier (SqueezeNet 1.1, 2.4 MB): in the shared weights
folder, or downloaded once with ``accel-widgets sample`` (:mod:`~accel_widgets.engine.
sample_model`). The walk offers it as the first choice whenever it is there: a new user gets
from the first click to "Egyptian cat" on a real photo without an account.

When it is not there, :func:`preselect` picks what can work on this machine instead (the
smallest catalog model, with ImageNet weights when they can be had, random weights offline)
and says what was skipped and why.

Both kinds end the same way: :func:`prepare_choice` returns a registered model with its
artifacts, reusing what the workspace already holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_widgets.engine.models.catalog import get_spec, list_specs
from accel_widgets.engine.models.known_files import SAMPLE_PREPROCESSING
from accel_widgets.engine.models.labels import weights_dirs
from accel_widgets.engine.models.sample_model import SAMPLE_FILE, download_sample, how_to_get
from accel_widgets.engine.store.workspace import ArtifactRecord, ModelRecord, Workspace
from accel_widgets.engine.walk.prepare import prepare_model, prepare_onnx
from accel_widgets.errors import CatalogError, WeightsError
from accel_widgets.progress import CancelToken, Progress, Reporter

SAMPLE_NAME = "squeezenet"
WEIGHTS = ("imagenet", "random", "file")
#: Preselected when the sample is absent: the smallest float catalog model (32 MB).
FALLBACK_MODEL = "densenet121"
#: Where Keras downloads ImageNet weights from (checked with one short connection).
KERAS_WEIGHTS_HOST = ("storage.googleapis.com", 443)


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the walk's model list.

    ``kind`` is ``"sample"`` (a real pretrained ONNX file, registered as is), ``"catalog"``
    (built with TensorFlow and converted) or ``"onnx"`` (a file the user brings).
    """

    key: str
    title: str
    kind: str
    input_size: int
    file_mb: float
    latency_ms: float | None
    quantized: bool
    path: Path | None = None
    register_options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """One line for a drop-down: name, size and expected latency on this machine."""
        latency = f", ~{self.latency_ms:.0f} ms" if self.latency_ms else ""
        return f"{self.title} ({self.file_mb:.0f} MB{latency})"


def sample_model_path() -> Path | None:
    """The shared SqueezeNet file, or None when no weights folder holds it."""
    return next((d / SAMPLE_FILE for d in weights_dirs() if (d / SAMPLE_FILE).is_file()), None)


def _sample_choice(path: Path) -> ModelChoice:
    return ModelChoice(
        key=SAMPLE_NAME,
        title="SqueezeNet 1.1 sample, real ImageNet weights",
        kind="sample",
        input_size=224,
        file_mb=round(path.stat().st_size / 2**20, 1),
        latency_ms=4.0,  # measured here: 3.9 ms p50, ONNX Runtime, 2 cores, batch 1
        quantized=False,
        path=path,
        # BGR pixels 0..255 minus the Caffe mean, softmax already applied (known_files.py).
        register_options={"preprocessing": SAMPLE_PREPROCESSING, "labels": "imagenet"},
    )


def model_choices() -> list[ModelChoice]:
    """The sample model (when its file is found) first, then every ready catalog model."""
    choices = []
    if (path := sample_model_path()) is not None:
        choices.append(_sample_choice(path))
    for spec in list_specs():
        if not spec.graph_ready:
            continue
        choices.append(
            ModelChoice(
                key=spec.name,
                title=spec.title,
                kind="catalog",
                input_size=spec.input_size,
                file_mb=spec.file_mb,
                latency_ms=spec.expected_latency_ms,
                quantized=spec.quantized,
            )
        )
    return choices


def get_choice(key: str) -> ModelChoice:
    """A choice by key; a path to an ``.onnx`` file is a bring-your-own choice.

    Raises
    ------
    CatalogError
        For an unknown key; the message lists the choices.
    WeightsError
        For the sample model when the shared weights folder does not hold it.
    """
    key = str(key).strip()
    if key.lower().endswith(".onnx"):
        path = Path(key).expanduser()
        if not path.is_file():
            raise WeightsError(f"no ONNX file at {path}; check the path and try again")
        return ModelChoice(
            key=path.stem.lower().replace("_", "-").replace(".", "-"),
            title=f"your model {path.name}",
            kind="onnx",
            input_size=0,
            file_mb=round(path.stat().st_size / 2**20, 1),
            latency_ms=None,
            quantized=False,
            path=path,
        )
    for choice in model_choices():
        if choice.key == key.lower():
            return choice
    if key.lower() == SAMPLE_NAME:
        raise WeightsError(
            f"the sample model {SAMPLE_FILE} was not found; looked in "
            + ", ".join(str(d) for d in weights_dirs())
            + f". {how_to_get()}, set ACCEL_WIDGETS_WEIGHTS_DIR to the folder that holds it, "
            "or pick a catalog model"
        )
    try:
        spec = get_spec(key)
    except CatalogError:
        known = ", ".join(c.key for c in model_choices())
        raise CatalogError(
            f"unknown model {key!r}; choose one of: {known}, or give the path of an .onnx file"
        ) from None
    raise CatalogError(f"{spec.title} is listed but cannot be built yet: {spec.notes}")


@dataclass(frozen=True)
class Preselection:
    """What the walk preselects: a choice key, its weights, and what was skipped and why.

    ``note`` is empty when the requested model is used as asked; otherwise it is one or two
    sentences for the model step (and a notebook's output). ``sample_missing`` says whether
    to offer "Get the sample" (:func:`download_sample`, with progress).
    """

    key: str
    weights: str
    note: str = ""
    sample_missing: bool = False


def imagenet_weights_available(model: str, *, timeout: float = 1.5) -> bool:
    """Whether ImageNet weights for a catalog model can be had here: the file is in the Keras
    cache, or (unless ``ACCEL_WIDGETS_OFFLINE`` is set) Keras' download host answers."""
    from accel_widgets.engine.models.build import OFFLINE_ENV, keras_cache_dir

    spec = get_spec(model)
    if spec.keras_weights_file is None:
        return False
    if (keras_cache_dir() / spec.keras_weights_file).is_file():
        return True
    if os.environ.get(OFFLINE_ENV):
        return False
    return _reachable(KERAS_WEIGHTS_HOST, timeout)


def _reachable(address: tuple[str, int], timeout: float) -> bool:
    import socket

    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def get_sample(
    *, progress: Progress | Reporter | None = None, cancel: CancelToken | None = None
) -> ModelChoice:
    """Download the sample (with progress, checksum verified) and return its choice: what the
    model step's "Get the sample" button runs. Raises ``WeightsError`` offline, saying how to
    get the file by hand."""
    download_sample(progress=progress, cancel=cancel)
    path = sample_model_path()
    if path is None:  # downloaded into a folder the lookup does not read
        raise WeightsError(
            "the sample was downloaded but is not found in "
            + ", ".join(str(d) for d in weights_dirs())
        )
    return _sample_choice(path)


RANDOM_MEANING = (
    "random weights: every step is real (build, convert to ONNX, deploy, score over gRPC) "
    "but the classes it answers are meaningless"
)


def preselect(model: str | None = SAMPLE_NAME) -> Preselection:
    """What the walk should preselect for ``model`` on this machine, and why.

    The sample when its file is found; otherwise :data:`FALLBACK_MODEL` instead of a broken
    path. A catalog model gets ImageNet weights when they can be had here (in the Keras cache
    or downloadable), random weights when not, with a note saying what that means. A path or
    an unknown name is passed through (the model step reports it).
    """
    key = (model or SAMPLE_NAME).strip()
    note = ""
    sample_missing = sample_model_path() is None
    if key.lower() == SAMPLE_NAME:
        if not sample_missing:
            return Preselection(SAMPLE_NAME, "imagenet")
        key = FALLBACK_MODEL
        note = (
            f"The SqueezeNet sample ({SAMPLE_FILE}) is not on this machine (looked in "
            + ", ".join(str(d) for d in weights_dirs())
            + f"). {how_to_get()}. Meanwhile the walk uses {get_spec(key).title}"
        )
    elif key.lower() not in {s.name for s in list_specs() if s.graph_ready}:
        return Preselection(key, "imagenet", "", sample_missing)
    key = key.lower()
    if imagenet_weights_available(key):
        weights = "imagenet"
        note += " with ImageNet weights (Keras downloads them once)." if note else ""
    else:
        weights = "random"
        text = (
            f"ImageNet weights for {get_spec(key).title} cannot be had here (offline, and "
            f"not in the Keras cache), so it uses {RANDOM_MEANING}."
        )
        note = f"{note} with {RANDOM_MEANING}." if note else text
    return Preselection(key, weights, note.strip(), sample_missing)


def prepare_choice(
    choice: ModelChoice,
    *,
    weights: str | os.PathLike[str] = "imagenet",
    quantize: str | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> tuple[ModelRecord, list[ArtifactRecord], bool]:
    """Get ``choice`` registered and converted, reusing an earlier run's work.

    ``weights`` only matters for catalog models (``"imagenet"``, ``"random"`` or a weights
    file path). Returns ``(model, artifacts, reused)``.
    """
    workspace = workspace or Workspace()
    if choice.kind == "catalog":
        return prepare_model(
            choice.key,
            weights=str(weights),
            quantize=quantize,
            workspace=workspace,
            progress=progress,
            cancel=cancel,
        )
    assert choice.path is not None
    return prepare_onnx(
        choice.path,
        choice.key,
        quantize=quantize,
        workspace=workspace,
        progress=progress,
        cancel=cancel,
        **choice.register_options,
    )
