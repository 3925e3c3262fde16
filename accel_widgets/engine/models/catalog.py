"""The model catalog: the five models of the original accelerated-models service.

Each entry says everything the later steps need without building anything: input size and
preprocessing, output names (the SavedModel alias and the tensor names users of the original
service kept in their code), labels, feature size, expected file sizes, and how much memory
converting and serving take (measured on a 2-core, 24 GiB machine; see docs/MEASUREMENTS.md).

Preprocessing follows the original graph (decode JPEG, resize the short side to 256, centre
crop 224, subtract the per-channel RGB means) and then whatever the weights were trained on:
Keras' ResNet and VGG weights expect Caffe-style BGR, DenseNet's expect torch-style scaling.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from accel_widgets.errors import CatalogError

#: Per-channel means subtracted by the original graph, in RGB order.
RGB_MEANS = (123.68, 116.779, 103.939)
#: Torch-style normalisation used by Keras' DenseNet weights (RGB, after scaling to 0..1).
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)

LEGACY_INPUT = "Placeholder:0"


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry (a float or quantized variant of an architecture)."""

    name: str
    title: str
    task: str  # "classification" | "detection"
    architecture: str  # keras.applications class, or "ssd_vgg"
    input_size: int
    resize: str  # "short_side_crop" | "stretch"
    short_side: int
    weights_mode: str  # "caffe" (BGR, means) | "torch" (RGB, /255, mean/std)
    labels: str  # "imagenet" | "voc"
    num_classes: int
    feature_size: int
    legacy_outputs: tuple[str, ...]
    keras_weights_file: str | None
    fp32_mb: float
    int8_mb: float
    convert_gib: float
    serve_gib: float
    latency_ms_fp32: float | None  # batch 1, ONNX Runtime, 2 cores (docs/FINDINGS.md)
    # The current INT8 recipe (uint8 weights), model only, batch 1, ONNX Runtime, 2 threads on
    # an AVX2 AMD EPYC (docs/MEASUREMENTS.md "INT8 on a CPU without VNNI"); None: unmeasured.
    latency_ms_int8: float | None
    quantized: bool = False
    graph_ready: bool = True  # False: the spec is here, the graph comes in a later release
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        return "int8" if self.quantized else "fp32"

    @property
    def base_name(self) -> str:
        return self.name.removeprefix("quantized-")

    @property
    def file_mb(self) -> float:
        return self.int8_mb if self.quantized else self.fp32_mb

    @property
    def expected_latency_ms(self) -> float | None:
        return self.latency_ms_int8 if self.quantized else self.latency_ms_fp32

    def preprocessing(self) -> dict[str, Any]:
        """What the graph does to pixels before the featurizer, as plain data.

        ``server`` is what the serving process does (decode, resize, crop: the ONNX model takes
        RGB pixels 0..255); ``graph`` is what the model graph itself does after that.
        """
        if self.weights_mode == "caffe":
            graph = {"mean": RGB_MEANS, "std": (1.0, 1.0, 1.0), "scale": 1.0, "to_bgr": True}
        else:
            graph = {"mean": TORCH_MEAN, "std": TORCH_STD, "scale": 1 / 255, "to_bgr": False}
        return {
            "server": {
                "size": self.input_size,
                "resize": self.resize,
                "short_side": self.short_side,
                "channel_order": "RGB",
                "layout": "NHWC",
                "dtype": "float32",
            },
            "graph": graph,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "task": self.task,
            "architecture": self.architecture,
            "input_size": self.input_size,
            "labels": self.labels,
            "num_classes": self.num_classes,
            "feature_size": self.feature_size,
            "precision": self.precision,
            "legacy_input": LEGACY_INPUT,
            "legacy_outputs": list(self.legacy_outputs),
            "preprocessing": self.preprocessing(),
        }


