"""How right a model is: top-1 / top-5 accuracy on labelled photos, in process or served.

``evaluate`` scores every labelled photo of a folder (:mod:`~accel_widgets.engine.checks.labelled`)
with one artifact, either **in this process**, through the serving code itself
(:class:`~accel_widgets.serving.model.LoadedModel`: the same decoding, preprocessing, runtime
and post-processing a service runs, only without the network), or **through a running
service** with the scoring client, which proves what its users get. It reports the accuracy
with its 95 % interval and photo count, each photo's answer, the photos it could not score
(and why), and the p50 latency of the calls it made.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from accel_widgets.engine.checks.accuracy import accuracy
from accel_widgets.engine.checks.labelled import (
    LabelledSet,
    Skipped,
    read_labelled,
    shared_imagenet_photos,
)
from accel_widgets.engine.store.workspace import ArtifactRecord, Workspace
from accel_widgets.errors import AccelError, ImageError, ScoringError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate`: accuracy on the photos that could be scored."""

    model: str
    precision: str
    where: str
    photos: str
    top1: float
    top5: float
    top1_ci95: tuple[float, float]
    top5_ci95: tuple[float, float]
    n: int
    p50_ms: float
    skipped: list[Skipped] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labelled(
    workspace: Workspace, artifact: ArtifactRecord, photos: str | os.PathLike[str] | None
) -> LabelledSet:
    """The labelled photos to score: the folder given, else the shared ImageNet photos for
    an ImageNet classifier."""
    from accel_widgets.engine.checks.check_photos import class_names_of

    model = workspace.get_model(artifact.model_name, artifact.model_version)
    if model.spec.get("task") == "detection":
        raise AccelError(
            f"{model.ref} is a detector; evaluate measures classifiers (top-1 / top-5 on "
            "labelled photos)"
        )
    if photos is None and model.spec.get("labels") == "imagenet":
        photos = shared_imagenet_photos()
    if photos is None:
        raise AccelError(
            f"no labelled photos given for {model.ref}: give a folder with one sub-folder "
            "per class (named by index or label), or ImageNet photos named WNID_*.JPEG"
        )
    return read_labelled(photos, class_names_of(model))


def evaluate(
    model: str | None = None,
    *,
    version: int | None = None,
    precision: str | None = None,
    photos: str | os.PathLike[str] | None = None,
    service: str | None = None,
    runtime: str = "onnxruntime",
    limit: int | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> Evaluation:
    """Top-1 / top-5 accuracy of a model's artifact on labelled photos.

    Parameters
    ----------
    model, version, precision:
        The workspace model and artifact (default: the one deploy would serve). Not needed
        with ``service``.
    photos:
        A labelled folder; default: the shared labelled ImageNet photos, for an ImageNet
        classifier.
    service:
        Score through this running service instead of in this process.
    runtime:
        In process: ``"onnxruntime"``, ``"openvino"`` or ``"auto"`` (as a server would).
    limit:
        Score only the first ``limit`` photos (in name order).

    Raises
    ------
    AccelError
        For a missing or unlabelled folder, an unknown model or service, a detector, or a
        folder none of whose photos could be scored.
    """
    report = as_reporter(progress, cancel)
    workspace = workspace or Workspace()
    if service is not None:
        record = workspace.get_service(service)
        artifact = workspace.get_artifact_by_id(record.artifact_id)
    elif model is None:
        raise AccelError("name a model, or a service to evaluate through")
    else:
        artifact = workspace.get_artifact(model, version, precision)
    labelled = _labelled(workspace, artifact, photos)
    chosen = labelled.photos[:limit] if limit else labelled.photos
    if service is not None:
        score, where, close = _served(record)
    else:
        score, where, close = _in_process(workspace, artifact, runtime)
    outputs, truth, names, timings = [], [], [], []
    skipped = list(labelled.skipped)
    report("evaluate", 0.0, f"scoring {len(chosen)} labelled photos {where}")
    try:
        for i, photo in enumerate(chosen):
            report.check()
            data = photo.data
            started = time.perf_counter()
            try:
                scores = score(data)
            except ImageError as exc:
                skipped.append(Skipped(photo.name, str(exc)))
                continue
            except ScoringError as exc:
                if exc.code != "INVALID_ARGUMENT":
                    raise
                skipped.append(Skipped(photo.name, f"the service refused it: {exc.details}"))
                continue
            timings.append((time.perf_counter() - started) * 1000)
            outputs.append(np.asarray(scores, np.float64).reshape(-1))
            truth.append(photo.label)
            names.append(photo.name)
            if i % 25 == 24 or i == len(chosen) - 1:
                report("evaluate", (i + 1) / len(chosen), f"photo {i + 1}/{len(chosen)}")
    finally:
        close()
    if not outputs:
        raise AccelError(
            f"none of the {len(chosen)} labelled photos in {labelled.folder} could be scored; "
            f"first problem: {skipped[-1].name}: {skipped[-1].reason}"
            if skipped
            else f"no labelled photos to score in {labelled.folder}"
        )
    acc = accuracy(outputs, truth)
    result = Evaluation(
        model=f"{artifact.model_name}:{artifact.model_version}",
        precision=artifact.precision,
        where=where,
        photos=f"{labelled.folder} ({labelled.layout})",
        top1=acc["top1"],
        top5=acc["top5"],
        top1_ci95=acc["top1_ci95"],
        top5_ci95=acc["top5_ci95"],
        n=acc["n"],
        p50_ms=round(float(np.median(timings)), 2),
        skipped=skipped,
        predicted=acc["predicted"],
        labels=truth,
        names=names,
    )
    report(
        "evaluate",
        1.0,
        f"top-1 {result.top1:.3f}, top-5 {result.top5:.3f} on {result.n} photos"
        + (f" ({len(skipped)} skipped)" if skipped else ""),
    )
    return result


Scorer = Callable[[bytes], Any]


def _in_process(
    workspace: Workspace, artifact: ArtifactRecord, runtime: str
) -> tuple[Scorer, str, Callable[[], None]]:
    """Score with the serving code in this process: what a service computes, minus the wire."""
    from accel_widgets.engine.packaging.service_config import model_config_for
    from accel_widgets.preprocess import MAX_PIXELS
    from accel_widgets.serving.model import LoadedModel
    from accel_widgets.serving.status import RequestError

    config = model_config_for(workspace, artifact)
    loaded = LoadedModel.load(
        config, threads=None, max_pixels=MAX_PIXELS, max_batch=1, runtime_name=runtime
    )
    chosen = loaded.runtime_info.runtime if loaded.runtime_info else runtime

    def score(data: bytes) -> np.ndarray:
        try:
            return next(iter(loaded.predict(config.input_alias, [data], []).values()))
        except RequestError as exc:  # the server's refusal of a bad picture, in its words
            raise ImageError(exc.message) from None

    return score, f"in process ({chosen})", loaded.close


def _served(record: Any) -> tuple[Scorer, str, Callable[[], None]]:
    """Score through the running service with the client its users would use."""
    from accel_widgets.engine.clients.grpc_client import client_from_service

    client = client_from_service(record)
    client.__enter__()

    def close() -> None:
        client.__exit__(None, None, None)

    return client.score_image, f"through service {record.name}", close
