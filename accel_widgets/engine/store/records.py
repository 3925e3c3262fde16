"""What the workspace hands to every step: the records of models, artifacts, images, services.

They travel down the walk (the Convert step hands the Deploy step a :class:`ModelRecord`, the
Package step an :class:`ArtifactRecord`...) instead of names that each level would look up
again, so they live apart from the SQLite code that reads and writes them
(:mod:`accel_widgets.engine.store.workspace`), with the one naming rule every name obeys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_widgets.errors import InvalidNameError

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def check_name(name: str, what: str = "model") -> str:
    """Names are lowercase, start with a letter, and use only ``a-z 0-9 _ -`` (as Azure did).

    They become folder names, gRPC route segments and Kubernetes object names, so the rule
    is checked once here with an error that shows a valid spelling.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        suggestion = re.sub(r"[^a-z0-9_-]+", "-", str(name).lower()).strip("-_") or "my-model"
        if not suggestion[0].isalpha():
            suggestion = f"m-{suggestion}"
        raise InvalidNameError(
            f"{what} name {name!r} is not allowed: use 1-63 lowercase letters, digits, '-' "
            f"or '_', starting with a letter (for example {suggestion[:63]!r})"
        )
    return name


@dataclass(frozen=True)
class ModelRecord:
    """A registered model version: a SavedModel, an ONNX file, or a catalog build."""

    id: int
    name: str
    version: int
    kind: str
    description: str
    tags: dict[str, str]
    spec: dict[str, Any]
    path: Path
    created_at: float

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ArtifactRecord:
    """A converted model file (ONNX, fp32 or int8) with its validation report."""

    id: int
    model_id: int
    model_name: str
    model_version: int
    precision: str
    format: str
    path: Path
    size_bytes: int
    report: dict[str, Any]
    created_at: float

    @property
    def file(self) -> Path:
        return self.path / "model.onnx"


@dataclass(frozen=True)
class ImageRecord:
    """A packaged container image (or build context) holding one artifact."""

    id: int
    name: str
    version: int
    artifact_id: int
    path: Path
    info: dict[str, Any]
    created_at: float

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def tag(self) -> str | None:
        """The engine's name for the image (``accel-widgets/resnet50:1``), once built."""
        return self.info.get("tag")


@dataclass(frozen=True)
class ServiceRecord:
    """A deployed service: where it listens, its process or cluster object, and its key.

    ``key`` is read from the service's key file (``services/<name>/keys``) when the record
    is read, so only a process of the workspace's owner gets it; ``key_hash`` is what the
    catalog keeps.
    """

    id: int
    name: str
    artifact_id: int
    image_id: int | None
    target: str
    address: str
    port: int | None
    pid: int | None
    key: str | None
    state: str
    log_path: Path | None
    info: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    key_hash: str | None = None

    @property
    def use_ssl(self) -> bool:
        return bool(self.info.get("tls"))


def default_order(artifact: ArtifactRecord) -> tuple[int, int]:
    """Sort key of the artifact deploy and package take when no precision is given: a
    recommended INT8 first (the fastest that passed, engine/checks/verdicts.py), then fp32, fp16,
    and an INT8 that was not recommended last (taken by default only when it is all a model
    has: a model registered as INT8)."""
    from accel_widgets.engine.checks.verdicts import recommended

    order = {"int8": 0, "fp32": 1, "fp16": 2}.get(artifact.precision, 9)
    return (0 if recommended(artifact.report, artifact.precision) else 1, order)
