"""What both converters' child-process sides share: the classifier's
(:mod:`~accel_widgets.engine.conversion.convert_worker`) and the detector's
(:mod:`~accel_widgets.engine.conversion.ssd_convert`).

tf2onnx's log lines as live progress, its optimizer's copies freed after each pass, the job's
validation and calibration photos, and an INT8 model quantized, run and timed beside fp32.
They live here so the detector's side never imports the worker that dispatches to it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: ``emit(step, fraction, message)``: a progress event on the worker's protocol channel.
Emit = Callable[[str, "float | None", str], None]


class _LogForwarder(logging.Handler):
    """tf2onnx logs what it does; forward those lines as live progress."""

    def __init__(self, emit: Emit, step: str) -> None:
        super().__init__(level=logging.INFO)
        self.emit_event = emit
        self.step = step

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip().splitlines()[0][:160] if record.msg else ""
        if message:
            self.emit_event(self.step, None, message)


@contextlib.contextmanager
def forward_tf2onnx_logs(emit: Emit) -> Iterator[None]:
    """While converting, tf2onnx's log lines become live "convert" progress events."""
    handler = _LogForwarder(emit, "convert")
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def patch_tf2onnx_memory() -> None:
    """Free each optimizer pass's deep copy at once (VGG-16: out of memory -> 13.6 GB peak).

    tf2onnx deep-copies the graph before every optimizer pass and the copies live until the
    garbage collector's next generation-2 sweep; collecting after each pass frees them.
    """
    from tf2onnx.optimizer.optimizer_base import GraphOptimizerBase

    if getattr(GraphOptimizerBase.optimize, "_accel_patched", False):
        return
    original = GraphOptimizerBase.optimize

    def optimize(self, graph, iteration):
        try:
            return original(self, graph, iteration)
        finally:
            gc.collect()

    optimize._accel_patched = True  # type: ignore[attr-defined]
    GraphOptimizerBase.optimize = optimize


def quantize_and_run(
    fp32_path: Path,
    int8_path: Path,
    job: dict[str, Any],
    emit: Any,
    *,
    what: str,
    quantization: str,
    run: Any,
    inputs: list[np.ndarray] | None = None,
    fp32_out: Any = None,
    **options: Any,
) -> tuple[dict[str, Any], Any, Any]:
    """Calibrate on real photos, quantize ``fp32_path`` into ``int8_path``, then run both on
    the validation photos and time them, interleaved.

    Returns the report fields every INT8 artifact shares and both models' outputs, as
    ``run(session, inputs)`` gives them; the caller adds its own comparison (top-1 for a
    classifier, matched detections for SSD). ``inputs`` and ``fp32_out`` are the validation
    photos and fp32's outputs on them when the caller has them already (a conversion has
    just run fp32 on them). ``options`` go to ``quantize_static_int8``.
    """
    from accel_widgets.engine.clients.timing import measure_interleaved
    from accel_widgets.engine.conversion.quantize import quantize_static_int8
    from accel_widgets.engine.conversion.validate import file_mb, onnx_session, photo_inputs
    from accel_widgets.preprocess import Preprocessing

    pre = Preprocessing.from_dict(job["preprocessing"])
    calibration = calibration_photos(job)
    calibration_inputs = photo_inputs(calibration, pre)
    done = [0]

    def tick() -> None:
        done[0] += 1
        emit(
            "quantize",
            0.1 + 0.6 * done[0] / len(calibration_inputs),
            f"calibrating on image {done[0]}/{len(calibration_inputs)}",
        )

    emit("quantize", 0.05, f"quantizing {what} to INT8 with {len(calibration)} calibration photos")
    quantize_static_int8(fp32_path, int8_path, calibration_inputs, tick=tick, **options)
    emit("quantize", 0.75, "comparing INT8 with fp32 on real photos")
    if inputs is None:
        inputs = photo_inputs(validation_photos(job), pre)
    fp32 = onnx_session(fp32_path)
    int8 = onnx_session(int8_path)
    if fp32_out is None:
        fp32_out = run(fp32, inputs)
    int8_out = run(int8, inputs)
    name = fp32.get_inputs()[0].name
    x = inputs[0].astype(np.float32)
    timings = measure_interleaved(
        {"int8": lambda: int8.run(None, {name: x}), "fp32": lambda: fp32.run(None, {name: x})},
        runs=int(job.get("timing_runs", 15)),
    )
    report = {
        "precision": "int8",
        "format": "onnx",
        "quantization": quantization,
        "calibration": job.get("calibration_source") or "the bundled photos",
        "calibration_images": len(calibration),
        "calibration_disjoint": bool(job.get("calibration_disjoint")),
        "validation": job.get("validation_source") or "the bundled photos",
        "size_mb": file_mb(int8_path),
        "fp32_size_mb": file_mb(fp32_path),
        "latency": timings,
        "latency_ratio_int8_vs_fp32": round(
            timings["int8"]["p50_ms"] / timings["fp32"]["p50_ms"], 3
        ),
    }
    return report, fp32_out, int8_out


def _photo_files(files: list[str]):
    from accel_widgets.engine.checks.samples import Photo

    return [Photo(Path(f).name, Path(f).read_bytes(), "") for f in files]


def validation_photos(job: dict[str, Any]):
    """The job's validation photos (``Photo`` objects); the bundled ones when none are given."""
    from accel_widgets.engine.checks.samples import sample_photos

    given = job.get("validation")
    return _photo_files(given["files"]) if given else sample_photos()


def calibration_photos(job: dict[str, Any]):
    """The job's calibration photos; the bundled ones when none are given."""
    from accel_widgets.engine.checks.samples import sample_photos

    given = job.get("calibration")
    return _photo_files(given["files"]) if given else sample_photos()