_BASE = [
    ModelSpec(
        name="resnet50",
        title="ResNet-50",
        task="classification",
        architecture="ResNet50",
        input_size=224,
        resize="short_side_crop",
        short_side=256,
        weights_mode="caffe",
        labels="imagenet",
        num_classes=1000,
        feature_size=2048,
        legacy_outputs=(
            "classifier/resnet_v1_50/predictions/Softmax:0",
            "classifier_1/resnet_v1_50/predictions/Softmax:0",
        ),
        keras_weights_file="resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        fp32_mb=102,
        int8_mb=26,
        convert_gib=3.0,
        serve_gib=0.35,
        latency_ms_fp32=45,
        latency_ms_int8=38,
    ),
    ModelSpec(
        name="resnet152",
        title="ResNet-152",
        task="classification",
        architecture="ResNet152",
        input_size=224,
        resize="short_side_crop",
        short_side=256,
        weights_mode="caffe",
        labels="imagenet",
        num_classes=1000,
        feature_size=2048,
        legacy_outputs=("classifier/resnet_v1_152/predictions/Softmax:0",),
        keras_weights_file="resnet152_weights_tf_dim_ordering_tf_kernels.h5",
        fp32_mb=240,
        int8_mb=61,
        convert_gib=4.0,
        serve_gib=0.7,
        latency_ms_fp32=130,
        latency_ms_int8=108,
    ),
    ModelSpec(
        name="densenet121",
        title="DenseNet-121",
        task="classification",
        architecture="DenseNet121",
        input_size=224,
        resize="short_side_crop",
        short_side=256,
        weights_mode="torch",
        labels="imagenet",
        num_classes=1000,
        feature_size=1024,
        legacy_outputs=("classifier/densenet121/predictions/Softmax:0",),
        keras_weights_file="densenet121_weights_tf_dim_ordering_tf_kernels.h5",
        fp32_mb=32,
        int8_mb=9,
        convert_gib=3.0,
        serve_gib=0.25,
        latency_ms_fp32=33,
        latency_ms_int8=None,
    ),
    ModelSpec(
        name="vgg16",
        title="VGG-16",
        task="classification",
        architecture="VGG16",
        input_size=224,
        resize="short_side_crop",
        short_side=256,
        weights_mode="caffe",
        labels="imagenet",
        num_classes=1000,
        feature_size=4096,
        legacy_outputs=("classifier/vgg_16/fc8/squeezed:0",),
        keras_weights_file="vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        fp32_mb=553,
        int8_mb=139,
        convert_gib=6.0,
        serve_gib=1.2,
        latency_ms_fp32=163,
        latency_ms_int8=None,
    ),
    ModelSpec(
        name="ssd_vgg",
        title="SSD-VGG (object detection, Pascal VOC)",
        task="detection",
        architecture="ssd_vgg",
        input_size=300,
        resize="stretch",
        short_side=300,
        weights_mode="caffe",
        labels="voc",
        num_classes=21,
        feature_size=512,
        legacy_outputs=tuple(
            f"ssd_300_vgg/{block}_box/Reshape{suffix}:0"
            for suffix in ("_1", "")
            for block in ("block4", "block7", "block8", "block9", "block10", "block11")
        ),
        keras_weights_file=None,
        fp32_mb=100,
        int8_mb=26,
        convert_gib=4.0,
        serve_gib=0.6,
        latency_ms_fp32=None,
        latency_ms_int8=None,
        graph_ready=True,
        notes=(
            "300x300 input, 6 feature maps (grids 37/19/10/5/3/1, 4/6/6/6/4/4 anchors per cell, "
            "8,432 anchors), background + 20 VOC classes, boxes [ymin, xmin, ymax, xmax] "
            "decoded with variances 0.1/0.2, score threshold 0.5, top 400, per-class NMS at "
            "IoU 0.45, all in the graph (engine/models/ssd.py). Outputs detection_boxes, "
            "detection_classes, detection_scores, num_detections, and the 12 raw tensors "
            "under their original names. Weights: random, 'imagenet' (VGG-16 backbone, "
            "untrained heads) or a trained SSD300 file by layer name."
        ),
        extra={
            "grids": (37, 19, 10, 5, 3, 1),
            "anchors_per_cell": (4, 6, 6, 6, 4, 4),
            "num_anchors": 8432,
            "variances": (0.1, 0.1, 0.2, 0.2),
            "score_threshold": 0.5,
            "top_k": 400,
            "nms_iou": 0.45,
        },
    ),
]


def _with_quantized(specs: list[ModelSpec]) -> dict[str, ModelSpec]:
    catalog: dict[str, ModelSpec] = {}
    for spec in specs:
        catalog[spec.name] = spec
        quantized = replace(
            spec, name=f"quantized-{spec.name}", title=f"{spec.title} (INT8)", quantized=True
        )
        catalog[quantized.name] = quantized
    return catalog


CATALOG: dict[str, ModelSpec] = _with_quantized(_BASE)

#: The names the original service's SDK used, mapped to ours.
ALIASES = {
    "quantizedresnet50": "quantized-resnet50",
    "quantizedresnet152": "quantized-resnet152",
    "quantizeddensenet121": "quantized-densenet121",
    "quantizedvgg16": "quantized-vgg16",
    "quantizedssdvgg": "quantized-ssd_vgg",
    "ssdvgg": "ssd_vgg",
    "ssd-vgg": "ssd_vgg",
}


def quantize_for(spec: ModelSpec, asked: str | None) -> str | None:
    """The quantization a build of ``spec`` gets: a quantized catalog name means INT8.

    ``quantized-resnet50`` names the INT8 variant, so asking for it without ``quantize``
    still makes the INT8 artifact. The CLI, the notebook walk and the widgets share this rule.
    """
    return "int8" if spec.quantized and asked is None else asked


def get_spec(name: str | ModelSpec) -> ModelSpec:
    """Look a model up by name (case and the original SDK's spellings are forgiven).

    A :class:`ModelSpec` is returned as it is: a step that already holds the catalog entry
    hands it down instead of its name, which every level would look up again.

    Raises
    ------
    CatalogError
        Unknown names; the message lists the whole catalog.
    """
    if isinstance(name, ModelSpec):
        return name
    key = str(name).strip().lower().replace(" ", "")
    key = ALIASES.get(key, key)
    if key in CATALOG:
        return CATALOG[key]
    raise CatalogError(
        f"unknown model {name!r}. The catalog has: {', '.join(CATALOG)}. "
        "To use a model of your own, register it (a Keras model, a SavedModel folder or an "
        "ONNX file) with `accel-widgets register`."
    )


def list_specs(include_quantized: bool = True) -> list[ModelSpec]:
    return [s for s in CATALOG.values() if include_quantized or not s.quantized]
