"""Static INT8 quantization with ONNX Runtime, calibrated on real photos.

The format is QDQ with uint8 activations and **uint8 weights** (U8U8). Calibration uses the
server's own preprocessing on real photos, so the activation ranges are the ones the service
will see.

Why uint8 weights, when int8 weights (U8S8) are ONNX Runtime's fast path: a CPU without VNNI
(AVX2, or AVX-512 without VNNI) multiplies uint8 activations by int8 weights with
``vpmaddubsw``, whose 16-bit pair sums saturate. With full-range int8 weights the real
SqueezeNet's INT8 agreed with fp32 on only 77.3 % of 400 held-out photos under ONNX Runtime on
such a CPU (AMD EPYC, AVX2 only), 83.3 % under OpenVINO, against 95.8 % on a VNNI CPU: what the
check measured where the model was quantized did not hold where it was served. Two fixes that
cannot saturate were measured there: 7-bit int8 weights (``reduce_range``) agreed 93.5 % on
SqueezeNet but only 75 % on a random-weight DenseNet-121 (the CLI test's 5/6 floor); uint8
weights agreed 97.0 % on SqueezeNet and passed DenseNet, at 4.7 against 4.0 ms per photo
(docs/MEASUREMENTS.md, "INT8 on a CPU without VNNI"; OpenVINO's "Saturation (overflow) issue"
page describes the same overflow). Right answers on every CPU come first: U8S8 was the
fastest format on a VNNI CPU (ResNet-50 12.8 against 40.4 ms fp32, docs/FINDINGS.md), and
U8U8's speed there is not yet measured.

Weights are quantized **per channel** by default: on the real SqueezeNet sample (U8S8 on the
VNNI CPU, before the switch to uint8 weights), calibrated on 100 labelled ImageNet photos and
checked on 400 others, per-tensor weights agreed with fp32 on 93.3 % of photos and lost 1.25
points of top-1, per-channel weights agreed on 95.8 % and lost 0.25 (docs/MEASUREMENTS.md,
"INT8 recipes"). Histogram calibration (entropy, percentile) was no better there and took 10x
as long, so MinMax stays the default.

Two fixes to ONNX Runtime's input are made here, both found on the real sample:

* nodes without a name get one, or ``nodes_to_exclude`` cannot name the Softmax that must
  stay float;
* models below opset 13 are converted up first: per-channel ``DequantizeLinear`` needs the
  ``axis`` attribute of opset 13 (the opset-7 sample would not load otherwise).

``CalibMaxIntermediateOutputs`` is never set: in ONNX Runtime 1.32 the MinMax calibrator
drops what it collected each time that limit is reached, so all but the last few photos
would be ignored (and a count divisible by it fails with "No data is collected").
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from accel_widgets.errors import ConversionError


def upcast_fp16(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Rewrite a float16 ONNX model as float32 so it can be calibrated and quantized.

    Initializers, graph inputs/outputs and value infos become float32, and ``Cast`` nodes to
    float16 cast to float32 instead: the network computes the same function at full precision.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT16:
            array = numpy_helper.to_array(init).astype(np.float32)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(array, init.name))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type == TensorProto.FLOAT16:
            tensor_type.elem_type = TensorProto.FLOAT
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                attr.i = TensorProto.FLOAT
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                array = numpy_helper.to_array(attr.t).astype(np.float32)
                attr.t.CopyFrom(numpy_helper.from_array(array))
    onnx.save(model, str(target))


class _PhotoReader:
    """The calibration data reader ORT asks for: one ``{input: array}`` feed per photo."""

    def __init__(self, input_name: str, inputs: Sequence[np.ndarray], tick: Callable[[], None]):
        self._feeds = iter([{input_name: x.astype(np.float32)} for x in inputs])
        self._tick = tick

    def get_next(self):
        feed = next(self._feeds, None)
        if feed is not None:
            self._tick()
        return feed


#: Calibration methods a user may ask for; MinMax is the default (see the module docstring).
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: Histogram calibration (entropy, percentile) keeps every activation of every photo in memory:
#: ResNet-50 on 200 photos reached 23 GB and was killed here. It calibrates on this many.
HISTOGRAM_PHOTOS = 32
MIN_OPSET = 13


def recipe_text(per_channel: bool, method: str) -> str:
    """The recipe in words, as reports store it."""
    weights = "per channel" if per_channel else "per tensor"
    return f"static QDQ, uint8 activations, uint8 weights {weights}, {method} calibration"


def _prepare_graph(source: Path, target: Path) -> None:
    """Name unnamed nodes and lift old opsets to 13 (see the module docstring)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(source))
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        model = version_converter.convert_version(model, MIN_OPSET)
    onnx.save(model, str(target))


def quantize_static_int8(
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    calibration_inputs: Sequence[np.ndarray],
    *,
    tick: Callable[[], None] = lambda: None,
    op_types: Sequence[str] | None = None,
    symbolic_shapes: bool = True,
    per_channel: bool = True,
    method: str = "minmax",
    float_head: bool = False,
) -> None:
    """Quantize ``fp32_path`` to ``int8_path`` (QDQ, U8 activations, U8 weights).

    ``float_head=True`` keeps the dense layers (MatMul, Gemm) in float: for a head trained on
    a user's classes it is a few kB of weights, and on ten digits over a random-weight
    ResNet-50 it raised agreement with fp32 from 87.5 % to 95 % of held-out pictures
    (docs/MEASUREMENTS.md, "INT8 recipes").

    ``op_types`` limits quantization to those ops (the detector: its conv tower, so decoding
    and NMS stay float); ``symbolic_shapes=False`` skips ORT's symbolic shape inference,
    which writes wrong ranks into SSD's NMS subgraph (the calibration model then fails to
    load: "All inputs to Concat must have same rank").
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ConversionError(
            f"unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}"
        )
    if len(calibration_inputs) < 2:
        raise ConversionError(
            f"quantization needs at least 2 calibration images, got {len(calibration_inputs)}; "
            "give a folder with 8 or more typical photos"
        )
    with tempfile.TemporaryDirectory(dir=Path(int8_path).parent) as scratch:
        named = Path(scratch) / "named.onnx"
        _prepare_graph(Path(fp32_path), named)
        graph = onnx.load(str(named), load_external_data=False).graph
        # Old models (IR < 4) list their weights among the graph inputs too.
        weights = {init.name for init in graph.initializer}
        input_name = next(i.name for i in graph.input if i.name not in weights)
        # Softmax outputs of a 1000-class model sit near 1e-3: 8 bits of [0, 1] flatten them
        # to zero and every image gets class 0. Softmax is cheap, so it stays in float.
        float_ops = {"Softmax", "MatMul", "Gemm"} if float_head else {"Softmax"}
        keep_float = [node.name for node in graph.node if node.op_type in float_ops]
        if method != "minmax":
            calibration_inputs = calibration_inputs[:HISTOGRAM_PHOTOS]
        prepared = Path(scratch) / "prepared.onnx"
        try:
            quant_pre_process(str(named), str(prepared), skip_symbolic_shape=not symbolic_shapes)
        except Exception:  # symbolic shape inference fails on some exotic graphs
            quant_pre_process(str(named), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            _PhotoReader(input_name, calibration_inputs, tick),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8,  # no saturation on CPUs without VNNI (above)
            per_channel=per_channel,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[method],
            nodes_to_exclude=keep_float,
            op_types_to_quantize=list(op_types) if op_types else None,
        )
