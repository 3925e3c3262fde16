"""The child process side of conversion: TensorFlow -> ONNX -> validation -> INT8.

It runs as ``python -m accel_widgets.engine.conversion.convert_worker JOB.json`` so that
TensorFlow's and tf2onnx's memory goes back to the operating system when it ends, an
out-of-memory kill cannot take the user's kernel with it, and no user script is re-imported (as
multiprocessing's ``spawn`` would do). It answers on stdout with JSON lines that start with
:data:`MARK`: ``["event", step, fraction, message]``, ``["result", dict]`` or
``["error", kind, message]``; anything else on stdout or stderr is TensorFlow's chatter and
goes to the log.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from accel_widgets.engine.conversion.onnx_steps import (
    forward_tf2onnx_logs,
    patch_tf2onnx_memory,
    quantize_and_run,
    validation_photos,
)

OPSET = 17
ONNX_INPUT = "pixels"
ONNX_OUTPUT = "output_alias"
MARK = "@@accel-widgets@@ "


class _Channel:
    """Writes protocol lines to the real stdout, whatever TensorFlow does to ``sys.stdout``."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "w", buffering=1)

    def put(self, message: list[Any] | tuple[Any, ...]) -> None:
        self._out.write(MARK + json.dumps(list(message)) + "\n")
        self._out.flush()


class _Emitter:
    def __init__(self, queue) -> None:
        self.queue = queue

    def __call__(self, step: str, fraction: float | None, message: str) -> None:
        self.queue.put(("event", step, fraction, message))


def rename_io(model, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """Give the ONNX graph's inputs and outputs the names the rest of the kit uses."""
    mapping = {**inputs, **outputs}
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        if value.name in mapping:
            value.name = mapping[value.name]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]


