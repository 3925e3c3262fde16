"""OpenVINO as the server's second runtime, behind the ONNX Runtime session's interface.

:class:`OpenVinoSession` reads the same ONNX artifact (``core.read_model``; an INT8 QDQ model
runs as INT8) and answers the calls :class:`~accel_widgets.serving.model.LoadedModel` makes
on an ONNX Runtime session (``get_inputs``, ``get_outputs``, ``run``, ``get_providers``), so
the model layer, batching and both front ends do not know which runtime serves.

Decisions, measured on this project's 2-vCPU VMs (figures in ``bench/bench_runtimes.py``):

* **Batch 1 is compiled with a static shape.** The latency path is batch 1; OpenVINO's CPU
  plugin ran the dynamic-batch compile of DenseNet-121 INT8 at 20.9 ms vs 15.9 ms static
  (AMD EPYC, 2026-11-30). A request with several rows runs on a second, dynamic-batch
  compile made only when batching is on (``dynamic_batch``); otherwise rows run one by one
  on the static one (8 rows on the dynamic compile cost more per row than 8 static runs).
* **Precision: f32 unless bf16 was validated.** On CPUs with bf16 (AVX512-BF16 or AMX;
  this AMD EPYC has AVX512-BF16) OpenVINO's *default* ``INFERENCE_PRECISION_HINT`` is bf16,
  which silently changes a model's numbers. The server always sets the hint: ``bf16`` only
  when the model config says bf16 agreed with fp32 on the real photos (``ModelConfig.bf16``)
  *and* the CPU reports ``BF16`` in ``OPTIMIZATION_CAPABILITIES``; ``f32`` otherwise, with
  the reason recorded. INT8 layers stay INT8 under either hint.
* **Threads from the server config**: ``INFERENCE_NUM_THREADS`` = ``threads`` or the CPUs in
  the affinity mask, one stream (``PERFORMANCE_HINT: LATENCY``). OpenVINO has no spinning
  switch like ONNX Runtime's; its TBB workers sleep on their own.
* **Compiled models are cached on disk** (``CACHE_DIR`` in the user's cache folder, see
  :func:`cache_dir`): compiling ResNet-50 INT8 took 1.6-1.7 s and a cached start 0.6 s
  (2-vCPU AMD EPYC under load, 2026-11-30), which is most of ``auto``'s extra start-up.
  OpenVINO keys the blobs by model, device and settings, and recompiles after an upgrade.
* **Infer requests from a pool**: an ``InferRequest`` is not thread-safe, so concurrent
  ``run`` calls each take one (made on demand), which also keeps batching's worker and a
  warm-up from sharing one.

* **Imported without its conversion tools, so a server never forks or phones home**
  (:func:`import_openvino`).

``openvino`` is an optional dependency (``pip install 'accel-widgets[openvino]'``): it is
imported only when this runtime is asked for or ``auto`` considers it.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accel_widgets.errors import ServingError

log = logging.getLogger("accel_widgets.serving")

INSTALL_HINT = "pip install 'accel-widgets[openvino]' (or python -m pip install openvino)"

#: OpenVINO element type names -> ONNX Runtime's type strings (what LoadedModel reads).
_ONNX_TYPE = {
    "f32": "tensor(float)",
    "f16": "tensor(float16)",
    "f64": "tensor(double)",
    "u8": "tensor(uint8)",
    "i8": "tensor(int8)",
    "i16": "tensor(int16)",
    "u16": "tensor(uint16)",
    "i32": "tensor(int32)",
    "i64": "tensor(int64)",
    "boolean": "tensor(bool)",
}


#: Imported by ``openvino/__init__`` for ``convert_model`` only; see :func:`import_openvino`.
_CONVERSION_TOOLS = "openvino.tools.ovc"


def import_openvino() -> Any:
    """``import openvino`` without ``openvino.tools.ovc``, its model-conversion tools.

    Why: ``openvino/__init__`` imports ovc for ``convert_model``, and ovc's import sends a
    usage event to Google Analytics (``openvino_telemetry``, on unless the user ran
    ``opt_in_out --opt_out``), which forks a ``multiprocessing`` child from a thread to do
    the sending. A serving process already runs gRPC's threads when it loads its models
    (gRPC logs "Other threads are currently calling into gRPC, skipping fork() handlers"),
    and a fork without exec in a threaded process can copy a lock that some other thread
    holds: once in about ten deploys the child hung on such a lock and outlived its server
    (315 MB, ignoring SIGTERM). Found with ``strace -f`` on a server start (a ``clone``
    without ``CLONE_THREAD`` from a ``ThreadPoolExecutor`` thread running ``backend_ga4.send``).

    The server and the conversion worker read ONNX with ``Core.read_model`` and never
    convert, so they import OpenVINO with ovc held back: ``None`` in ``sys.modules`` makes
    that one import fail, which ``openvino/__init__`` already passes over (ovc is optional
    there). The entry is removed afterwards, so code that imports ovc itself later gets it
    as usual. Nothing changes when ``openvino`` was already imported.
    """
    held_back = _CONVERSION_TOOLS not in sys.modules and "openvino" not in sys.modules
    if held_back:
        sys.modules[_CONVERSION_TOOLS] = None  # type: ignore[assignment]
    try:
        import openvino
    finally:
        if held_back and sys.modules.get(_CONVERSION_TOOLS, ...) is None:
            del sys.modules[_CONVERSION_TOOLS]
    return openvino


def available() -> str | None:
    """None when ``openvino`` imports here, else why not (for ``auto``'s record)."""
    try:
        import_openvino()
    except ImportError as exc:
        return f"openvino is not installed ({exc.msg}); {INSTALL_HINT}"
    return None


def core() -> Any:
    """One ``ov.Core`` per process: it holds the plugins, loaded once."""
    global _CORE
    if _CORE is None:
        try:
            ov = import_openvino()
        except ImportError:
            raise ServingError(
                f"runtime 'openvino' needs the openvino package, which is not installed here: "
                f"{INSTALL_HINT}; or choose runtime 'onnxruntime' or 'auto'"
            ) from None
        _CORE = ov.Core()
    return _CORE


_CORE: Any = None


def devices() -> list[str]:
    """The devices OpenVINO sees here (``CPU``, ``GPU``, ``GPU.0``, ``NPU`` ...)."""
    return list(core().available_devices)


def cache_dir() -> Path | None:
    """Where compiled models are kept between starts, or None where nothing may be written.

    ``$ACCEL_WIDGETS_OPENVINO_CACHE``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)
    ``/accel-widgets/openvino``; never next to the model, which may be a shared folder or
    an image's read-only layer.
    """
    configured = os.environ.get("ACCEL_WIDGETS_OPENVINO_CACHE")
    if configured is not None:
        return Path(configured) if configured else None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "accel-widgets" / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can compute in bf16 on this CPU (AVX512-BF16 or AMX)."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_device(device: str, seen: list[str]) -> tuple[str, str | None]:
    """OpenVINO device for the config's ``device``, and a note when the ask is not met.

    ``gpu`` takes OpenVINO's GPU plugin when it sees a GPU and falls back to the CPU with a
    note otherwise; ``auto`` and ``cpu`` take the CPU (OpenVINO's GPU plugin drives Intel
    GPUs, whose speed against this CPU is unmeasured, so it is never picked unasked).
    """
    if device != "gpu":
        return "CPU", None
    gpus = sorted(d for d in seen if d.split(".")[0] == "GPU")
    if gpus:
        return gpus[0], None
    return "CPU", (
        f"device 'gpu' was asked for, but OpenVINO sees no GPU here (devices: "
        f"{', '.join(seen) or 'none'}); serving on the CPU"
    )


def choose_precision(bf16_validated: bool, device: str, has_bf16: bool) -> tuple[str, str]:
    """The ``INFERENCE_PRECISION_HINT`` (``f32`` or ``bf16``) and the reason for it."""
    if not device.startswith("CPU"):
        return "f32", "f32: bf16 is decided for the CPU plugin only"
    if not bf16_validated:
        return "f32", "f32: bf16 was not validated for this model (top-1 vs fp32 on the photos)"
    if not has_bf16:
        return "f32", "f32: bf16 validated, but this CPU has no AVX512-BF16 or AMX"
    return "bf16", "bf16: validated against fp32 on the photos, and this CPU has bf16"


@dataclass(frozen=True)
class _Port:
    """An input or output as ONNX Runtime's ``NodeArg`` describes it (name, type, shape)."""

    name: str
    type: str
    shape: list[int | str]


def _port(port: Any) -> _Port:
    shape = ["N" if dim.is_dynamic else int(dim.get_length()) for dim in port.get_partial_shape()]
    type_name = port.get_element_type().get_type_name()
    return _Port(port.get_any_name(), _ONNX_TYPE.get(type_name, f"tensor({type_name})"), shape)


class OpenVinoSession:
    """A compiled OpenVINO model that answers like an ``ort.InferenceSession``."""

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int,
        device: str = "CPU",
        precision_hint: str = "f32",
        dynamic_batch: int = 0,
        cache: Path | None = None,
    ) -> None:
        ov_core = core()
        self.device = device
        self.precision_hint = precision_hint
        self.threads = threads
        properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision_hint}
        if device.startswith("CPU"):
            properties["INFERENCE_NUM_THREADS"] = threads
        if cache is not None:
            properties["CACHE_DIR"] = str(cache)
        try:
            model = ov_core.read_model(str(model_path))
        except Exception as exc:
            raise ServingError(f"OpenVINO cannot read {model_path}: {_first_line(exc)}") from None
        if len(model.inputs) != 1:
            raise ServingError(
                f"OpenVINO serves models with one input here; {model_path} has {len(model.inputs)}"
            )
        shape = model.inputs[0].get_partial_shape()
        self._inputs = [_port(model.inputs[0])]
        self._outputs = [_port(o) for o in model.outputs]
        self._batch_dynamic = shape.rank.is_static and shape[0].is_dynamic
        try:
            self._single = ov_core.compile_model(self._reshaped(model, 1), device, properties)
            self._multi = None
            if dynamic_batch > 1 and self._batch_dynamic:
                bounded = self._reshaped(ov_core.read_model(str(model_path)), dynamic_batch)
                self._multi = ov_core.compile_model(bounded, device, properties)
        except Exception as exc:
            raise ServingError(
                f"OpenVINO cannot compile {model_path} for {device}: {_first_line(exc)}"
            ) from None
        self._pools = {id(self._single): queue.SimpleQueue()}
        if self._multi is not None:
            self._pools[id(self._multi)] = queue.SimpleQueue()
        # Every name a tensor carries (an ONNX output may have several after OpenVINO's fusions).
        self._output_index = {
            name: i for i, port in enumerate(model.outputs) for name in port.get_names()
        } | {p.name: i for i, p in enumerate(self._outputs)}

    def _reshaped(self, model: Any, batch: int) -> Any:
        """Batch 1 static, or a dynamic batch bounded by ``batch`` (other dims as they are)."""
        ov = import_openvino()

        if not self._batch_dynamic:
            return model
        dims = list(model.inputs[0].get_partial_shape())
        dims[0] = ov.Dimension(1) if batch == 1 else ov.Dimension(1, batch)
        model.reshape({model.inputs[0]: ov.PartialShape(dims)})
        return model

    # -- the ONNX Runtime session interface LoadedModel uses ----------------------------

    def get_inputs(self) -> list[_Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Port]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [f"OpenVINO:{self.device}"]

    @property
    def max_batch_compiled(self) -> int:
        """Rows one infer call takes at most (1 without the dynamic-batch compile)."""
        if self._multi is None:
            return 1 if self._batch_dynamic else int(self._inputs[0].shape[0])
        return int(self._multi.inputs[0].get_partial_shape()[0].get_max_length())

    def run(self, names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs ``names`` (all when None) for the one input in ``feeds``, as numpy arrays."""
        (batch,) = feeds.values()
        wanted = (
            [self._output_index[n] for n in names] if names else list(range(len(self._outputs)))
        )
        rows = batch.shape[0]
        if rows == 1 or not self._batch_dynamic:
            return self._infer(self._single, batch, wanted)
        if self._multi is not None and rows <= self.max_batch_compiled:
            return self._infer(self._multi, batch, wanted)
        parts = [self._infer(self._single, batch[i : i + 1], wanted) for i in range(rows)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(wanted))]

    def _infer(self, compiled: Any, batch: np.ndarray, wanted: list[int]) -> list[np.ndarray]:
        pool = self._pools[id(compiled)]
        try:
            request = pool.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            results = request.infer({0: batch})
            # The result tensors belong to the request: copy before it goes back to the pool.
            return [np.array(results[compiled.outputs[i]], copy=True) for i in wanted]
        finally:
            pool.put(request)


def _first_line(exc: BaseException) -> str:
    """OpenVINO's errors carry C++ file:line chatter; its first lines say what failed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return "; ".join((useful or lines or [type(exc).__name__])[:3])
