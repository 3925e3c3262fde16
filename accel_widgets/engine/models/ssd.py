"""SSD300 on VGG-16: the catalog's detector, built in Keras and saved like the classifiers.

Network (layer names are the weights-file contract, see :data:`LAYER_NAMES`):

* VGG-16's conv base with Keras' names (``block1_conv1`` ... ``block5_conv3``), so the
  ImageNet backbone loads straight from ``keras.applications.VGG16``; pools 1-3 are Keras'
  ``valid`` 2x2 (300 -> 37), pool 4 is 2x2 ``same`` (37 -> 19) and pool 5 3x3 stride 1, as in
  the Azure model (grids 37/19/10/5/3/1; :mod:`~accel_widgets.engine.models.ssd_anchors`);
* ``block6_conv`` (3x3, dilation 6, 1024) and ``block7_conv`` (1x1, 1024) in place of fc6/fc7;
* extra blocks 8-11 (1x1 then 3x3: stride 2 ``same`` for 8 and 9, ``valid`` for 10 and 11);
* ``block4_norm``: L2 normalisation with a learnt per-channel scale (initial 20);
* per map ``{block}_box_loc`` (A x 4 offsets) and ``{block}_box_conf`` (A x 21 logits), 3x3
  convs, reshaped to the original raw tensors ``[B, H, W, A, 4]`` and ``[B, H, W, A, 21]``.

The SavedModel's ``predict_pixels`` returns the 12 raw tensors and the decoded detections
(:mod:`~accel_widgets.engine.models.ssd_decode`): decoding runs in the graph, so the converted ONNX
model carries it and the generic server serves it (bench/bench_ssd.py measures its cost).

Weights: ``"random"`` (tests, dry runs), ``"imagenet"`` (VGG-16's ImageNet conv base from Keras
with untrained SSD layers: boxes are meaningless until trained), or a trained weights file in
Keras' per-layer-name HDF5 layout (:func:`save_weights` writes one; a Keras 2
``save_weights("x.h5")`` of a model with these layer names is the same layout), loaded by
layer name; a file that does not fit gets an error listing every layer that does not match.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from accel_widgets.engine.models.catalog import LEGACY_INPUT, ModelSpec
from accel_widgets.engine.models.ssd_anchors import FEATURE_MAPS
from accel_widgets.engine.models.ssd_decode import DETECTION_OUTPUTS, NUM_CLASSES, detect_tf
from accel_widgets.engine.store.workspace import ModelRecord, Workspace
from accel_widgets.errors import BuildError, WeightsError
from accel_widgets.progress import CancelToken, Progress, as_reporter

#: The Keras download holding VGG-16's ImageNet conv base (no classifier).
VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG_CONV_LAYERS = tuple(
    f"block{block}_conv{i}"
    for block, count in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for i in range(1, count + 1)
)
EXTRA_LAYERS = (
    "block6_conv",
    "block7_conv",
    "block8_conv1",
    "block8_conv2",
    "block9_conv1",
    "block9_conv2",
    "block10_conv1",
    "block10_conv2",
    "block11_conv1",
    "block11_conv2",
    "block4_norm",
)
HEAD_LAYERS = tuple(f"{m.block}_box_{kind}" for m in FEATURE_MAPS for kind in ("loc", "conf"))
#: Every layer with weights, in the order a weights file lists them.
LAYER_NAMES = (*VGG_CONV_LAYERS, *EXTRA_LAYERS, *HEAD_LAYERS)


def raw_output_names() -> list[tuple[str, str]]:
    """(ONNX/SavedModel output key, the original service's tensor name) for the 12 raw maps."""
    pairs = []
    for suffix, kind in (("_1", "logits"), ("", "loc")):
        for m in FEATURE_MAPS:
            pairs.append((f"{m.block}_{kind}", f"ssd_300_vgg/{m.block}_box/Reshape{suffix}:0"))
    return pairs


def _import_keras():
    from accel_widgets.engine.models.keras_common import import_tf

    return import_tf()


def _l2_norm_layer(keras):
    @keras.saving.register_keras_serializable(package="accel_widgets")
    class L2Normalization(keras.layers.Layer):
        """Per-pixel L2 normalisation over channels with a learnt scale (SSD's conv4_3 norm)."""

        def __init__(self, scale: float = 20.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.scale = scale

        def build(self, input_shape) -> None:
            self.gamma = self.add_weight(
                name="gamma",
                shape=(input_shape[-1],),
                initializer=keras.initializers.Constant(self.scale),
            )

        def call(self, x):
            ops = keras.ops
            norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))
            return x / norm * self.gamma

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "scale": self.scale}

    return L2Normalization


