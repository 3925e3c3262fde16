"""Convert: a registered TensorFlow model -> a validated ONNX artifact (and optionally INT8).

The work happens in a child process (``python -m accel_widgets.engine.conversion.convert_worker``):
TensorFlow and tf2onnx give their memory back to the OS when it exits, an out-of-memory kill
cannot take the user's kernel down, and Cancel simply ends the process. Files are written
into a workspace staging folder and registered only when the child has finished and
validated them, so a crash or a cancel leaves no half artifact.
"""

from __future__ import annotations

import json
import os
import queue as queue_module
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from accel_widgets.engine.store.workspace import ArtifactRecord, ModelRecord, Workspace
from accel_widgets.errors import CancelledError, ConversionError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

# glibc gives every thread that touches malloc its own arena (up to 8 per core); TensorFlow's
# thread pools then hold freed memory in many arenas and the converter's peak grows with the
# core count of the host rather than with the model. Two arenas keep the peak near the model's
# own size. A value the user already set wins.
_CHILD_ENV = {"MALLOC_ARENA_MAX": "2"}


def _run_child(job: Mapping[str, Any], report: Reporter, what: str) -> dict[str, Any]:
    """Run the worker on ``job`` in a fresh Python process, relaying its progress events."""
    from accel_widgets.engine.conversion.convert_worker import MARK

    out_dir = Path(job["out_dir"])
    job_file = out_dir / "job.json"
    job_file.write_text(json.dumps(dict(job)))
    log_path = out_dir / f"{what}.log"
    lines: queue_module.Queue[str | None] = queue_module.Queue()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "accel_widgets.engine.conversion.convert_worker", str(job_file)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**_CHILD_ENV, **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"},
        )
        reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
        reader.start()
        result: dict[str, Any] | None = None
        error: tuple[str, str] | None = None
        try:
            while True:
                if report.cancel is not None and report.cancel.cancelled:
                    raise CancelledError(f"{what} cancelled; nothing was registered")
                try:
                    line = lines.get(timeout=0.2)
                except queue_module.Empty:
                    continue
                if line is None:
                    break
                if not line.startswith(MARK):
                    log.write(line)
                    continue
                message = json.loads(line[len(MARK) :])
                if message[0] == "event":
                    report(message[1], message[2], message[3])
                elif message[0] == "result":
                    result = message[1]
                else:
                    error = (message[1], message[2])
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.wait()
    if error is not None:
        kind, text = error
        if kind == "memory":
            raise ConversionError(_memory_advice(what, None))
        raise ConversionError(f"{what} failed: {text.strip()}")
    if result is None:
        if process.returncode in (-signal.SIGKILL, 137):
            raise ConversionError(_memory_advice(what, process.returncode))
        tail = "".join(log_path.read_text(errors="replace").splitlines(True)[-12:])
        raise ConversionError(
            f"the {what} process stopped (exit code {process.returncode}) without a result; "
            f"the last lines of its log:\n{tail}"
        )
    return result


