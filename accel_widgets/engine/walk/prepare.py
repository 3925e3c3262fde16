"""Get a model to "converted" once: reuse what the workspace already holds.

A workshop re-runs its notebook many times. Building and converting ResNet-50 again each time
would cost a minute and add a new version every run, so the walk asks here first: is there
already a version of this catalog model, with these weights, that has the artifacts we
need? Only when there is not does it build and convert.
"""

from __future__ import annotations

import os
from pathlib import Path

from accel_widgets.engine.conversion.convert import convert, quantize_model
from accel_widgets.engine.models.build import build_model
from accel_widgets.engine.models.catalog import get_spec, quantize_for
from accel_widgets.engine.models.register import register_onnx
from accel_widgets.engine.store.workspace import ArtifactRecord, ModelRecord, Workspace, check_name
from accel_widgets.preprocess import Preprocessing
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter


def _has(workspace: Workspace, model: ModelRecord, precisions: set[str]) -> bool:
    have = {a.precision for a in workspace.list_artifacts(model)}
    return precisions <= have


def find_converted(
    workspace: Workspace, name: str, *, weights: str, quantize: str | None
) -> ModelRecord | None:
    """The newest version of ``name`` built with ``weights`` that has the wanted artifacts."""
    wanted = {"fp32", "int8"} if quantize == "int8" else {"fp32"}
    for model in reversed(workspace.list_models(name)):
        built_alike = model.kind == "catalog" and model.tags.get("weights") == str(weights)
        if built_alike and _has(workspace, model, wanted):
            return model
    return None


def prepare_model(
    model: str,
    *,
    weights: str = "imagenet",
    quantize: str | None = None,
    name: str | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> tuple[ModelRecord, list[ArtifactRecord], bool]:
    """Build and convert a catalog model unless the workspace already has it converted.

    Returns
    -------
    (model, artifacts, reused)
        ``reused`` is True when nothing had to be built.
    """
    report = as_reporter(progress, cancel)
    spec = get_spec(model)
    quantize = quantize_for(spec, quantize)
    name = check_name(spec.base_name if name is None else name)
    workspace = workspace or Workspace()
    found = find_converted(workspace, name, weights=weights, quantize=quantize)
    if found is not None:
        report("register", 1.0, f"{found.ref} is already converted; reusing it")
        return found, workspace.list_artifacts(found), True
    record = build_model(spec, weights=weights, name=name, workspace=workspace, progress=report)
    artifacts = convert(record, quantize=quantize, workspace=workspace, progress=report)
    return record, artifacts, False


def prepare_onnx(
    path: str | os.PathLike[str],
    name: str,
    *,
    quantize: str | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
    **register_options,
) -> tuple[ModelRecord, list[ArtifactRecord], bool]:
    """Register an ONNX file (and quantize it) unless the same file is registered already.

    "The same file" means the same resolved path with the same size and modification time,
    registered with the same preprocessing (a registration with other pixels, such as the
    sample's before its Caffe mean was known, is registered again as a new version).
    """
    report = as_reporter(progress, cancel)
    workspace = workspace or Workspace()
    source = Path(path).expanduser().resolve()
    stamp = f"{source.stat().st_size}:{int(source.stat().st_mtime)}" if source.is_file() else ""
    wanted = register_options.get("preprocessing")
    for model in reversed(workspace.list_models(name)):
        same = model.spec.get("source") == str(source) and model.tags.get("stamp") == stamp
        if wanted is not None:
            registered = model.spec.get("preprocessing", {}).get("server", {})
            same = same and all(
                registered.get(k) == v
                for k, v in Preprocessing.from_dict({**registered, **wanted}).to_dict().items()
            )
        if same and (quantize != "int8" or _has(workspace, model, {"int8"})):
            report("register", 1.0, f"{model.ref} is already registered; reusing it")
            return model, workspace.list_artifacts(model), True
    record = register_onnx(
        source,
        name,
        workspace=workspace,
        progress=report,
        tags={"stamp": stamp},
        **register_options,
    )
    if quantize == "int8":
        quantize_model(record, workspace=workspace, progress=report)
    return record, workspace.list_artifacts(record), False
