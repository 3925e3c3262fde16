"""Which runtime serves a model: the config's ask, what is installed, and ``auto``'s race.

``runtime: onnxruntime | openvino`` opens that one (an explicit ask that cannot be met is a
start-up error that says why). ``auto`` opens every runtime that is installed and can read
the model, then, during warm-up, times each on the warm-up tensor on this machine and keeps
the faster: which one wins moves with the CPU (OpenVINO INT8 was 0.34-0.66x ONNX Runtime's
time on the machines measured so far, see ``bench/bench_runtimes.py``), so it is measured,
not assumed. :class:`RuntimeInfo` records the outcome, the figures it was chosen by and
every fallback; the server puts it in its ready file and the engine in the service's info.

The race runs the candidates in blocks, alternating which goes first, and drops the first
run of each block: a runtime's worker threads keep spinning for a while after a run and
slow whatever runs next on 2 vCPUs (docs/FINDINGS.md), which would favour the candidate that
happened to run after an idle pause.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from accel_widgets.errors import ServingError
from accel_widgets.serving import openvino_runtime, runtime
from accel_widgets.serving.config import ModelConfig

if TYPE_CHECKING:
    from accel_widgets.serving.runtime_race import Verdict

log = logging.getLogger("accel_widgets.serving")


@dataclass
class RuntimeInfo:
    """What serves a model and why; JSON-ready through :meth:`to_dict`.

    ``measured_ms`` holds each candidate's warm-up p50 when ``auto`` raced them, and
    ``notes`` every ask that was not met as asked (a GPU that is not there, OpenVINO not
    installed or unable to read the model), in words a user can act on.
    """

    runtime: str
    asked: str
    device: str
    providers: list[str]
    inference_precision: str
    chosen_by: str
    measured_ms: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    """One opened runtime: its session and what it records if it wins."""

    runtime: str
    session: Any
    device: str
    inference_precision: str


def open_candidates(
    config: ModelConfig,
    *,
    asked: str,
    device: str,
    threads: int | None,
    spinning: bool,
    dynamic_batch: int = 0,
) -> tuple[list[Candidate], list[str]]:
    """Open the runtime(s) ``asked`` names; the candidates and the notes on what fell back.

    Raises
    ------
    ServingError
        When the runtime asked for by name cannot serve the model, or none can (``auto``).
    """
    if asked not in runtime.RUNTIMES:
        raise ServingError(f"runtime must be one of {', '.join(runtime.RUNTIMES)}; got {asked!r}")
    if device not in runtime.DEVICES:
        raise ServingError(f"device must be one of {', '.join(runtime.DEVICES)}; got {device!r}")
    candidates: list[Candidate] = []
    notes: list[str] = []
    failures: list[str] = []
    # One after the other, not at once: opening both in two threads saved 0.15 s of a
    # ResNet-50 fp32 start but left the server about 100 MB larger (RSS after loading: 606-695
    # MB in 4 loads vs 504-646 MB in 6 one after the other, 2-vCPU AMD EPYC; the second
    # thread's allocations go to a malloc arena of their own).
    if asked in ("auto", "onnxruntime"):
        try:
            session, note = runtime.open_onnxruntime(
                config.onnx, config.precision, threads, spinning, device
            )
        except Exception as exc:
            if asked == "onnxruntime":
                raise ServingError(f"ONNX Runtime cannot load {config.onnx}: {exc}") from None
            failures.append(f"ONNX Runtime cannot load the model ({exc})")
            notes.append(f"auto: {failures[-1]}; OpenVINO only")
        else:
            notes += [note] if note else []
            first = session.get_providers()[0]
            where = "CPU" if first == "CPUExecutionProvider" else first
            candidates.append(Candidate("onnxruntime", session, where, config.precision))
    if asked in ("auto", "openvino"):
        missing = openvino_runtime.available()
        if missing is not None:
            if asked == "openvino":
                openvino_runtime.core()  # raises the ServingError that says how to install
            notes.append(f"auto: {missing}; ONNX Runtime only")
        else:
            try:
                candidates.append(_open_openvino(config, device, threads, dynamic_batch, notes))
            except ServingError as exc:
                if asked == "openvino":
                    raise ServingError(
                        f"{exc}. Choose runtime 'onnxruntime' or 'auto' for this model"
                    ) from None
                failures.append(str(exc))
                notes.append(f"auto: {exc}; ONNX Runtime only")
    if not candidates:
        raise ServingError("no runtime can serve this model: " + "; ".join(failures))
    return candidates, notes


def _open_openvino(
    config: ModelConfig,
    device: str,
    threads: int | None,
    dynamic_batch: int,
    notes: list[str],
) -> Candidate:
    where, note = openvino_runtime.choose_device(device, openvino_runtime.devices())
    if note:
        notes.append(note)
    has_bf16 = where.startswith("CPU") and openvino_runtime.cpu_has_bf16()
    hint, why = openvino_runtime.choose_precision(config.bf16, where, has_bf16)
    session = openvino_runtime.OpenVinoSession(
        config.onnx,
        threads=threads or runtime.available_cpus(),
        device=where,
        precision_hint=hint,
        dynamic_batch=dynamic_batch,
        cache=openvino_runtime.cache_dir(),
    )
    log.info("OpenVINO on %s, precision %s", where, why)
    return Candidate("openvino", session, where, hint)


def race(
    candidates: list[Candidate],
    run: Callable[[Any], Any],
    *,
    rounds: int = 3,
    block: int = 3,
    warm: int = 2,
    budget_s: float = 1.0,
    notes: list[str] | None = None,
) -> tuple[Candidate, dict[str, float]]:
    """The candidate with the lowest p50 of ``run(session)``, and every candidate's p50 (ms).

    Each candidate runs ``warm`` times first (arenas, kernel choice), then up to ``rounds``
    blocks of ``block`` runs each, the order alternating per round; the first run of a
    block is not counted (the other runtime's threads may still be spinning). The race ends
    early once it is decided, after both orders have run: the leader's slowest counted run
    beats every other candidate's fastest. Then a third round could not change the winner
    by much (ranges that do not overlap), and it cost ResNet-50 fp32 0.25 s of start-up on
    a 2-vCPU AMD EPYC (ONNX Runtime 38 ms, OpenVINO 33 ms a run).
    It runs while the server says NOT_SERVING, so it is start-up time: after the first round
    it stops once ``budget_s`` is spent, and a model slower than ``budget_s / 8`` per run
    (SSD-VGG fp32, ~0.65 s) gets one warm-up run and blocks of two (without the budget, SSD
    spent 35 s racing; ResNet-50 fp32 takes about 0.15 s per round on a quiet 2-vCPU VM).

    A candidate whose warm-up outputs differ in shape from the first candidate's (ONNX
    Runtime, the reference) or are not finite is left out, with a note in ``notes``: a
    runtime that computes something else must not win by being fast. Numerical agreement
    within each precision is proven by the tests on real photos, not here.
    """
    outputs: dict[str, Any] = {}
    slow = False
    for candidate in candidates:
        for index in range(warm):
            started = time.perf_counter()
            result = run(candidate.session)
            if index == 0:
                outputs[candidate.runtime] = result
            if time.perf_counter() - started > budget_s / 8:
                slow = True
                break
    reference = candidates[0]
    fair = [reference]
    for candidate in candidates[1:]:
        why = _disagreement(outputs[reference.runtime], outputs[candidate.runtime])
        if why is None:
            fair.append(candidate)
        elif notes is not None:
            notes.append(
                f"auto: {candidate.runtime} left out: its outputs {why} "
                f"{reference.runtime}'s on the warm-up tensor"
            )
    if len(fair) == 1:
        return reference, {}
    block = 2 if slow else block
    samples: dict[str, list[float]] = {c.runtime: [] for c in fair}
    began = time.perf_counter()
    for index in range(rounds):
        order = fair if index % 2 == 0 else list(reversed(fair))
        for candidate in order:
            for position in range(block):
                started = time.perf_counter()
                run(candidate.session)
                if position:
                    samples[candidate.runtime].append(time.perf_counter() - started)
        if (index and _decided(samples)) or time.perf_counter() - began > budget_s:
            break
    p50 = {name: round(statistics.median(s) * 1000, 2) for name, s in samples.items()}
    best = min(fair, key=lambda c: p50[c.runtime])
    return best, p50


def _disagreement(reference: Any, candidate: Any) -> str | None:
    """Why two runtimes' outputs for one input are not the same kind of answer, or None."""
    ours, theirs = list(reference), list(candidate)
    if len(ours) != len(theirs):
        return f"are {len(theirs)} tensors, not {len(ours)} as"
    for mine, other in zip(ours, theirs, strict=True):
        mine, other = np.asarray(mine), np.asarray(other)
        if mine.shape != other.shape:
            return f"have shape {list(other.shape)}, not {list(mine.shape)} as"
        if other.dtype.kind == "f" and not np.isfinite(other).all():
            return "hold NaN or infinity, unlike"
    return None


