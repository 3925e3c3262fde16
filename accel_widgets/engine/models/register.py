"""Bring your own model: an ONNX file, a Keras model or a SavedModel folder.

The original service took catalog models only; this module takes a user's own model and gives
it the same treatment as a catalog model: a workspace entry with its preprocessing, its tensor
names and labels, ready to convert (Keras, SavedModel) or to deploy as it is (ONNX).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from accel_widgets.engine.checks.labelled import read_labelled, shared_imagenet_photos
from accel_widgets.engine.models.build import make_serving_module, save_network, save_serving_module
from accel_widgets.engine.models.catalog import LEGACY_INPUT
from accel_widgets.engine.models.known_files import known_file
from accel_widgets.engine.store.workspace import ModelRecord, Workspace, check_name
from accel_widgets.errors import BuildError, ConversionError
from accel_widgets.preprocess import Preprocessing, prepare
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

_ONNX_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}
POSTPROCESS = ("none", "flatten", "softmax")


def _as_preprocessing(value: Preprocessing | dict[str, Any] | None, **inferred: Any):
    if isinstance(value, Preprocessing):
        return value
    try:
        return Preprocessing.from_dict({**inferred, **(value or {})})
    except ValueError as exc:
        raise BuildError(f"bad preprocessing: {exc}") from exc


def _onnx_facts(path: Path) -> dict[str, Any]:
    """Load and check an ONNX file: its input/output names, shapes and element types."""
    import onnx

    from accel_widgets.engine.conversion.validate import onnx_session

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        raise ConversionError(
            f"{path} is not a valid ONNX model ({type(exc).__name__}: {str(exc)[:300]}). "
            "Export it again, or check that the download or copy finished."
        ) from exc
    session = onnx_session(path)
    ops = {node.op_type for node in model.graph.node}
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ConversionError(
            f"{path.name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
            "an image model served here takes exactly one image tensor"
        )
    return {
        "input": inputs[0].name,
        "input_shape": list(inputs[0].shape),
        "input_type": inputs[0].type,
        "outputs": [o.name for o in session.get_outputs()],
        "quantized": bool(ops & {"QLinearConv", "QuantizeLinear", "ConvInteger", "QLinearMatMul"}),
        "opset": max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0
        ),
    }


def _infer_layout(shape: list[Any]) -> dict[str, Any]:
    """Guess layout and size from an image input shape such as [1, 3, 224, 224]."""
    dims = [d if isinstance(d, int) else None for d in shape]
    if len(dims) == 4 and dims[1] == 3 and dims[2] and dims[2] == dims[3]:
        return {"layout": "NCHW", "size": dims[2], "short_side": max(256, dims[2])}
    if len(dims) == 4 and dims[3] == 3 and dims[1] and dims[1] == dims[2]:
        return {"layout": "NHWC", "size": dims[1], "short_side": max(256, dims[1])}
    raise ConversionError(
        f"the model's input shape {shape} is not a square RGB image batch "
        "([N, 3, H, W] or [N, H, W, 3]); give preprocessing=... explicitly"
    )


def register_onnx(
    path: str | os.PathLike[str],
    name: str,
    *,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    labels: str | None = "imagenet",
    output: str | None = None,
    postprocess: str = "flatten",
    description: str = "",
    tags: dict[str, str] | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> ModelRecord:
    """Register an ONNX classifier as it is: it can be deployed (and quantized) at once.

    Parameters
    ----------
    preprocessing:
        How the model wants its pixels. Layout, size and dtype are read from the model; give
        channel order, scale, mean and std, or a preset (``{"preset": "caffe"}``,
        ``"torch"``, ``"tf"``: :data:`accel_widgets.preprocess.PRESETS`). A file the kit
        recognises by its sha256 (the SqueezeNet sample, the model zoo's MobileNetV2 INT8:
        :mod:`~accel_widgets.engine.models.known_files`) gets the preprocessing it was trained
        with when none is given.
    output:
        The output to serve; default: the first.
    postprocess:
        ``"flatten"`` (scores as they are), ``"softmax"`` (the model outputs logits) or ``"none"``.
    """
    report = as_reporter(progress, cancel)
    check_name(name)
    source = Path(path).expanduser()
    if not source.is_file():
        raise ConversionError(f"no ONNX file at {source}; check the path")
    if postprocess not in POSTPROCESS:
        raise BuildError(f"postprocess {postprocess!r} unknown; use one of {POSTPROCESS}")
    workspace = workspace or Workspace()
    report("register", 0.1, f"checking {source.name}")
    facts = _onnx_facts(source)
    if preprocessing is None and (known := known_file(source)) is not None:
        preprocessing = known.preprocessing
        report("register", 0.15, f"recognised {known.title}: pixels as in {known.source}")
    dtype = _ONNX_DTYPES.get(facts["input_type"])
    if dtype is None:
        raise ConversionError(
            f"input {facts['input']!r} has type {facts['input_type']}; image models here take "
            f"float32, float16 or uint8 ({', '.join(_ONNX_DTYPES)})"
        )
    pre = _as_preprocessing(preprocessing, dtype=dtype, **_infer_layout(facts["input_shape"]))
    output = output or facts["outputs"][0]
    if output not in facts["outputs"]:
        raise ConversionError(
            f"{source.name} has no output {output!r}; its outputs are {', '.join(facts['outputs'])}"
        )
    precision = "int8" if facts["quantized"] else ("fp16" if dtype == "float16" else "fp32")
    spec = {
        "format": "onnx",
        "preprocessing": {"server": pre.to_dict()},
        "tensors": {
            "input_alias": "images",
            "output_alias": "output_alias",
            "input_tensor": facts["input"],
            "output_tensor": output,
            "legacy_input": LEGACY_INPUT,
            "legacy_outputs": [],
        },
        "onnx": {"input": facts["input"], "output": output, "opset": facts["opset"]},
        "postprocess": postprocess,
        "labels": labels,
        "source": str(source),
    }
    report.check()
    with workspace.staging(min_free_bytes=source.stat().st_size * 2) as staged:
        (staged / "model.json").write_text(json.dumps(spec, indent=2))
        record = workspace.register_model(
            name,
            staged,
            kind="onnx",
            description=description or f"ONNX model from {source.name}",
            tags={"format": "onnx", **(tags or {})},
            spec=spec,
        )
    report("register", 0.5, f"registered {record.ref}; checking it on real photos")
    artifact_report = _check_onnx(
        source, pre, facts["input"], output, postprocess, report, labels=labels
    )
    artifact_report["precision"] = precision
    artifact_report["preprocessing"] = pre.to_dict()
    with workspace.staging() as staged:
        shutil.copyfile(source, staged / "model.onnx")
        (staged / "report.json").write_text(json.dumps(artifact_report, indent=2))
        workspace.add_artifact(record, staged, precision=precision, report=artifact_report)
    report("register", 1.0, f"{record.ref} ready to deploy ({precision})")
    return record


def _check_onnx(
    path: Path,
    pre: Preprocessing,
    input_name: str,
    output: str,
    postprocess: str,
    report,
    *,
    labels: str | None = None,
) -> dict[str, Any]:
    """Run the model on the bundled photos (what it answers, for a look) and, for an
    ImageNet classifier where the shared labelled photos are found, measure its accuracy."""
    from accel_widgets.engine.checks.accuracy import accuracy, accuracy_text
    from accel_widgets.engine.checks.samples import sample_photos
    from accel_widgets.engine.clients.timing import measure_interleaved
    from accel_widgets.engine.conversion.validate import file_mb, onnx_session, photo_inputs

    session = onnx_session(path)

    def scores(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([output], {input_name: x})[0]).reshape(-1)

    photos = sample_photos()
    predictions = [int(scores(x).argmax()) for x in photo_inputs(photos, pre)]
    x = photo_inputs(photos[:1], pre)[0]
    timing = measure_interleaved({"onnxruntime": lambda: session.run([output], {input_name: x})})
    report("register", 0.8, f"ONNX Runtime {timing['onnxruntime']['p50_ms']:.1f} ms p50")
    checked: dict[str, Any] = {
        "format": "onnx",
        "size_mb": file_mb(path),
        "photos": [p.name for p in photos],
        "predictions": predictions,
        "latency": timing,
        "postprocess": postprocess,
    }
    if labels == "imagenet" and (folder := shared_imagenet_photos()) is not None:
        labelled = read_labelled(folder)
        outputs, truth = [], []
        for i, photo in enumerate(labelled.photos):
            report.check()
            outputs.append(scores(prepare(photo.data, pre)))
            truth.append(photo.label)
            if i % 50 == 49:
                report("register", 0.8 + 0.2 * i / len(labelled), f"photo {i + 1}/{len(labelled)}")
        checked["accuracy"] = accuracy(
            outputs, truth, photos=f"the shared labelled ImageNet photos ({folder})"
        )
        report("register", 0.99, accuracy_text(checked["accuracy"]))
    return checked


def register_keras(
    model: Any,
    name: str,
    *,
    preprocessing: dict[str, Any] | None = None,
    labels: str | None = "imagenet",
    description: str = "",
    tags: dict[str, str] | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> ModelRecord:
    """Register a Keras model (object, ``.keras`` or ``.h5`` path) taking ``[N, H, W, 3]`` floats.

    ``preprocessing`` may hold server keys (``size``, ``resize``, ``short_side``) and graph
    keys (``scale``, ``mean``, ``std``, ``to_bgr``) applied in the graph before the model.
    """
    report = as_reporter(progress, cancel)
    check_name(name)
    workspace = workspace or Workspace()
    import keras

    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        if not path.exists():
            raise BuildError(f"no Keras model at {path}; check the path")
        report("build", 0.1, f"loading {path.name}")
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:
            raise BuildError(f"cannot load the Keras model {path}: {exc}") from exc
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[1] != shape[2]:
        raise BuildError(
            f"the Keras model's input shape is {shape}; an image model here takes "
            "(None, H, W, 3) with H == W (add a Resizing layer or re-export it)"
        )
    pre = _split_preprocessing(preprocessing, int(shape[1]))
    report("build", 0.3, "adding JPEG decoding and preprocessing")
    module = make_serving_module(model, pre)
    return save_and_register(
        module, name, pre, labels, "keras", description, tags, workspace, report
    )


def register_saved_model(
    folder: str | os.PathLike[str],
    name: str,
    *,
    signature: str = "serving_default",
    preprocessing: dict[str, Any] | None = None,
    labels: str | None = "imagenet",
    description: str = "",
    tags: dict[str, str] | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> ModelRecord:
    """Register a SavedModel folder whose ``signature`` takes one ``[N, H, W, 3]`` float tensor.

    A signature that takes JPEG strings cannot be converted (ONNX Runtime has no
    ``DecodeJpeg``): export one that takes pixels, and the kit adds decoding back.
    """
    import tensorflow as tf

    report = as_reporter(progress, cancel)
    check_name(name)
    workspace = workspace or Workspace()
    folder = Path(folder).expanduser()
    if not (folder / "saved_model.pb").is_file():
        raise BuildError(f"{folder} is not a SavedModel folder (no saved_model.pb in it)")
    report("build", 0.1, f"loading the SavedModel {folder.name}")
    loaded = tf.saved_model.load(str(folder))
    if signature not in loaded.signatures:
        raise BuildError(
            f"the SavedModel has no signature {signature!r}; it has "
            f"{', '.join(loaded.signatures) or 'none'}"
        )
    function = loaded.signatures[signature]
    args = function.structured_input_signature[1]
    if len(args) != 1:
        raise BuildError(f"signature {signature!r} takes {len(args)} inputs; one image tensor")
    key, spec = next(iter(args.items()))
    if spec.dtype == tf.string:
        raise BuildError(
            f"signature {signature!r} takes strings (JPEG bytes) in {key!r}; ONNX Runtime cannot "
            "decode JPEG, so export a signature that takes float pixels [N, H, W, 3] and the kit "
            "will add decoding on the server"
        )
    shape = spec.shape.as_list()
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[1] != shape[2]:
        raise BuildError(f"signature input {key!r} has shape {shape}; need [N, H, W, 3], H == W")
    outputs = list(function.structured_outputs)

    def network(x, training=False):
        return function(**{key: x})[outputs[0]]

    pre = _split_preprocessing(preprocessing, int(shape[1]))
    module = make_serving_module(network, pre)
    module.original = loaded  # keep the variables tracked so they are saved again
    return save_and_register(
        module, name, pre, labels, "savedmodel", description, tags, workspace, report
    )


def _split_preprocessing(options: dict[str, Any] | None, size: int) -> dict[str, Any]:
    """A user's preprocessing dict -> what the graph does (scale, mean, std, to_bgr) and what
    the server does (the rest: size, resize, short_side...), checked."""
    options = dict(options or {})
    graph = {
        "scale": float(options.pop("scale", 1.0)),
        "mean": list(options.pop("mean", (0.0, 0.0, 0.0))),
        "std": list(options.pop("std", (1.0, 1.0, 1.0))),
        "to_bgr": bool(options.pop("to_bgr", False)),
    }
    server = _as_preprocessing(None, size=size, short_side=max(256, size), **options)
    return {"server": server.to_dict(), "graph": graph}


def save_and_register(
    module,
    name,
    pre,
    labels,
    kind,
    description,
    tags,
    workspace: Workspace,
    report: Reporter,
    network=None,
    extra=None,
) -> ModelRecord:
    """Save, then register in one staging folder. ``extra(staged)`` may write more files
    beside the model (a trained model's label file and report) and returns spec keys to add."""
    with workspace.staging() as staged:
        report("build", 0.6, "saving the SavedModel")
        names = save_serving_module(module, staged / "saved_model")
        spec = {
            "format": "savedmodel",
            "preprocessing": pre,
            "tensors": names.to_dict(),
            "labels": labels,
            "network": save_network(network, staged) if network is not None else None,
        }
        if extra is not None:
            spec.update(extra(staged))
        report.check()
        (staged / "model.json").write_text(json.dumps(spec, indent=2))
        record = workspace.register_model(
            name,
            staged,
            kind=kind,
            description=description or f"your {kind} model",
            tags={"format": kind, **(tags or {})},
            spec=spec,
        )
    report("register", 1.0, f"registered {record.ref}; convert it next")
    return record
