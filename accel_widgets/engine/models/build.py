"""Build: the TensorFlow model the original walkthrough built, saved and registered.

The SavedModel has two functions:

* ``serving_default`` (``serve``): a batch of JPEG/PNG bytes ``images`` -> decode -> resize the
  short side to 256 -> centre crop 224 -> the weights' normalisation -> featurizer -> softmax,
  returned as ``output_alias``. This is the original service's contract, kept for users who
  load the SavedModel with TensorFlow and for validating the converted model end to end.
* ``predict_pixels``: RGB pixels (0..255, already decoded, resized and cropped) -> the same
  normalisation and network. This is what gets converted to ONNX: ONNX Runtime cannot run
  TensorFlow's ``DecodeJpeg`` (tf2onnx writes a node ORT refuses to load), and decoding on the
  server with libjpeg-turbo (simplejpeg, 0.4 ms for 224 px) is 5x faster than ``tf.io`` and
  bit-exact with libjpeg; see docs/DECISIONS.md.

Weights: ``"imagenet"`` (the standard Keras download and cache), a weights file path, or
``"random"`` (tests and dry runs: the pipeline is then proven numerically, not by labels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accel_widgets.engine.models.catalog import LEGACY_INPUT, ModelSpec, get_spec
from accel_widgets.engine.models.keras_common import (
    OFFLINE_ENV,
    decoder,
    import_tf,
    keras_cache_dir,
    labels_for,
    normalizer,
    register_built,
)
from accel_widgets.engine.store.workspace import ModelRecord, Workspace, check_name
from accel_widgets.errors import BuildError, WeightsError
from accel_widgets.progress import CancelToken, Progress, as_reporter


@dataclass(frozen=True)
class TensorNames:
    """The names a client may use for the model's input and output."""

    input_alias: str
    output_alias: str
    input_tensor: str
    output_tensor: str
    legacy_input: str
    legacy_outputs: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_alias": self.input_alias,
            "output_alias": self.output_alias,
            "input_tensor": self.input_tensor,
            "output_tensor": self.output_tensor,
            "legacy_input": self.legacy_input,
            "legacy_outputs": list(self.legacy_outputs),
        }


def resolve_weights(spec: ModelSpec, weights: str | os.PathLike[str]) -> str | None:
    """Turn the user's weights choice into what ``keras.applications`` takes, or explain why not.

    Returns None for random weights, ``"imagenet"`` or a file path otherwise.
    """
    text = str(weights)
    if text == "random":
        return None
    if text == "imagenet":
        expected = keras_cache_dir() / (spec.keras_weights_file or "")
        if spec.keras_weights_file is None:
            raise WeightsError(f"{spec.title} has no Keras ImageNet weights to download")
        if expected.is_file():
            return str(expected)
        if os.environ.get(OFFLINE_ENV):
            raise _offline_error(spec, expected)
        return "imagenet"
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist. Give the path to a Keras weights file "
            f"(for {spec.title}: {spec.keras_weights_file}), 'imagenet' or 'random'."
        )
    return str(path)


def _offline_message(spec: ModelSpec, expected: Path, *, cli: bool) -> str:
    """One message, in Python's words (``weights="random"``) or the CLI's (``--weights``)."""
    path = f"/path/to/{spec.keras_weights_file}"
    if cli:
        file_option, random_option = f"--weights {path}", "--weights random"
    else:
        file_option, random_option = f'weights="{path}"', 'weights="random"'
    return (
        f"ImageNet weights for {spec.title} are not on this machine and cannot be downloaded "
        f"(offline). Expected the file {spec.keras_weights_file} in {expected.parent}. Copy it "
        f"there from a machine that has it (it is Keras' standard download), pass its path as "
        f"{file_option}, or use {random_option} for a dry run."
    )


def widget_message(spec: ModelSpec, expected: Path) -> str:
    """The offline message in a widget's words: its "weights" control, not an argument."""
    return (
        f"ImageNet weights for {spec.title} are not on this machine and cannot be downloaded "
        f"(offline). Expected the file {spec.keras_weights_file} in {expected.parent}. Copy it "
        "there from a machine that has it (it is Keras' standard download), or choose random "
        'weights in the "weights" control above for a dry run.'
    )


def _offline_error(spec: ModelSpec, expected: Path, detail: str = "") -> WeightsError:
    """The offline error; ``cli_message`` is what the command line prints instead, and
    ``widget_message`` what a step of the walk shows (``error_text`` picks it)."""
    error = WeightsError(_offline_message(spec, expected, cli=False) + detail)
    error.cli_message = _offline_message(spec, expected, cli=True) + detail
    error.widget_message = widget_message(spec, expected) + detail
    return error


def load_keras_application(spec: ModelSpec, weights: str | os.PathLike[str] = "imagenet"):
    """The catalog network as a Keras model (softmax output), with the chosen weights."""
    if not spec.graph_ready:
        raise BuildError(f"{spec.title}: {spec.notes}")
    _, keras = import_tf()
    source = resolve_weights(spec, weights)
    factory = getattr(keras.applications, spec.architecture)
    try:
        return factory(weights=source, include_top=True, classifier_activation="softmax")
    except OSError as exc:  # unreadable or truncated h5
        raise WeightsError(f"cannot read weights {source}: {exc}") from exc
    except ValueError as exc:  # wrong architecture's file: shapes do not match
        raise WeightsError(
            f"the weights {source} do not fit {spec.title} ({exc}). "
            f"Expected {spec.keras_weights_file}."
        ) from exc
    except Exception as exc:  # network failure during the Keras download
        if source == "imagenet":
            expected = keras_cache_dir() / (spec.keras_weights_file or "")
            raise _offline_error(spec, expected, f" ({exc})") from exc
        raise


