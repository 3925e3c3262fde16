"""What building any catalog network shares: TensorFlow's import, the in-graph decode and
normalisation, the label set to record, and registering what was built.

The classifiers (:mod:`~accel_widgets.engine.models.build`) and the detector
(:mod:`~accel_widgets.engine.models.ssd`) both make a SavedModel the same way; these pieces
live here so that neither imports the other's privates.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from accel_widgets.engine.models.catalog import ModelSpec
from accel_widgets.engine.models.labels import labels_path
from accel_widgets.engine.store.workspace import ModelRecord, Workspace
from accel_widgets.errors import BuildError, WeightsError
from accel_widgets.progress import Reporter

OFFLINE_ENV = "ACCEL_WIDGETS_OFFLINE"


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights ($KERAS_HOME/models, default ~/.keras/models)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras
        import tensorflow as tf
    except ImportError as exc:  # the light serving install has no TensorFlow
        raise BuildError(
            "building and converting models needs TensorFlow: pip install 'accel-widgets[engine]'"
        ) from exc
    # TensorFlow's Python logger prints "Assets written to: ..." at INFO on every save; in a
    # notebook that is noise between the user's own output. Warnings and errors still show.
    tf.get_logger().setLevel("WARNING")
    return tf, keras


def labels_for(spec: ModelSpec, weights: str | os.PathLike[str]) -> str | None:
    """The label set to record. Random weights answer meaningless classes anyway: where the
    label file is not on this machine (a fresh offline clone) they are served as class
    numbers instead of failing at deploy."""
    if str(weights) != "random":
        return spec.labels
    try:
        labels_path(spec.labels)
    except WeightsError:
        return None
    return spec.labels


def normalizer(tf, graph: dict[str, Any]):
    """Pixels 0..255 RGB -> what the weights were trained on (in-graph, so ONNX has it too)."""
    scale = float(graph["scale"])
    mean = [float(m) for m in graph["mean"]]
    std = [float(s) for s in graph["std"]]
    to_bgr = bool(graph.get("to_bgr", False))

    def normalize(pixels):
        # Constants are made inside the traced function: an eager tensor captured from outside
        # would become an extra input of the restored function and of the ONNX graph.
        mean_t = tf.constant(mean, tf.float32)
        std_t = tf.constant(std, tf.float32)
        x = pixels * scale if scale != 1.0 else pixels
        x = (x - mean_t) / std_t
        if to_bgr:
            x = tf.reverse(x, axis=[-1])
        return x

    return normalize


def decoder(tf, server: dict[str, Any]):
    """JPEG/PNG bytes -> one cropped RGB float image, as the original graph did."""
    size = int(server["size"])
    short = int(server["short_side"])
    stretch = server["resize"] == "stretch"

    def decode(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image = tf.cast(image, tf.float32)
        if stretch:
            return tf.image.resize(image, [size, size], antialias=True)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        ratio = short / tf.reduce_min(shape)
        new = tf.cast(tf.round(shape * ratio), tf.int32)
        image = tf.image.resize(image, new, antialias=True)
        top = (new[0] - size) // 2
        left = (new[1] - size) // 2
        return tf.image.crop_to_bounding_box(image, top, left, size, size)

    return decode


def register_built(
    workspace: Workspace,
    name: str,
    staged: Path,
    model_spec: dict[str, Any],
    *,
    description: str,
    tags: dict[str, str],
    report: Reporter,
) -> ModelRecord:
    """Write the model's spec beside what was built in ``staged`` and register it as a
    catalog model (a classifier here, SSD in ssd.py)."""
    (staged / "model.json").write_text(json.dumps(model_spec, indent=2))
    report("register", 0.9, f"registering {name} in {workspace.root}")
    return workspace.register_model(
        name, staged, kind="catalog", description=description, tags=tags, spec=model_spec
    )
