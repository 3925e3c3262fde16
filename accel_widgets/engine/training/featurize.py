"""Featurizer: a catalog network's penultimate layer, and its features computed once and cached.

Training a head on features rather than fine-tuning the whole network is what the original
service's "your own classes" notebook did: the expensive part (the convolutional network)
runs once per image, the head trains in seconds, and a retrain with other settings (epochs,
augmentation) reuses the features from the cache.

Weights, and what they mean for accuracy:

* ``"imagenet"`` (Keras' download) or a Keras weights file: features that separate most
  photo classes well; what users want.
* ``"random"``: offline and free, and still far from useless. A randomly initialised network
  is a fixed random feature map; on scikit-learn's digits (64 px, DenseNet-121) a linear head
  on it reached 0.99 held-out accuracy (docs/MEASUREMENTS.md). On real photos of similar
  classes expect far less than with ImageNet weights.

The input size defaults to the catalog's (224 px, what ImageNet weights were trained at);
smaller sizes (at least 32 px) run quadratically faster, which suits small pictures such as
the bundled digits. The weights do not depend on the input size: the convolution kernels are
copied from the catalog network built at its own size.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accel_widgets.engine.models.build import load_keras_application
from accel_widgets.engine.models.catalog import ModelSpec, get_spec
from accel_widgets.engine.models.keras_common import import_tf
from accel_widgets.errors import BuildError, CatalogError
from accel_widgets.progress import Reporter

#: Keras' applications refuse inputs below 32 px.
MIN_SIZE = 32
_BATCH = 32
#: Bumped when the way features are computed changes, so old cache entries are not reused.
_CACHE_FORMAT = 1


def featurizer_spec(featurizer: str) -> ModelSpec:
    """The catalog classifier whose penultimate layer gives the features."""
    spec = get_spec(featurizer)
    if spec.task != "classification" or not spec.graph_ready:
        names = [s.name for s in _featurizers()]
        raise CatalogError(
            f"{spec.title} cannot be a featurizer (a {spec.task} model); use one of "
            + ", ".join(names)
        )
    return spec


def _featurizers() -> list[ModelSpec]:
    from accel_widgets.engine.models.catalog import list_specs

    return [
        s
        for s in list_specs(include_quantized=False)
        if s.task == "classification" and s.graph_ready
    ]


def check_size(spec: ModelSpec, size: int | None) -> int:
    """The featurizer's input side: the catalog's by default, at least :data:`MIN_SIZE`."""
    if size is None:
        return spec.input_size
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= 1024:
        raise BuildError(
            f"size must be a whole number of pixels from {MIN_SIZE} to 1024 "
            f"({spec.title} takes {spec.input_size} by default); got {size!r}"
        )
    return size


def featurizer_network(
    spec: ModelSpec, weights: str | os.PathLike[str], size: int, seed: int = 0
) -> Any:
    """The catalog network without its classifier: ``[N, size, size, 3]`` normalised pixels
    -> ``[N, features]`` (global average pooling; for VGG-16 at its own size, ``fc2``)."""
    _, keras = import_tf()
    factory = getattr(keras.applications, spec.architecture)
    shape = (size, size, 3)
    if str(weights) == "random":
        keras.utils.set_random_seed(seed)
        return factory(weights=None, include_top=False, input_shape=shape, pooling="avg")
    full = load_keras_application(spec, weights)  # every weights error is explained there
    if size == spec.input_size:
        return keras.Model(full.inputs, full.layers[-2].output, name=f"{spec.name}_features")
    headless = factory(weights=None, include_top=False, input_shape=shape, pooling="avg")
    source = full.get_weights()[: len(headless.weights)]
    if [w.shape for w in source] != [tuple(w.shape) for w in headless.weights]:
        raise BuildError(f"cannot move {spec.title}'s weights to a {size} px input")
    headless.set_weights(source)
    return headless


def _weights_identity(weights: str | os.PathLike[str], seed: int) -> str:
    text = str(weights)
    if text == "random":
        return f"random:{seed}"
    path = Path(text).expanduser()
    if path.is_file():
        stat = path.stat()
        return f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return text


def cache_key(
    spec: ModelSpec,
    weights: str | os.PathLike[str],
    seed: int,
    preprocessing: dict[str, Any],
    files: Sequence[Path],
    mirror: bool,
) -> str:
    """A digest of everything the features depend on, the bytes of every image included."""
    digest = hashlib.sha256()
    head = {
        "format": _CACHE_FORMAT,
        "featurizer": spec.base_name,
        "weights": _weights_identity(weights, seed),
        "preprocessing": preprocessing,
        "mirror": mirror,
    }
    digest.update(json.dumps(head, sort_keys=True).encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def compute_features(
    pixel_model: Any, pixels: Sequence[np.ndarray], report: Reporter, *, what: str = "features"
) -> np.ndarray:
    """Run the featurizer over ``pixels`` in batches of 32, reporting each batch.

    One traced function with a free batch dimension: Keras' eager call is 5-10x slower on
    these networks (docs/FINDINGS.md), and ``predict`` retraces for the last, smaller batch.
    """
    tf, _ = import_tf()
    size = int(pixels[0].shape[0])
    run = tf.function(
        lambda x: pixel_model(x, training=False),
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
    )
    total = len(pixels)
    out = []
    for start in range(0, total, _BATCH):
        report.check()
        batch = np.stack(pixels[start : start + _BATCH]).astype(np.float32)
        out.append(np.asarray(run(tf.constant(batch))))
        done = min(total, start + _BATCH)
        report("features", done / total, f"{what}: {done}/{total} images")
    return np.concatenate(out).astype(np.float32)


class FeatureCache:
    """Features on disk under the workspace (``cache/features/<key>.npy``), written whole.

    A file appears only once every feature of the set is computed (written to a temp name,
    then renamed), so a cancel or a crash mid-way never leaves a partial entry.
    """

    def __init__(self, root: Path) -> None:
        self.folder = Path(root) / "cache" / "features"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def load(self, key: str) -> np.ndarray | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return np.load(path)
        except (OSError, ValueError):  # a damaged entry is recomputed, not trusted
            return None

    def save(self, key: str, features: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temp = self.folder / f".{key}.{os.getpid()}.tmp.npy"
        np.save(temp, features)
        os.replace(temp, self.path(key))