def make_serving_module(core, preprocessing: dict[str, Any]):
    """Wrap a Keras model in the two-function module described in the module docstring."""
    tf, _ = import_tf()
    server = preprocessing["server"]
    size = int(server["size"])
    normalize = normalizer(tf, preprocessing["graph"])
    decode = decoder(tf, server)

    class ServingModule(tf.Module):
        def __init__(self, network) -> None:
            super().__init__()
            self.network = network

        @tf.function(
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="pixels")]
        )
        def predict_pixels(self, pixels):
            return self.network(normalize(pixels), training=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve(self, images):
            pixels = tf.map_fn(decode, images, fn_output_signature=tf.float32)
            return {"output_alias": self.predict_pixels(pixels)}

    return ServingModule(core)


def pixel_model(network, graph: dict[str, Any], size: int):
    """The network with the weights' normalisation in front, as one Keras model.

    This is what the low-memory converter traces (it needs a Keras model, not a restored
    SavedModel function); it computes what ``predict_pixels`` computes.
    """
    _, keras = import_tf()
    scale = float(graph["scale"])
    mean = [float(m) for m in graph["mean"]]
    std = [float(s) for s in graph["std"]]
    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(
        scale=[scale / s for s in std], offset=[-m / s for m, s in zip(mean, std, strict=True)]
    )(inputs)
    if graph.get("to_bgr"):
        x = keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=-1), name="rgb_to_bgr")(x)
    return keras.Model(inputs, network(x), name="pixels_to_scores")


def save_network(network, folder: Path) -> str | None:
    """Keep the Keras network beside the SavedModel (``network.keras``) for the converter.

    Costs a second copy of the weights on disk; it lets conversion trace the network with its
    weights as inputs, which cut VGG-16's peak memory from 13 GB to 2 GB (docs/ARCHITECTURE.md).
    """
    if not hasattr(network, "stateless_call"):  # not a Keras 3 model: the stock path is used
        return None
    network.save(folder / "network.keras")
    return "network.keras"


def save_serving_module(module, folder: Path) -> TensorNames:
    """Save the module as a SavedModel in ``folder`` and read back the real tensor names."""
    tf, _ = import_tf()
    serve = module.serve.get_concrete_function()
    tf.saved_model.save(
        module,
        str(folder),
        signatures={"serving_default": serve, "predict_pixels": module.predict_pixels},
    )
    return TensorNames(
        input_alias="images",
        output_alias="output_alias",
        input_tensor=serve.inputs[0].name,
        output_tensor=serve.structured_outputs["output_alias"].name,
        legacy_input=LEGACY_INPUT,
        legacy_outputs=(),
    )


def build_model(
    model: str | ModelSpec,
    *,
    weights: str | os.PathLike[str] = "imagenet",
    name: str | None = None,
    workspace: Workspace | None = None,
    description: str = "",
    tags: dict[str, str] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> ModelRecord:
    """Build a catalog model as a SavedModel and register it as the next version of ``name``.

    Parameters
    ----------
    model:
        A catalog name (``resnet50``, ``quantized-resnet50``...; see ``accel-widgets models``),
        or the catalog entry itself (what :func:`~accel_widgets.engine.walk.prepare.prepare_model`
        hands down).
        The quantized variant builds the same float graph; quantization happens at convert.
    weights:
        ``"imagenet"``, a Keras weights file path, or ``"random"``.
    name:
        The workspace name (lowercase); defaults to the catalog's base name.

    Returns
    -------
    ModelRecord
        ``spec`` holds the catalog entry, preprocessing and the tensor names.
    """
    report = as_reporter(progress, cancel)
    spec = get_spec(model)
    name = check_name(spec.base_name if name is None else name)
    workspace = workspace or Workspace()
    if spec.task == "detection":  # SSD: its own network, outputs and weights (engine/models/ssd.py)
        from accel_widgets.engine.models.ssd import build_detector

        report("build", 0.0, f"loading TensorFlow to build {spec.title}")
        return build_detector(
            spec,
            weights=weights,
            name=name,
            workspace=workspace,
            description=description,
            tags=tags,
            seed=seed,
            progress=report,
            cancel=cancel,
        )
    report("build", 0.0, f"loading TensorFlow to build {spec.title}")
    _, keras = import_tf()
    if seed is not None and str(weights) == "random":
        keras.utils.set_random_seed(seed)
    report("build", 0.2, f"creating {spec.title} with {weights} weights")
    core = load_keras_application(spec, weights)
    report("build", 0.5, "adding JPEG decoding and preprocessing")
    module = make_serving_module(core, spec.preprocessing())
    needed = int(spec.fp32_mb * 2**20 * 1.2)
    with workspace.staging(min_free_bytes=needed) as staged:
        report("build", 0.6, "saving the SavedModel")
        names = save_serving_module(module, staged / "saved_model")
        names = TensorNames(**{**names.to_dict(), "legacy_outputs": spec.legacy_outputs})
        report("build", 0.8, "saving the Keras network for the converter")
        network_file = save_network(core, staged)
        report.check()
        model_spec = {
            "catalog": spec.to_dict(),
            "weights": "random" if str(weights) == "random" else str(weights),
            "seed": seed if str(weights) == "random" else None,
            "preprocessing": spec.preprocessing(),
            "tensors": names.to_dict(),
            "labels": labels_for(spec, weights),
            "format": "savedmodel",
            "network": network_file,
        }
        record = register_built(
            workspace,
            name,
            staged,
            model_spec,
            description=description or f"{spec.title}, {weights} weights",
            tags={"architecture": spec.architecture, "weights": str(weights), **(tags or {})},
            report=report,
        )
    report("register", 1.0, f"registered {record.ref}")
    return record
