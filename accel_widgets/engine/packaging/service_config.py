"""What a serving process needs to know about a workspace artifact, as a server config.

One place turns the workspace's view (model spec, artifact report, tensor names, labels)
into :class:`~accel_widgets.serving.config.ServerConfig`, so the local target, container
images and tests all serve a model the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from accel_widgets.engine.models.labels import labels_path
from accel_widgets.engine.store.workspace import ArtifactRecord, Workspace
from accel_widgets.preprocess import Preprocessing
from accel_widgets.serving.config import ModelConfig, OutputConfig, ServerConfig, TlsConfig

#: What the converter names the ONNX graph's input and output (convert_worker.py).
CONVERTED_INPUT = "pixels"
CONVERTED_OUTPUT = "output_alias"


def model_config_for(workspace: Workspace, artifact: ArtifactRecord) -> ModelConfig:
    """The server's view of one artifact: file, pixels it takes, names clients may use."""
    model = workspace.get_model(artifact.model_name, artifact.model_version)
    spec = model.spec
    tensors = spec.get("tensors", {})
    onnx_names = spec.get("onnx", {})
    onnx_input = onnx_names.get("input", CONVERTED_INPUT)
    onnx_output = onnx_names.get("output", CONVERTED_OUTPUT)
    pre = artifact.report.get("preprocessing") or spec["preprocessing"]["server"]
    input_names = [tensors.get("legacy_input"), tensors.get("input_tensor"), onnx_input]
    output_names = [*tensors.get("legacy_outputs", []), tensors.get("output_tensor")]
    labels = spec.get("labels")
    outputs = (
        OutputConfig(
            alias=tensors.get("output_alias", "output_alias"),
            onnx_output=onnx_output,
            names=tuple(dict.fromkeys(n for n in output_names if n and n != "output_alias")),
            postprocess=spec.get("postprocess", "flatten"),
        ),
    )
    if spec.get("outputs"):  # several outputs (a detector: engine/models/ssd.py output_configs)
        outputs = tuple(
            OutputConfig(
                alias=o["alias"],
                onnx_output=o["onnx_output"],
                names=tuple(o.get("names", ())),
                postprocess=o.get("postprocess", "none"),
            )
            for o in spec["outputs"]
        )
    return ModelConfig(
        name=model.name,
        onnx=artifact.file,
        version=model.version,
        precision=artifact.precision,
        preprocessing=Preprocessing.from_dict(dict(pre)),
        input_alias=tensors.get("input_alias", "images"),
        input_names=tuple(dict.fromkeys(n for n in input_names if n and n != "images")),
        outputs=outputs,
        labels=labels_path(labels) if labels else None,
        bf16=bf16_validated(artifact.report),
    )


def bf16_validated(report: dict) -> bool:
    """Whether the artifact's validation allowed OpenVINO to compute it in bf16
    (engine/conversion/bf16_check.py: within half a point of f32 on labelled photos, or the same
    top 1 on every photo). The server lets OpenVINO compute in bf16 only then
    (serving/openvino_runtime.py). No entry: f32. A report from before the decision was
    stored has the per-photo agreement only, and is read by that rule.
    """
    check = report.get("bf16") or {}
    if "allowed" in check:
        return bool(check["allowed"]) and check.get("n_images", 0) > 0
    return check.get("top1_agreement") == 1.0 and check.get("n_images", 0) > 0


def server_config_for(
    workspace: Workspace,
    artifact: ArtifactRecord,
    service_name: str,
    *,
    keys_file: str | os.PathLike[str] | None = None,
    tls: tuple[str, str] | None = None,
) -> ServerConfig:
    """A one-model server config for ``artifact`` (the model answers to an empty name too)."""
    model = model_config_for(workspace, artifact)
    return ServerConfig(
        models=(model,),
        default_model=model.name,
        api_keys_file=Path(keys_file) if keys_file else None,
        tls=TlsConfig(Path(tls[0]), Path(tls[1])) if tls else None,
    )
