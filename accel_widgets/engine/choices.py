"""What the walk can deploy: the catalog plus the real pretrained sample model, as one list.

The catalog models need ImageNet weights from the Keras download (or a file) to give
meaningful labels; a workshop room that is offline would only ever see random weights. The
shared weights folder holds a small real pretrained classifier (SqueezeNet 1.1), so the walk
offers it as the first choice whenever it is there: a new user gets from the first click to
"Egyptian cat" on a real photo without an account or a download.

Both kinds end the same way: :func:`prepare_choice` returns a registered model with its
artifacts, reusing what the workspace already holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_widgets.engine.catalog import get_spec, list_specs
from accel_widgets.engine.labels import weights_dirs
from accel_widgets.engine.prepare import prepare_model, prepare_onnx
from accel_widgets.engine.workspace import ArtifactRecord, ModelRecord, Workspace
from accel_widgets.errors import CatalogError, WeightsError
from accel_widgets.progress import CancelToken, Progress, Reporter

SAMPLE_NAME = "squeezenet"
SAMPLE_FILE = "SqueezeNet_fp16.onnx"
WEIGHTS = ("imagenet", "random", "file")


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
        # SOURCES.md: Caffe2 export, BGR pixels 0..255, softmax already applied.
        register_options={"preprocessing": {"channel_order": "BGR"}, "labels": "imagenet"},
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
            + ". Set ACCEL_WIDGETS_WEIGHTS_DIR to the folder that holds it, or pick a "
            "catalog model"
        )
    try:
        spec = get_spec(key)
    except CatalogError:
        known = ", ".join(c.key for c in model_choices())
        raise CatalogError(
            f"unknown model {key!r}; choose one of: {known}, or give the path of an .onnx file"
        ) from None
    raise CatalogError(f"{spec.title} is listed but cannot be built yet: {spec.notes}")


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