def build_network(keras=None):
    """The SSD300-VGG Keras model: normalised BGR pixels in, the 12 raw maps out (dict)."""
    if keras is None:
        _, keras = _import_keras()
    layers = keras.layers

    def conv(filters: int, size: int, name: str, **kwargs: Any):
        kwargs.setdefault("padding", "same")
        return layers.Conv2D(filters, size, activation="relu", name=name, **kwargs)

    inputs = keras.Input((300, 300, 3), name="normalized")
    x = inputs
    taps: dict[str, Any] = {}
    for block, count, filters in ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)):
        for i in range(1, count + 1):
            x = conv(filters, 3, f"block{block}_conv{i}")(x)
        if block == 4:
            taps["block4"] = _l2_norm_layer(keras)(name="block4_norm")(x)
            x = layers.MaxPooling2D(2, 2, padding="same", name="block4_pool")(x)
        elif block == 5:
            x = layers.MaxPooling2D(3, 1, padding="same", name="block5_pool")(x)
        else:
            x = layers.MaxPooling2D(2, 2, name=f"block{block}_pool")(x)
    x = conv(1024, 3, "block6_conv", dilation_rate=6)(x)
    x = taps["block7"] = conv(1024, 1, "block7_conv")(x)
    for block, filters in ((8, 512), (9, 256)):  # 3x3 stride 2 "same": 19 -> 10 -> 5
        x = conv(filters // 2, 1, f"block{block}_conv1")(x)
        x = taps[f"block{block}"] = conv(filters, 3, f"block{block}_conv2", strides=2)(x)
    for block in (10, 11):
        x = conv(128, 1, f"block{block}_conv1")(x)
        x = taps[f"block{block}"] = conv(256, 3, f"block{block}_conv2", padding="valid")(x)
    outputs = {}
    for m in FEATURE_MAPS:
        source = taps[m.block]
        if source.shape[1] != m.grid:  # a layout change must not pass silently
            raise BuildError(f"{m.block} is {source.shape[1]}x{source.shape[1]}, not {m.grid}")
        a = m.anchors_per_cell
        loc = layers.Conv2D(a * 4, 3, padding="same", name=f"{m.block}_box_loc")(source)
        conf = layers.Conv2D(a * NUM_CLASSES, 3, padding="same", name=f"{m.block}_box_conf")(source)
        outputs[f"{m.block}_loc"] = layers.Reshape((m.grid, m.grid, a, 4), name=f"{m.block}_r")(loc)
        outputs[f"{m.block}_logits"] = layers.Reshape(
            (m.grid, m.grid, a, NUM_CLASSES), name=f"{m.block}_r1"
        )(conf)
    return keras.Model(inputs, outputs, name="ssd_300_vgg")


# -- weights ---------------------------------------------------------------------------------


def save_weights(network, path: str | os.PathLike[str]) -> Path:
    """Write the network's weights in the per-layer-name HDF5 layout :func:`load_weights` reads.

    Keras' classic layout: the root attribute ``layer_names``; one group per layer with the
    attribute ``weight_names`` and one dataset per weight (kernel, bias; ``gamma`` for
    ``block4_norm``). Kernels are HWIO (TensorFlow's Conv2D layout).
    """
    import h5py

    path = Path(path)
    with h5py.File(path, "w") as f:
        names = [layer.name for layer in network.layers if layer.weights]
        f.attrs["layer_names"] = [n.encode() for n in names]
        for name in names:
            layer = network.get_layer(name)
            group = f.create_group(name)
            weight_names = []
            for weight in layer.weights:
                key = f"{name}/{weight.name}"
                group.create_dataset(weight.name, data=np.asarray(weight.numpy()))
                weight_names.append(key.encode())
            group.attrs["weight_names"] = weight_names
    return path


def _read_layers(path: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its arrays, from a per-layer-name HDF5 weights file."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"cannot read weights {path}: it is not an HDF5 file ({exc})") from exc
    with f:
        root = f.get("model_weights", f)  # a whole-model .h5 too
        if "layer_names" not in root.attrs:
            raise WeightsError(
                f"{path} is not a per-layer-name weights file (no 'layer_names' attribute; "
                "Keras 3's .weights.h5 is stored by position, not by layer name). Write one with "
                "accel_widgets.engine.models.ssd.save_weights(network, path), or Keras 2's "
                "model.save_weights('x.h5'), from a model with the layer names of "
                "accel_widgets.engine.models.ssd.LAYER_NAMES."
            )
        found: dict[str, list[np.ndarray]] = {}
        for raw in root.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = root[name]
            weight_names = [
                w.decode() if isinstance(w, bytes) else str(w)
                for w in group.attrs.get("weight_names", [])
            ]
            arrays = []
            for weight in weight_names:
                key = weight[len(name) + 1 :] if weight.startswith(name + "/") else weight
                arrays.append(np.asarray(group[key] if key in group else group[weight]))
            if arrays:
                found[name] = arrays
        return found


def load_weights(network, path: str | os.PathLike[str]) -> None:
    """Load a trained SSD300 weights file by layer name, or say every layer that does not fit.

    Raises
    ------
    WeightsError
        Listing the network's layers missing from the file, the file's layers the network does
        not have, and layers whose weight shapes differ (with both shapes).
    """
    path = Path(path)
    found = _read_layers(path)
    wanted = {layer.name: layer for layer in network.layers if layer.weights}
    missing = [n for n in wanted if n not in found]
    unexpected = [n for n in found if n not in wanted]
    wrong = []
    for name, layer in wanted.items():
        if name not in found:
            continue
        want = [tuple(w.shape) for w in layer.weights]
        got = [a.shape for a in found[name]]
        if want != got:
            wrong.append(f"{name} (file {got}, network {want})")
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing from the file: {', '.join(missing)}")
        if unexpected:
            parts.append(f"in the file but not in SSD300-VGG: {', '.join(unexpected)}")
        if wrong:
            parts.append(f"different shapes: {'; '.join(wrong)}")
        raise WeightsError(
            f"the weights file {path} does not fit SSD300-VGG: " + ". ".join(parts) + ". "
            "The layout is documented in accel_widgets/engine/models/ssd.py "
            "(LAYER_NAMES; 37/19/10/5/3/1 "
            "grids, 4/6/6/6/4/4 anchors, 21 classes)."
        )
    for name, layer in wanted.items():
        layer.set_weights(found[name])


def imagenet_backbone_file() -> str:
    """VGG-16's ImageNet conv base: the Keras cache file, or ``"imagenet"`` to download it."""
    from accel_widgets.engine.models.keras_common import OFFLINE_ENV, keras_cache_dir

    expected = keras_cache_dir() / VGG16_NOTOP_FILE
    if expected.is_file():
        return str(expected)
    if os.environ.get(OFFLINE_ENV):
        words = (
            f"VGG-16's ImageNet weights are not on this machine and cannot be downloaded "
            f"(offline). Expected {VGG16_NOTOP_FILE} in {expected.parent} (Keras' standard "
            "download); copy it there, pass a trained SSD300 weights file "
        )
        error = WeightsError(words + '(weights="/path/to/ssd300.h5") or weights="random".')
        error.cli_message = words + "(--weights /path/to/ssd300.h5) or --weights random."
        raise error
    return "imagenet"


def load_backbone(network, keras) -> None:
    """Copy VGG-16's ImageNet conv layers into the network (the SSD layers stay untrained)."""
    source = imagenet_backbone_file()
    try:
        vgg = keras.applications.VGG16(weights=source, include_top=False)
    except Exception as exc:
        raise WeightsError(f"cannot load VGG-16 ImageNet weights from {source}: {exc}") from exc
    for name in VGG_CONV_LAYERS:
        network.get_layer(name).set_weights(vgg.get_layer(name).get_weights())


def create_network(weights: str | os.PathLike[str], seed: int | None = 0):
    """The network with ``"random"``, ``"imagenet"`` (backbone only) or a weights file."""
    _, keras = _import_keras()
    text = str(weights)
    if text not in ("random", "imagenet"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights file {path} does not exist. Give a trained SSD300-VGG weights file "
                "(.h5, per layer name), 'imagenet' (VGG-16 backbone, untrained heads) or 'random'."
            )
    if seed is not None and text == "random":
        keras.utils.set_random_seed(seed)
    network = build_network(keras)
    if text == "imagenet":
        load_backbone(network, keras)
    elif text != "random":
        load_weights(network, Path(text).expanduser())
    return network


def weights_label(weights: str | os.PathLike[str]) -> str:
    """How the weights are described to the user (the ImageNet choice is not a detector)."""
    text = str(weights)
    if text == "imagenet":
        return "VGG-16 ImageNet backbone, untrained SSD heads (boxes are not meaningful)"
    return f"{text} weights"


# -- SavedModel ------------------------------------------------------------------------------


def make_detector_module(network, preprocessing: dict[str, Any]):
    """``predict_pixels`` (RGB 0..255 -> detections + raw maps) and ``serve`` (JPEG bytes)."""
    from accel_widgets.engine.models.keras_common import decoder, normalizer

    tf, _ = _import_keras()
    server = preprocessing["server"]
    size = int(server["size"])
    normalize = normalizer(tf, preprocessing["graph"])
    decode = decoder(tf, server)
    raw = raw_output_names()

    class DetectorModule(tf.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.network = net

        @tf.function(
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="pixels")]
        )
        def predict_pixels(self, pixels):
            maps = self.network(normalize(pixels), training=False)
            locations = [maps[f"{m.block}_loc"] for m in FEATURE_MAPS]
            logits = [maps[f"{m.block}_logits"] for m in FEATURE_MAPS]
            out = detect_tf(tf, locations, logits)
            out.update({key: tf.identity(maps[key]) for key, _ in raw})
            return out

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve(self, images):
            pixels = tf.map_fn(decode, images, fn_output_signature=tf.float32)
            return self.predict_pixels(pixels)

    return DetectorModule(network)


def output_configs() -> list[dict[str, Any]]:
    """The server's outputs for a detector: the 4 detection outputs, then the 12 raw maps."""
    outputs = [
        {"alias": name, "onnx_output": name, "names": [], "postprocess": "none"}
        for name in DETECTION_OUTPUTS
    ]
    # Raw maps: alias ``block4_logits``..., and the original tensor name, which the server
    # also answers under (a filterless request gets both keys; a filter picks either).
    outputs += [
        {"alias": key, "onnx_output": key, "names": [legacy], "postprocess": "none"}
        for key, legacy in raw_output_names()
    ]
    return outputs


def build_detector(
    spec: ModelSpec,
    *,
    weights: str | os.PathLike[str],
    name: str,
    workspace: Workspace,
    description: str,
    tags: dict[str, str] | None,
    seed: int | None,
    progress: Progress | None,
    cancel: CancelToken | None,
) -> ModelRecord:
    """:func:`~accel_widgets.engine.models.build.build_model` for the detector (same contract)."""
    from accel_widgets.engine.models.keras_common import labels_for, register_built

    report = as_reporter(progress, cancel)
    tf, _ = _import_keras()
    report("build", 0.2, f"creating {spec.title} with {weights_label(weights)}")
    network = create_network(weights, seed)
    report("build", 0.5, "adding JPEG decoding, preprocessing, box decoding and NMS")
    module = make_detector_module(network, spec.preprocessing())
    needed = int(spec.fp32_mb * 2**20 * 1.2)
    with workspace.staging(min_free_bytes=needed) as staged:
        report("build", 0.6, "saving the SavedModel")
        serve = module.serve.get_concrete_function()
        tf.saved_model.save(
            module,
            str(staged / "saved_model"),
            signatures={"serving_default": serve, "predict_pixels": module.predict_pixels},
        )
        report.check()
        tensors = {
            "input_alias": "images",
            "output_alias": "detection_boxes",
            "input_tensor": serve.inputs[0].name,
            "output_tensor": serve.structured_outputs["detection_boxes"].name,
            "legacy_input": LEGACY_INPUT,
            "legacy_outputs": list(spec.legacy_outputs),
        }
        model_spec = {
            "catalog": spec.to_dict(),
            "task": "detection",
            "weights": "random" if str(weights) == "random" else str(weights),
            "weights_label": weights_label(weights),
            "seed": seed if str(weights) == "random" else None,
            "preprocessing": spec.preprocessing(),
            "tensors": tensors,
            "outputs": output_configs(),
            "detection": dict(spec.extra),
            "labels": labels_for(spec, weights),
            "format": "savedmodel",
            "network": None,  # converted from the SavedModel: NMS is not a Keras layer
        }
        record = register_built(
            workspace,
            name,
            staged,
            model_spec,
            description=description or f"{spec.title}, {weights_label(weights)}",
            tags={"architecture": spec.architecture, "weights": str(weights), **(tags or {})},
            report=report,
        )
    report("register", 1.0, f"registered {record.ref}")
    return record
