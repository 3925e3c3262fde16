"""Score one picture with a deployed service: the top classes, named, and the latency.

The command line and the Score widget show the same thing, so both call this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from accel_widgets.engine.clients.grpc_client import ImageLike, PredictionClient
from accel_widgets.engine.models.labels import load_labels, top_k
from accel_widgets.engine.store.workspace import ServiceRecord, Workspace


@dataclass(frozen=True)
class ScoreResult:
    """``top``: ``(class index, label, score)`` best first; ``latency_ms``: the whole call."""

    top: list[tuple[int, str, float]]
    latency_ms: float


def service_labels(service: ServiceRecord, workspace: Workspace | None = None) -> list[str] | None:
    """The label list of the model a service serves (None when it was registered without)."""
    workspace = workspace or Workspace()
    artifact = workspace.get_artifact_by_id(service.artifact_id)
    model = workspace.get_model(artifact.model_name, artifact.model_version)
    name = model.spec.get("labels")
    return load_labels(name) if name else None


def score(
    client: PredictionClient,
    image: ImageLike,
    labels: list[str] | None = None,
    k: int = 5,
) -> ScoreResult:
    """Score ``image`` once, timing the call as the client sees it (network included)."""
    started = time.perf_counter()
    scores = client.score_image(image)
    latency_ms = (time.perf_counter() - started) * 1000
    return ScoreResult(top_k(scores, labels, k=k), latency_ms)