def _pump(stream, lines: queue_module.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _memory_advice(what: str, exitcode: int | None) -> str:
    available = psutil.virtual_memory().available / 2**30
    how = f"was killed (exit code {exitcode})" if exitcode is not None else "ran out of memory"
    return (
        f"the {what} process {how}, most likely because memory ran out "
        f"({available:.1f} GiB is available now). Close other programs or notebooks, or try a "
        "smaller model; `accel-widgets quota --target local` shows what each model needs."
    )


def convert(
    name: str | ModelRecord,
    *,
    version: int | None = None,
    quantize: str | None = None,
    workspace: Workspace | None = None,
    calibration: str | os.PathLike[str] | None = None,
    validation: str | os.PathLike[str] | None = None,
    timing_runs: int = 15,
    calibration_method: str = "minmax",
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> list[ArtifactRecord]:
    """Convert a registered model to ONNX, validate it against TensorFlow, optionally quantize.

    Parameters
    ----------
    name, version:
        The workspace model (latest version when ``version`` is None), or its record as the
        step before handed it on (no look-up again).
    quantize:
        ``None``/``"fp32"`` for float only, ``"int8"`` for float plus static INT8.
    calibration:
        A folder of typical images for INT8 calibration; default: photos kept apart from the
        validation photos (:mod:`~accel_widgets.engine.checks.check_photos`).
    validation:
        A folder of images for the validation report, labelled (one sub-folder per class, or
        ImageNet's ``WNID_*.JPEG``) to measure accuracy; default: a trained model's held-out
        pictures, the shared labelled ImageNet photos for an ImageNet classifier, else the
        bundled photos.
    calibration_method:
        ``"minmax"`` (default), ``"entropy"`` or ``"percentile"`` (engine/conversion/quantize.py).

    Returns
    -------
    list of ArtifactRecord
        The fp32 artifact, then the int8 one when asked; each ``report`` holds the differences
        against TensorFlow (or fp32), top-1 agreement and latency.
    """
    report = as_reporter(progress, cancel)
    quantize = _check_precision(quantize)
    workspace = workspace or Workspace()
    model = name if isinstance(name, ModelRecord) else workspace.get_model(name, version)
    if model.kind == "onnx":
        if quantize != "int8":
            return [workspace.get_artifact(model)]
        return [
            quantize_model(
                model,
                workspace=workspace,
                calibration=calibration,
                validation=validation,
                calibration_method=calibration_method,
                progress=report,
            )
        ]
    saved_model = model.path / "saved_model"
    if not saved_model.is_dir():
        raise ConversionError(
            f"model {model.ref} has no SavedModel at {saved_model}; register it again"
        )
    size = int(model.spec["preprocessing"]["server"]["size"])
    catalog = model.spec.get("catalog", {})
    estimate = float(catalog.get("fp32_mb", 0) or _folder_mb(saved_model))
    started = time.monotonic()
    report("convert", 0.0, f"starting the converter for {model.ref}")
    with workspace.staging(min_free_bytes=int(estimate * 2**20 * 2.5)) as staged:
        job = {
            "kind": "convert",
            "task": model.spec.get("task", "classification"),
            "saved_model": str(saved_model),
            "network": str(model.path / network)
            if (network := model.spec.get("network"))
            else None,
            "graph": model.spec["preprocessing"].get("graph"),
            "out_dir": str(staged),
            "size": size,
            "preprocessing": model.spec["preprocessing"]["server"],
            "quantize": quantize == "int8",
            "calibration_method": calibration_method,
            # A head trained on the user's classes is tiny; float keeps its answers (quantize.py).
            "float_head": model.kind == "trained",
            "timing_runs": timing_runs,
            **_check_job(model, calibration, validation),
        }
        result = _run_child(job, report, "conversion")
        for precision in ("fp32", "int8"):  # every artifact says what pixels it takes
            if precision in result:
                result[precision]["preprocessing"] = dict(job["preprocessing"])
        report("register", 0.5, "registering the converted model")
        artifacts = [
            workspace.add_artifact(model, staged / "fp32", precision="fp32", report=result["fp32"])
        ]
        if quantize == "int8":
            result["int8"]["process_peak_rss_gib"] = round(result["peak_rss_bytes"] / 2**30, 2)
            artifacts.append(
                workspace.add_artifact(
                    model, staged / "int8", precision="int8", report=result["int8"]
                )
            )
    report(
        "register",
        1.0,
        f"{model.ref}: {', '.join(a.precision for a in artifacts)} ready in "
        f"{time.monotonic() - started:.0f} s",
    )
    return artifacts


def quantize_model(
    name: str | ModelRecord,
    *,
    version: int | None = None,
    workspace: Workspace | None = None,
    calibration: str | os.PathLike[str] | None = None,
    validation: str | os.PathLike[str] | None = None,
    timing_runs: int = 15,
    calibration_method: str = "minmax",
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> ArtifactRecord:
    """Make the INT8 artifact of a model that already has a float ONNX artifact.

    Used for ONNX models brought as they are (a float16 model is upcast for calibration).
    ``name`` may be the model's record, as the step before handed it on.
    """
    report = as_reporter(progress, cancel)
    workspace = workspace or Workspace()
    model = name if isinstance(name, ModelRecord) else workspace.get_model(name, version)
    floats = [a for a in workspace.list_artifacts(model) if a.precision in ("fp32", "fp16")]
    if not floats:
        raise ConversionError(
            f"model {model.ref} has no float ONNX artifact to quantize; convert it first"
        )
    source = floats[0]
    with workspace.staging(min_free_bytes=source.size_bytes) as staged:
        job = {
            "kind": "quantize",
            "task": model.spec.get("task", "classification"),
            "fp32_onnx": str(source.file),
            "upcast_fp16": source.precision == "fp16",
            "out_dir": str(staged),
            "quantize": True,
            "preprocessing": _server_preprocessing(model),
            "calibration_method": calibration_method,
            "timing_runs": timing_runs,
            **_check_job(model, calibration, validation),
        }
        result = _run_child(job, report, "quantization")
        # An upcast float16 model's INT8 version takes float32 pixels.
        result["int8"]["preprocessing"] = {**job["preprocessing"], "dtype": "float32"}
        result["int8"]["compared_with"] = f"{source.precision.upper()} ONNX"
        result["int8"]["process_peak_rss_gib"] = round(result["peak_rss_bytes"] / 2**30, 2)
        artifact = workspace.add_artifact(
            model, staged / "int8", precision="int8", report=result["int8"]
        )
    report("register", 1.0, f"{model.ref}: int8 ready")
    return artifact


def _check_job(
    model: ModelRecord,
    calibration: str | os.PathLike[str] | None,
    validation: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """The job's photos: calibration kept apart from validation, labelled where possible."""
    from accel_widgets.engine.checks.check_photos import check_photos

    if model.spec.get("task") == "detection" and validation is None and calibration is None:
        return {}  # no labelled detection photos exist here: the bundled photos
    return check_photos(model, calibration=calibration, validation=validation).to_job()


def _server_preprocessing(model: ModelRecord) -> dict[str, Any]:
    return dict(model.spec["preprocessing"]["server"])


def _check_precision(quantize: str | None) -> str | None:
    if quantize in (None, "", "none", "fp32", "float"):
        return None
    if str(quantize).lower() == "int8":
        return "int8"
    raise ConversionError(f"unknown quantization {quantize!r}; use 'int8' or leave it out")


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
