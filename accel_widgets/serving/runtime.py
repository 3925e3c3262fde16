"""ONNX Runtime session settings for the server: threads, spinning and providers.

ONNX Runtime is one of the server's two runtimes; OpenVINO is the other
(``openvino_runtime.py``), and ``runtime_choice.py`` decides which serves a model (``auto``
measures both at start-up). ``device: gpu`` in the config asks for ONNX Runtime's CUDA or
TensorRT provider; where the build or the machine has none, the CPU serves and the reason
goes into the service's info (:func:`open_onnxruntime`).

Decision: **intra-op threads = the CPUs this process may use, spinning on** (configurable:
``"spinning": false`` in the server config), one inter-op thread, sequential execution.

Spinning, measured twice on this project's 2-core VMs. On an idle machine (the server's
usual case: requests arrive now and then, the client waits for each answer), ResNet-50 INT8
with a JPEG, served vs in-process, configurations interleaved with a 30 ms idle gap before
each call, then load from 1/4/16 client threads (``bench/bench_spinning.py``, 2026-11-24):

=====================  ==========  ============  ========  ==========  ==========  ==========
configuration           served p50  in-process    ratio     req/s c=1   req/s c=4   req/s c=16
=====================  ==========  ============  ========  ==========  ==========  ==========
spinning on, run 1      22.9 ms     21.5 ms       1.065     47.0        52.4        52.6
spinning off, run 1     29.6 ms     27.6 ms       1.074     46.0        49.0        45.6
spinning on, run 2      22.0 ms     20.2 ms       1.090     49.2        44.7        50.0
spinning off, run 2     29.4 ms     27.5 ms       1.070     49.4        48.7        47.6
=====================  ==========  ============  ========  ==========  ==========  ==========

A request that arrives alone is 25 % faster with spinning; throughput is the same within
the runs' noise; the ~1.8 ms that gRPC adds does not depend on it.
Without spinning each of the ~100 fork-joins in one ``run`` has to wake the other core's
sleeping pool thread, and after an idle gap a halted vCPU wakes slowly: back-to-back calls
hide it (c=1 load: 21.6 vs 20.7 ms), a request that arrives alone pays about 7 ms.

An earlier measurement with **other processes keeping both cores busy** (a laptop running
a notebook, a client and a conversion) went the other way, so ``"spinning": false`` stays
for such shared machines; in-process, calling ``run`` from 1 or 4 threads, p50 ms (p90):

=================================  ==================  ===================  ===============
configuration                       SqueezeNet c=1      ResNet-50 c=1        c=4 req/s S / R
=================================  ==================  ===================  ===============
2 threads, spinning (ORT default)   14.3 (22.7)         140 (186)            91 / 10.5
2 threads, no spinning               9.3 (13.3)          85 (152)           117 / 13.0
1 thread, no spinning                9.7 (12.6)          74 (88)            101 / 12.8
=================================  ==================  ===================  ===============

and end to end through this server on loopback under the same background load:

=================================  ===========  ==========  ===========  ===========
configuration                       Squeeze c=1  Squeeze c=4  ResNet c=1   ResNet c=4
=================================  ===========  ==========  ===========  ===========
2 threads, spinning                 14.6 (34)    44.5 (80)   176 (324)    403 (557)
2 threads, no spinning               9.7 (15)    31.7 (54)   101 (190)    339 (668)
1 thread, no spinning (other run)   10.1 (20)    37.1 (59)   115 (161)    416 (518)
2 threads, no spinning (same run)   10.1 (12)    32.4 (55)   106 (155)    383 (476)
=================================  ===========  ==========  ===========  ===========

* **Intra-op threads = available CPUs.** Without spinning, all cores came out equal to or
  better than one thread end to end (p50 and throughput), while in-process under heavy
  background load one thread had the better ResNet tail; on an idle machine, the usual case
  for a batch-1 demo where the client just waits for the answer, the cores split one image's
  work (docs/FINDINGS.md: ResNet-50 40-51 ms with 2 threads). Concurrent requests share the
  session's one pool (callers join it) rather than multiplying threads.
* ``inter_op_num_threads = 1`` and sequential execution: image models are chains, so a
  parallel executor has nothing to overlap and only adds threads.

The config's ``threads`` overrides the intra-op count (for a container given fewer cores
than its affinity mask shows, say).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The config's ``runtime`` values (``auto`` races the installed ones during warm-up, see
# runtime_choice.py) and ``device`` values (``auto`` takes ONNX Runtime's GPU providers when
# this build has them; ``gpu`` asks for a GPU and records a fallback when there is none).
from accel_widgets.serving.config import DEVICES, RUNTIMES  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import onnxruntime as ort


def _ort() -> Any:
    """``onnxruntime``, imported on first use: a server that serves with OpenVINO never
    loads it (20 MB of RSS, measured on the 2-vCPU AMD EPYC; runtime_race.py)."""
    import onnxruntime

    return onnxruntime


log = logging.getLogger("accel_widgets.serving")


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None, spinning: bool = True) -> ort.SessionOptions:
    """Session options chosen by the measurement in the module docstring."""
    options = _ort().SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = _ort().ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _ort().GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: ORT's warnings are noise in service logs
    return options


def concurrent_runs(session: ort.InferenceSession) -> int:
    """How many ``run`` calls may overlap: one per set of cores the session's pool uses.

    On the CPU the intra-op pool already takes every core, so overlapping runs only share
    them (see ``LoadedModel``); a GPU session gets 2, so one run's host work overlaps the
    other's device work.
    """
    first = session.get_providers()[0]
    if first == "OpenVINO:CPU":  # openvino_runtime.OpenVinoSession: the same reasoning
        return max(1, available_cpus() // session.threads)
    if first != "CPUExecutionProvider":
        return 2
    threads = int(session.get_session_options().intra_op_num_threads) or available_cpus()
    return max(1, available_cpus() // threads)


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def providers(
    model_path: Path,
    precision: str,
    device: str = "auto",
    available: list[str] | None = None,
) -> tuple[list[str | tuple[str, dict[str, str]]], str | None]:
    """Execution providers for ``device``, GPU ones first, CPU last; and a fallback note.

    ``available`` is ONNX Runtime's list (``ort.get_available_providers()`` when None; tests
    pass a GPU build's list). TensorRT compiles an engine for the model at first load
    (minutes for a large model), so its engines are cached next to the model and reused by
    every later start. The note says why a ``gpu`` ask is served on the CPU.
    """
    have = list(_ort().get_available_providers() if available is None else available)
    chosen: list[str | tuple[str, dict[str, str]]] = []
    if device != "cpu" and "TensorrtExecutionProvider" in have:
        cache = model_path.parent / f".{model_path.stem}.trt-cache"
        chosen.append(
            (
                "TensorrtExecutionProvider",
                {
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(cache),
                    "trt_fp16_enable": "True" if precision == "fp16" else "False",
                    "trt_int8_enable": "True" if precision == "int8" else "False",
                },
            )
        )
    if device != "cpu" and "CUDAExecutionProvider" in have:
        chosen.append("CUDAExecutionProvider")
    note = None
    if device == "gpu" and not chosen:
        note = (
            "device 'gpu' was asked for, but this onnxruntime build has no CUDA or TensorRT "
            f"provider (it has {', '.join(have)}; install onnxruntime-gpu on a GPU machine); "
            "serving on the CPU"
        )
    chosen.append("CPUExecutionProvider")
    return chosen, note


def create_session(
    model_path: Path,
    precision: str = "fp32",
    threads: int | None = None,
    spinning: bool = True,
    device: str = "auto",
) -> ort.InferenceSession:
    """Load a model with the measured options; fall back to CPU if a GPU provider fails."""
    return open_onnxruntime(model_path, precision, threads, spinning, device)[0]


def open_onnxruntime(
    model_path: Path,
    precision: str = "fp32",
    threads: int | None = None,
    spinning: bool = True,
    device: str = "auto",
    available: list[str] | None = None,
) -> tuple[ort.InferenceSession, str | None]:
    """An ONNX Runtime session for ``device`` and the note when it serves elsewhere.

    A GPU provider that this build lists but cannot start (no driver, a missing CUDA
    library) is dropped by ONNX Runtime with a log line, or fails the load: both end on the
    CPU with the reason recorded, so the service's info says where it really runs.
    """
    options = session_options(threads, spinning)
    wanted, note = providers(model_path, precision, device, available)
    try:
        session = _ort().InferenceSession(str(model_path), options, providers=wanted)
    except Exception as exc:
        if len(wanted) == 1:
            raise
        log.warning("GPU providers failed for %s (%s); falling back to CPU", model_path, exc)
        session = _ort().InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        note = (
            f"the GPU providers failed to load the model ({_first_line(exc)}); serving on the CPU"
        )
    if len(wanted) > 1 and session.get_providers()[0] == "CPUExecutionProvider" and not note:
        asked = ", ".join(p if isinstance(p, str) else p[0] for p in wanted[:-1])
        note = f"ONNX Runtime could not start {asked} (see its log); serving on the CPU"
    return session, note


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