def convert_saved_model(saved_model: Path, onnx_path: Path, size: int, emit: _Emitter) -> None:
    """tf2onnx on the SavedModel's ``predict_pixels`` function, written to ``onnx_path``."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    patch_tf2onnx_memory()
    emit("convert", 0.05, "loading the SavedModel")
    loaded = tf.saved_model.load(str(saved_model))
    function = loaded.predict_pixels
    spec = [tf.TensorSpec([None, size, size, 3], tf.float32, name=ONNX_INPUT)]
    with forward_tf2onnx_logs(emit):
        emit("convert", 0.1, f"converting to ONNX (opset {OPSET}) with tf2onnx")
        model_proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=OPSET)
    del loaded, function
    gc.collect()
    rename_io(
        model_proto,
        {model_proto.graph.input[0].name: ONNX_INPUT},
        {model_proto.graph.output[0].name: ONNX_OUTPUT},
    )
    emit("convert", 0.8, "checking and saving the ONNX model")
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(onnx_path))


def convert_keras_network(
    network_path: Path, graph: dict[str, Any], onnx_path: Path, size: int, emit: _Emitter
) -> None:
    """The low-memory path: trace the Keras network with its weights as inputs.

    TensorFlow, grappler and tf2onnx then see a graph of a few MB instead of one holding every
    weight (VGG-16: 2.0 GB peak instead of 13 GB); see
    :mod:`accel_widgets.engine.conversion.lowmem`.
    """
    import keras
    import onnx
    import tensorflow as tf

    from accel_widgets.engine.conversion.lowmem import convert_keras_lowmem
    from accel_widgets.engine.models.build import pixel_model

    emit("convert", 0.05, f"loading the Keras network {network_path.name}")
    network = keras.models.load_model(network_path, compile=False)
    model = pixel_model(network, graph, size)
    spec = [tf.TensorSpec([None, size, size, 3], tf.float32, name=ONNX_INPUT)]
    with forward_tf2onnx_logs(emit):
        emit("convert", 0.1, f"converting to ONNX (opset {OPSET}), weights kept out of the graph")
        stats = convert_keras_lowmem(
            model, str(onnx_path), opset=OPSET, input_signature=spec, output_names=[ONNX_OUTPUT]
        )
    emit(
        "convert",
        0.8,
        f"{stats['nodes']} ONNX nodes, {stats['initializers']} weight tensors; checking the file",
    )
    onnx.checker.check_model(str(onnx_path))


#: TensorFlow runs on this many validation photos (its outputs are compared with ONNX
#: Runtime's to 1e-5; more photos add TensorFlow's 60-75 ms a photo and prove nothing more).
FIDELITY_PHOTOS = 32


class CheckSet:
    """The validation photos of a job, decoded once: inputs, labels, and what was skipped.

    A photo that cannot be decoded (a corrupt file in a user's folder) is skipped and named
    in the report rather than failing a conversion that took minutes.
    """

    def __init__(self, job: dict[str, Any], pre: Any) -> None:
        from accel_widgets.errors import ImageError
        from accel_widgets.preprocess import prepare

        given = job.get("validation")
        labels = given.get("labels") if given else None
        self.photos = []
        self.inputs: list[np.ndarray] = []
        self.labels: list[int] | None = [] if labels is not None else None
        self.skipped = [list(s) for s in job.get("skipped", [])]
        for i, photo in enumerate(validation_photos(job)):
            try:
                self.inputs.append(prepare(photo.data, pre))
            except ImageError as exc:
                self.skipped.append([photo.name, str(exc)])
                continue
            self.photos.append(photo)
            if self.labels is not None:
                self.labels.append(int(labels[i]))
        if not self.inputs:
            raise ConversionErrorInWorker("none of the validation photos could be decoded")
        self.source = job.get("validation_source") or "the bundled photos"

    def accuracy(self, outputs: list[np.ndarray]) -> dict[str, Any] | None:
        """Top-1/top-5 on the labelled photos, or None when they carry no labels."""
        from accel_widgets.engine.checks.accuracy import accuracy

        if not self.labels:
            return None
        return accuracy(outputs, self.labels, photos=self.source, skipped=self.skipped)


class ConversionErrorInWorker(Exception):
    """A conversion problem found in the child, reported in the user's words."""


def validate_against_tf(
    saved_model: Path, onnx_path: Path, job: dict[str, Any], emit: _Emitter
) -> tuple[dict[str, Any], CheckSet, list[np.ndarray]]:
    """Compare TF and ONNX Runtime on real photos (same pixels, and JPEG end to end), and
    measure accuracy where the photos are labelled. Returns the report, the decoded photos
    and ONNX Runtime's outputs on all of them (the INT8 check reuses both)."""
    import tensorflow as tf

    from accel_widgets.engine.checks.accuracy import accuracy_text
    from accel_widgets.engine.clients.timing import measure_interleaved
    from accel_widgets.engine.conversion.validate import compare, file_mb, onnx_session
    from accel_widgets.preprocess import Preprocessing

    pre = Preprocessing.from_dict(job["preprocessing"])
    checks = CheckSet(job, pre)
    inputs = checks.inputs
    few = inputs[:FIDELITY_PHOTOS]
    emit("validate", 0.1, f"running TensorFlow and ONNX Runtime on {len(few)} photos")
    loaded = tf.saved_model.load(str(saved_model))
    pixel_fn = loaded.signatures["predict_pixels"]
    serve_fn = loaded.signatures["serving_default"]
    session = onnx_session(onnx_path)
    tf_out = [next(iter(pixel_fn(pixels=tf.constant(x)).values())).numpy() for x in few]
    ort_out = []
    for i, x in enumerate(inputs):
        ort_out.append(session.run(None, {ONNX_INPUT: x})[0])
        if i % 50 == 49:
            emit(
                "validate",
                0.1 + 0.3 * i / len(inputs),
                f"ONNX Runtime: photo {i + 1}/{len(inputs)}",
            )
    emit("validate", 0.5, "comparing with the SavedModel's own JPEG decoding")
    tf_e2e = [
        serve_fn(images=tf.constant([p.data]))["output_alias"].numpy()
        for p in checks.photos[:FIDELITY_PHOTOS]
    ]
    emit("validate", 0.7, "timing ONNX Runtime against TensorFlow, batch 1")
    x = inputs[0]
    constant = tf.constant(x)
    timings = measure_interleaved(
        {
            "onnxruntime": lambda: session.run(None, {ONNX_INPUT: x}),
            "tensorflow": lambda: pixel_fn(pixels=constant),
        },
        runs=int(job.get("timing_runs", 15)),
    )
    report = {
        "precision": "fp32",
        "format": "onnx",
        "opset": OPSET,
        "size_mb": file_mb(onnx_path),
        "photos": [p.name for p in checks.photos],
        "validation": checks.source,
        "vs_tensorflow": compare(tf_out, ort_out[: len(few)]),
        "vs_tensorflow_jpeg": compare(tf_e2e, ort_out[: len(few)]),
        "latency": timings,
        "latency_ratio_ort_vs_tf": round(
            timings["onnxruntime"]["p50_ms"] / timings["tensorflow"]["p50_ms"], 3
        ),
        "predictions": [int(np.argmax(o)) for o in ort_out],
    }
    if (acc := checks.accuracy(ort_out)) is not None:
        report["accuracy"] = acc
        emit("validate", 0.85, f"fp32 {accuracy_text(acc)}")
    # Whether OpenVINO may serve this model in bf16 (engine/conversion/bf16_check.py).
    from accel_widgets.engine.conversion.bf16_check import bf16_check

    emit("validate", 0.9, "checking OpenVINO bf16 against fp32 on the photos")
    report["bf16"] = bf16_check(onnx_path, inputs, ort_out, checks.labels)
    emit("validate", 1.0, _summary(report))
    return report, checks, ort_out


def quantize_and_validate(
    fp32_path: Path,
    int8_path: Path,
    job: dict[str, Any],
    emit: _Emitter,
    checks: CheckSet | None = None,
    fp32_out: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """INT8 from ``fp32_path`` calibrated on real photos, compared with fp32 and, on labelled
    photos, measured; the report's ``gate`` says whether it is recommended
    (:mod:`~accel_widgets.engine.checks.verdicts`)."""
    from accel_widgets.engine.checks.verdicts import int8_gate
    from accel_widgets.engine.conversion.bf16_check import bf16_check
    from accel_widgets.engine.conversion.quantize import recipe_text
    from accel_widgets.engine.conversion.validate import compare
    from accel_widgets.preprocess import Preprocessing

    def scores(session, inputs) -> list[np.ndarray]:
        name = session.get_inputs()[0].name
        return [session.run(None, {name: x.astype(np.float32)})[0] for x in inputs]

    if checks is None:
        checks = CheckSet(job, Preprocessing.from_dict(job["preprocessing"]))
    per_channel = bool(job.get("per_channel", True))
    method = job.get("calibration_method", "minmax")
    report, fp32_out, int8_out = quantize_and_run(
        fp32_path,
        int8_path,
        job,
        emit,
        what="the model",
        quantization=recipe_text(per_channel, method),
        run=scores,
        inputs=checks.inputs,
        fp32_out=fp32_out,
        per_channel=per_channel,
        method=method,
        float_head=bool(job.get("float_head")),
    )
    if job.get("float_head"):
        report["quantization"] += "; dense head kept in float"
    report["photos"] = [p.name for p in checks.photos]
    report["vs_fp32"] = compare(fp32_out, int8_out)
    report["predictions"] = [int(np.argmax(o)) for o in int8_out]
    fp32_accuracy = checks.accuracy(fp32_out)
    if fp32_accuracy is not None:
        report["accuracy"] = checks.accuracy(int8_out)
        report["fp32_accuracy"] = {k: v for k, v in fp32_accuracy.items() if k != "predicted"}
    report["gate"] = int8_gate(report, fp32_accuracy)
    emit("quantize", 0.9, "checking OpenVINO bf16 on the INT8 model")
    report["bf16"] = bf16_check(int8_path, checks.inputs, int8_out, checks.labels)
    emit("quantize", 1.0, _summary(report))
    return report


def _summary(report: dict[str, Any]) -> str:
    from accel_widgets.engine.checks.verdicts import artifact_check

    if report["precision"] == "int8":
        cmp = report["vs_fp32"]
        check = artifact_check(report, "int8")
        return (
            f"INT8 {report['size_mb']} MB, {report['latency_ratio_int8_vs_fp32']:.2f}x fp32 "
            f"latency, top-1 agrees with fp32 on {cmp['top1_agree_count']}/{cmp['n_images']}; "
            f"{check.symbol} {check.text}"
        )
    cmp = report["vs_tensorflow"]
    return (
        f"max |TF - ONNX| {cmp['max_abs_diff']:.2e}, top-1 agrees on "
        f"{cmp['top1_agree_count']}/{cmp['n_images']}, ONNX Runtime "
        f"{report['latency']['onnxruntime']['p50_ms']:.1f} ms p50"
    )


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(job: dict[str, Any], queue: _Channel) -> None:
    """Do the job; never raises, always answers on ``queue``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    emit = _Emitter(queue)
    started = time.monotonic()
    try:
        out = Path(job["out_dir"])
        result: dict[str, Any] = {}
        if job["kind"] == "convert":
            fp32_dir = out / "fp32"
            fp32_dir.mkdir(parents=True, exist_ok=True)
            fp32_path = fp32_dir / "model.onnx"
            if job.get("task") == "detection":  # SSD: 16 outputs, NMS in the graph
                from accel_widgets.engine.conversion.ssd_convert import convert_detector

                convert_detector(Path(job["saved_model"]), fp32_path, job["size"], emit)
            elif job.get("network"):
                convert_keras_network(
                    Path(job["network"]), job["graph"], fp32_path, job["size"], emit
                )
            else:
                convert_saved_model(Path(job["saved_model"]), fp32_path, job["size"], emit)
            result["convert_seconds"] = round(time.monotonic() - started, 1)
            result["convert_peak_rss_bytes"] = peak_rss_bytes()
            gc.collect()
            if job.get("task") == "detection":
                from accel_widgets.engine.conversion.ssd_convert import validate_detector

                report = validate_detector(Path(job["saved_model"]), fp32_path, job, emit)
            else:
                report, checks, fp32_out = validate_against_tf(
                    Path(job["saved_model"]), fp32_path, job, emit
                )
            report["convert_seconds"] = result["convert_seconds"]
            report["convert_peak_rss_gib"] = round(result["convert_peak_rss_bytes"] / 2**30, 2)
            (fp32_dir / "report.json").write_text(json.dumps(report, indent=2))
            result["fp32"] = report
        else:
            fp32_path = Path(job["fp32_onnx"])
        if job.get("quantize"):
            if job.get("task") == "detection" or job["kind"] != "convert":
                checks, fp32_out = None, None
            int8_dir = out / "int8"
            int8_dir.mkdir(parents=True, exist_ok=True)
            source = fp32_path
            if job.get("upcast_fp16"):
                from accel_widgets.engine.conversion.quantize import upcast_fp16

                emit("quantize", 0.02, "float16 model: upcasting to float32 for calibration")
                source = out / "upcast-fp32.onnx"
                upcast_fp16(fp32_path, source)
            if job.get("task") == "detection":
                from accel_widgets.engine.conversion.ssd_convert import quantize_detector

                report = quantize_detector(source, int8_dir / "model.onnx", job, emit)
            else:
                report = quantize_and_validate(
                    source, int8_dir / "model.onnx", job, emit, checks, fp32_out
                )
            if source != fp32_path:
                source.unlink()
            (int8_dir / "report.json").write_text(json.dumps(report, indent=2))
            result["int8"] = report
        result["seconds"] = round(time.monotonic() - started, 1)
        result["peak_rss_bytes"] = peak_rss_bytes()
        queue.put(("result", result))
    except MemoryError:
        queue.put(("error", "memory", "ran out of memory"))
    except ConversionErrorInWorker as exc:
        queue.put(("error", "accel", str(exc)))
    except Exception as exc:
        from accel_widgets.errors import AccelError

        kind = "accel" if isinstance(exc, AccelError) else type(exc).__name__
        queue.put(("error", kind, f"{exc}\n{traceback.format_exc(limit=6)}"))


if __name__ == "__main__":
    channel = _Channel()
    sys.stdout = sys.stderr  # stray prints must not look like protocol lines
    run(json.loads(Path(sys.argv[1]).read_text()), channel)