def _decided(samples: dict[str, list[float]]) -> bool:
    leader = min(samples, key=lambda name: statistics.median(samples[name]))
    slowest = max(samples[leader])
    return all(min(v) > slowest for name, v in samples.items() if name != leader)


def info_for(
    winner: Candidate,
    asked: str,
    notes: list[str],
    measured_ms: dict[str, float],
    verdict: Verdict | None = None,
) -> RuntimeInfo:
    """The record of the choice (see :class:`RuntimeInfo`); ``verdict`` is the race run in a
    child process or read from the cache (``runtime_race.py``), None for one run here."""
    if measured_ms:
        figures = ", ".join(f"{k} {v:.1f} ms" for k, v in measured_ms.items())
        chosen_by = f"auto: the lower warm-up p50 at batch 1 on this machine ({figures})"
        if verdict is not None and verdict.source == "cache":
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(verdict.measured_at))
            chosen_by += f", measured {when} and kept (runtime_race.py)"
    elif asked == "auto":  # one runtime opened, or the others were left out (see notes)
        chosen_by = "auto: the only runtime that can serve this model here"
    else:
        chosen_by = "asked for in the config"
    return RuntimeInfo(
        runtime=winner.runtime,
        asked=asked,
        device=winner.device,
        providers=list(winner.session.get_providers()),
        inference_precision=winner.inference_precision,
        chosen_by=chosen_by,
        measured_ms=measured_ms,
        notes=notes,
    )
