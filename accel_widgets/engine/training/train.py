"""Train: your own classes on a catalog featurizer, registered as one model ready to convert.

The walk, each part reported as progress and cancellable between events:

1. ``data``: scan the class folders (:mod:`~accel_widgets.engine.training.train_data`), hold out a
   share of each class (seeded, so a rerun holds out the same images).
2. ``features``: every image through the server's own preprocessing (the same decoder,
   resize and crop as at scoring time) and the featurizer's penultimate layer
   (:mod:`~accel_widgets.engine.training.featurize`),
   once; later runs on the same images, featurizer
   and weights read them from the workspace's cache.
3. ``train``: a small Keras head (standardisation, dropout, dense + softmax) with Adam and
   early stopping on a validation share of the training images (never the held-out ones),
   the best epoch's weights kept. Loss and accuracy per epoch go out as progress events and
   to ``on_epoch`` (the widget's live curve).
4. ``evaluate``: held-out accuracy, per-class precision and recall, confusion matrix
   (scikit-learn's metrics).
5. ``build`` + ``register``: featurizer + head as one Keras network, wrapped in the catalog's
   two-function SavedModel (JPEG bytes in, ``output_alias`` out; ``predict_pixels`` for the
   converter), checked to answer as the head did on held-out images, and registered with
   the class names as its labels (``labels.txt`` in the model's folder) and the training
   report. Convert, quantize, deploy, score and clean up then treat it as any other model.

Cancel at any point keeps no model: files are written into a staging folder that is removed
unless registration completes. Features whose computation finished are kept in the cache
(a retry after a cancel does not pay for them again); a cancel mid-way keeps none.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accel_widgets.engine.models.build import pixel_model, resolve_weights
from accel_widgets.engine.models.keras_common import import_tf
from accel_widgets.engine.models.register import save_and_register
from accel_widgets.engine.store.workspace import ModelRecord, Workspace, check_name
from accel_widgets.engine.training.featurize import (
    FeatureCache,
    cache_key,
    check_size,
    compute_features,
    featurizer_network,
    featurizer_spec,
)
from accel_widgets.engine.training.train_data import (
    ImageFolder,
    TrainDataError,
    load_pixels,
    scan_folder,
    split,
    write_sample,
)
from accel_widgets.errors import BuildError
from accel_widgets.preprocess import Preprocessing
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

#: The featurizer a user gets without choosing (the issue's examples use it; saves and converts
#: in half the time of DenseNet-121 here, which has 2.5x the layers).
DEFAULT_FEATURIZER = "resnet50"
#: Held-out images kept beside the model (``examples/``, flat) for a look and for scoring.
EXAMPLES_KEPT = 64
#: Held-out images kept by class (``holdout/<class>/``): the labelled photos its conversion
#: measures accuracy on (engine/checks/check_photos.py); 200 are needed to vouch for INT8.
HOLDOUT_KEPT = 1000
#: Training-split images kept (``calibration/``): INT8 calibrates on these, never on the
#: held-out pictures it is checked on.
CALIBRATION_KEPT = 200

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainResult:
    """The registered model and what training found (``report``, also in ``report.json``)."""

    model: ModelRecord
    report: dict[str, Any]

    @property
    def accuracy(self) -> float:
        return float(self.report["holdout"]["accuracy"])


def _check_options(epochs: int, patience: int, batch_size: int, learning_rate: float) -> None:
    def whole(name: str, value: Any, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BuildError(f"{name} must be a whole number of at least {low}; got {value!r}")

    whole("epochs", epochs, 1)
    whole("patience", patience, 1)
    whole("batch_size", batch_size, 1)
    if not 0 < float(learning_rate) < 1:
        raise BuildError(f"learning_rate must be between 0 and 1; got {learning_rate!r}")


def _features(
    data: ImageFolder,
    pre: Preprocessing,
    spec,
    weights,
    seed: int,
    mirror: bool,
    workspace: Workspace,
    report: Reporter,
    network_factory: Callable[[], Any],
) -> tuple[np.ndarray, np.ndarray | None, bool, list[np.ndarray] | None]:
    """Features of every image (and of mirrored copies when asked), from the cache if there.

    Returns the features, the mirrored ones, whether the cache answered, and the decoded
    pixels when they had to be computed (the build check reuses them).
    """
    cache = FeatureCache(workspace.root)
    key = cache_key(spec, weights, seed, pre.to_dict(), data.files, mirror=False)
    mirror_key = cache_key(spec, weights, seed, pre.to_dict(), data.files, mirror=True)
    features = cache.load(key)
    mirrored = cache.load(mirror_key) if mirror else None
    if (
        features is not None
        and len(features) == len(data.files)
        and (not mirror or mirrored is not None)
    ):
        report("features", 1.0, f"{len(features)} images' features read from the cache")
        return features, mirrored, True, None
    report("features", 0.0, f"decoding {len(data.files)} images")
    pixels = load_pixels(data.files, pre, root=data.root)
    report("features", 0.05, f"creating the {spec.title} featurizer")
    model = network_factory()
    features = compute_features(model, pixels, report)
    cache.save(key, features)
    if mirror:
        flipped = [p[:, ::-1, :] for p in pixels]
        mirrored = compute_features(model, flipped, report, what="mirrored copies")
        cache.save(mirror_key, mirrored)
    return features, mirrored, False, pixels


def _head(keras, train_x: np.ndarray, n_classes: int, learning_rate: float):
    """Standardise (statistics of the training features, saved in the model), dropout, dense.

    Each feature's spread is floored at a tenth of the median spread: a random featurizer
    has features that barely vary over the training images (dead ReLUs), and dividing by
    their near-zero spread blew the validation loss up to 45 while training loss was 0.01.
    """
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    floor = max(float(np.median(std)) * 0.1, 1e-6)
    norm = keras.layers.Normalization(
        mean=mean, variance=np.maximum(std, floor) ** 2, name="feature_norm"
    )
    head = keras.Sequential(
        [
            keras.Input((train_x.shape[1],), name="features"),
            norm,
            keras.layers.Dropout(0.2, name="dropout"),
            keras.layers.Dense(n_classes, activation="softmax", name="classes"),
        ],
        name="head",
    )
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return head


def _exported_head(keras, head):
    """The trained head as one dense + softmax layer: the standardisation is folded into the
    dense weights (``W / s`` and ``b - (m / s) W``) and dropout does nothing at inference.

    One layer is what every converter handles; the Normalization layer's constants became
    extra graph inputs in the low-memory converter, which refused them.
    """
    norm, dense = head.get_layer("feature_norm"), head.get_layer("classes")
    mean = np.asarray(norm.mean, np.float64).reshape(-1)
    std = np.sqrt(np.asarray(norm.variance, np.float64).reshape(-1))
    kernel, bias = (np.asarray(w, np.float64) for w in dense.get_weights())
    folded_kernel = kernel / std[:, None]
    folded_bias = bias - (mean / std) @ kernel
    exported = keras.Sequential(
        [
            keras.Input((kernel.shape[0],), name="features"),
            keras.layers.Dense(kernel.shape[1], activation="softmax", name="classes"),
        ],
        name="head",
    )
    exported.get_layer("classes").set_weights(
        [folded_kernel.astype(np.float32), folded_bias.astype(np.float32)]
    )
    return exported


def _progress_callback(keras, report: Reporter, epochs: int, on_epoch: EpochCallback | None):
    class EpochProgress(keras.callbacks.Callback):
        """Loss and accuracy each epoch; a cancel stops between batches."""

        def on_train_batch_end(self, batch, logs=None):
            report.check()

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            point = {
                "epoch": epoch + 1,
                "loss": logs.get("loss"),
                "accuracy": logs.get("accuracy"),
                "val_loss": logs.get("val_loss"),
                "val_accuracy": logs.get("val_accuracy"),
            }
            if on_epoch is not None:
                on_epoch(point)
            message = (
                f"epoch {epoch + 1}/{epochs}: loss {point['loss']:.3f}, "
                f"accuracy {point['accuracy']:.3f}"
            )
            if point["val_loss"] is not None:
                message += (
                    f"; validation loss {point['val_loss']:.3f}, "
                    f"accuracy {point['val_accuracy']:.3f}"
                )
            report("train", (epoch + 1) / epochs, message)

    return EpochProgress()


def _evaluate(classes: tuple[str, ...], truth: np.ndarray, predicted: np.ndarray) -> dict:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(classes)))
    precision, recall, _, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    return {
        "n_images": len(truth),
        "accuracy": float(np.mean(truth == predicted)),
        "per_class": [
            {
                "class": name,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        ],
        "confusion": confusion_matrix(truth, predicted, labels=labels).tolist(),
    }


def train_classifier(
    name: str,
    data: str | os.PathLike[str] | None = None,
    *,
    sample: str | None = None,
    featurizer: str = DEFAULT_FEATURIZER,
    weights: str | os.PathLike[str] = "imagenet",
    size: int | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    epochs: int = 60,
    patience: int = 6,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    augment: bool = False,
    sample_per_class: int | None = None,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train a classifier head on a folder of class folders and register featurizer + head.

    Parameters
    ----------
    name:
        The workspace name of the trained model (lowercase).
    data:
        A folder holding one sub-folder per class (JPEG/PNG/BMP/WebP images); the sub-folder
        names become the labels. Or leave it out and give ``sample``.
    sample:
        ``"digits"`` or ``"lfw"``: a bundled demo set, written into the workspace first
        (``sample_per_class`` keeps the first N images of each class).
    featurizer, weights, size:
        The catalog classifier whose penultimate layer gives the features, its weights
        (``"imagenet"``, a Keras weights file, or ``"random"``: offline, see
        :mod:`~accel_widgets.engine.training.featurize` for
        what that costs in accuracy), and its input
        side in pixels (default: the catalog's 224).
    holdout, seed:
        The share of each class held out for the final check, and the seed of that split,
        of the validation split and of the head's initial weights.
    epochs, patience, batch_size, learning_rate:
        Training of the head; it stops after ``patience`` epochs without a better
        validation loss and keeps the best epoch.
    augment:
        Also train on mirror images (features computed once, cached too). Right for photos
        of objects, wrong for text and digits.
    on_epoch:
        Called after each epoch with ``{"epoch", "loss", "accuracy", "val_loss",
        "val_accuracy"}`` (a live curve).

    Returns
    -------
    TrainResult
        The registered model (``spec["labels"]`` is its label file, one class per line) and
        the report (held-out accuracy, per-class precision/recall, confusion matrix, curve).

    Raises
    ------
    TrainDataError
        For a folder that cannot be trained on (the message names the class or files).
    CancelledError
        When ``cancel`` was set; no model is registered.
    """
    report = as_reporter(progress, cancel)
    check_name(name)
    _check_options(epochs, patience, batch_size, learning_rate)
    spec = featurizer_spec(featurizer)
    size = check_size(spec, size)
    if (data is None) == (sample is None):
        raise TrainDataError(
            "give data=FOLDER (one sub-folder per class) or sample='digits' / 'lfw', not both"
        )
    workspace = workspace or Workspace()
    started = time.monotonic()
    report("data", 0.0, "reading the class folders")
    if sample is not None:
        folder = workspace.root / "cache" / "samples" / f"{sample}-{sample_per_class or 'all'}"
        if not folder.is_dir():
            with workspace.staging() as staged:
                write_sample(sample, staged / "set", per_class=sample_per_class)
                folder.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(staged / "set", folder)
                except OSError:  # another kernel wrote the same set first: use theirs
                    if not folder.is_dir():
                        raise
        data = folder
    images = scan_folder(data)
    if str(weights) != "random":
        # A missing weights file or an offline download fails now, before any decoding.
        resolve_weights(spec, weights)
    parts = split(images, holdout=holdout, seed=seed)
    counts = ", ".join(f"{c}: {n}" for c, n in images.counts.items())
    report(
        "data",
        1.0,
        f"{len(images.classes)} classes ({counts}); {len(parts.train)} to train on, "
        f"{len(parts.holdout)} held out",
    )

    # Trained models keep the whole picture (short side to the input size, centre crop of the
    # long side): a user's objects may fill their photos edge to edge.
    pre = Preprocessing(size=size, short_side=size)
    graph = spec.preprocessing()["graph"]
    _, keras = import_tf()
    networks: dict[str, Any] = {}

    def network() -> Any:
        if "pixels" not in networks:
            networks["core"] = featurizer_network(spec, weights, size, seed)
            networks["pixels"] = pixel_model(networks["core"], graph, size)
        return networks["pixels"]

    features, mirrored, cached, pixels = _features(
        images, pre, spec, weights, seed, augment, workspace, report, network
    )

    # The validation share for early stopping comes out of the training part only.
    fit_data = ImageFolder(images.root, images.classes, (), images.targets[parts.train])
    fit_parts = split(fit_data, holdout=0.15, seed=seed + 1)
    fit_idx, val_idx = parts.train[fit_parts.train], parts.train[fit_parts.holdout]
    train_x, train_y = features[fit_idx], images.targets[fit_idx]
    if mirrored is not None:
        train_x = np.concatenate([train_x, mirrored[fit_idx]])
        train_y = np.concatenate([train_y, train_y])
    keras.utils.set_random_seed(seed)
    head = _head(keras, train_x, len(images.classes), learning_rate)
    curve: list[dict[str, Any]] = []

    def record_epoch(point: dict[str, Any]) -> None:
        curve.append(point)
        if on_epoch is not None:
            on_epoch(point)

    report("train", 0.0, f"training the head on {len(train_x)} examples, up to {epochs} epochs")
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    head.fit(
        train_x,
        train_y,
        validation_data=(features[val_idx], images.targets[val_idx]),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[stop, _progress_callback(keras, report, epochs, record_epoch)],
    )
    best = int(np.argmin([p["val_loss"] for p in curve])) + 1
    report("train", 1.0, f"stopped after {len(curve)} epochs; kept epoch {best}")

    report("evaluate", 0.0, f"checking on {len(parts.holdout)} held-out images")
    held_x = features[parts.holdout]
    held_scores = np.asarray(head.predict_on_batch(held_x))
    truth = images.targets[parts.holdout]
    holdout_report = _evaluate(images.classes, truth, held_scores.argmax(axis=1))
    # Each held-out image's answer: which ones were wrong, and the reference a served copy
    # of the model must reproduce.
    holdout_report["predictions"] = [
        {
            "file": images.files[i].relative_to(images.root).as_posix(),
            "truth": images.classes[images.targets[i]],
            "predicted": images.classes[int(k)],
        }
        for i, k in zip(parts.holdout, held_scores.argmax(axis=1), strict=True)
    ]
    report(
        "evaluate",
        1.0,
        f"held-out accuracy {holdout_report['accuracy']:.3f} "
        f"({int(np.sum(truth == held_scores.argmax(axis=1)))}/{len(truth)})",
    )

    report("build", 0.0, "joining the featurizer and the head into one model")
    network()
    inputs = keras.Input((size, size, 3), name="normalized_pixels")
    exported = _exported_head(keras, head)
    combined = keras.Model(inputs, exported(networks["core"](inputs)), name=f"{name}_classifier")
    check = parts.holdout[:16]
    check_pixels = (
        [pixels[i] for i in check]
        if pixels is not None
        else load_pixels([images.files[i] for i in check], pre, root=images.root)
    )
    joined = np.asarray(pixel_model(combined, graph, size)(np.stack(check_pixels), training=False))
    agree = float(np.mean(joined.argmax(axis=1) == held_scores[: len(check)].argmax(axis=1)))
    if agree < 1.0:
        raise BuildError(
            f"the joined model disagrees with the trained head on {1 - agree:.0%} of "
            "held-out images; this is a bug, please report it"
        )
    training_report = {
        "classes": list(images.classes),
        "counts": images.counts,
        "data": str(images.root),
        "sample": sample,
        "featurizer": {
            "model": spec.name,
            "title": spec.title,
            "weights": str(weights),
            "size": size,
            "features": int(features.shape[1]),
            "cached": cached,
        },
        "split": {
            "seed": seed,
            "holdout": holdout,
            "train": len(fit_idx),
            "validation": len(val_idx),
            "held_out": len(parts.holdout),
        },
        "head": {
            "epochs_run": len(curve),
            "best_epoch": best,
            "augment": augment,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
        },
        "curve": curve,
        "holdout": holdout_report,
        "seconds": round(time.monotonic() - started, 1),
    }

    def write_extras(staged: Path) -> dict[str, Any]:
        (staged / "labels.txt").write_text("\n".join(images.classes) + "\n", encoding="utf-8")
        (staged / "report.json").write_text(json.dumps(training_report, indent=2))
        examples = staged / "examples"
        examples.mkdir()
        for i in parts.holdout[:EXAMPLES_KEPT]:
            source = images.files[i]
            shutil.copyfile(source, examples / f"{images.classes[images.targets[i]]}-{source.name}")
        for i in parts.holdout[:HOLDOUT_KEPT]:
            source = images.files[i]
            folder = staged / "holdout" / str(int(images.targets[i]))
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / source.name)
        calibration = staged / "calibration"
        calibration.mkdir()
        step = max(1, len(parts.train) // CALIBRATION_KEPT)
        for i in parts.train[::step][:CALIBRATION_KEPT]:
            source = images.files[i]
            shutil.copyfile(source, calibration / f"{int(images.targets[i])}-{source.name}")
        return {
            "labels_file": "labels.txt",
            "examples": "examples",
            "holdout": "holdout",
            "calibration": "calibration",
            "training": {k: training_report[k] for k in ("classes", "featurizer", "split")}
            | {"holdout_accuracy": holdout_report["accuracy"]},
        }

    pre_dict = {"server": pre.to_dict(), "graph": graph}
    record = save_and_register(
        keras_serving_module(combined, pre_dict),
        name,
        pre_dict,
        None,
        "trained",
        f"{len(images.classes)} classes on {spec.title} ({weights} weights), held-out "
        f"accuracy {holdout_report['accuracy']:.3f}",
        {"featurizer": spec.name, "weights": str(weights), "classes": str(len(images.classes))},
        workspace,
        report,
        network=combined,
        extra=write_extras,
    )
    return TrainResult(record, training_report)


def keras_serving_module(network: Any, pre: dict[str, Any]) -> Any:
    """The catalog's two-function SavedModel around ``network`` (see ``engine/models/build.py``)."""
    from accel_widgets.engine.models.build import make_serving_module

    return make_serving_module(network, pre)
