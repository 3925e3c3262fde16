"""``auto``'s race, run where it leaves nothing behind: in a short-lived child process, once
per model file and machine.

Why: racing ONNX Runtime against OpenVINO inside the server left the loser's libraries
mapped for the server's whole life (a runtime's shared libraries and allocator arenas are
not given back when its session is dropped). Measured on a 2-vCPU AMD EPYC, after 50
requests: the served SqueezeNet sample held 189 MB RSS with the in-process race against
128 MB with ONNX Runtime alone and 167 MB with OpenVINO alone (``bench/bench_light_services.py``).
A workshop room runs dozens of such services on one machine, so the server now keeps only
the runtime it serves with:

1. **Cached verdict.** The race's outcome is written to
   ``$XDG_CACHE_HOME/accel-widgets/runtime-choice/<key>.json`` (``$ACCEL_WIDGETS_RUNTIME_CACHE``
   moves it; an empty value turns the cache off). The key is everything the outcome
   depends on: the SHA-256 of the ONNX file, the CPU model and the CPUs this process may
   use, the runtime versions, the threads, device, precision, bf16 and batching settings.
   A hit opens the winner alone: no race, and a faster start than before.
2. **Race in a child.** On a miss, ``python -m accel_widgets.serving.race_child`` opens
   every runtime, races them exactly as :func:`runtime_choice.race` always did, prints the
   verdict and exits, so whatever it loaded goes with it. One file lock per key: twenty
   participants deploying the same model at the same minute run one race, the others wait
   for it and read its verdict (twenty races at once on two cores would also measure
   nothing but the contention).
3. **Fallback.** A child that fails or cannot start leaves a note, and the server races in
   its own process as before: the service starts either way.

A stale verdict (a machine much busier than when it was measured) can keep the slower
runtime; delete the folder, or deploy with an explicit ``runtime``, to choose otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_widgets.serving import runtime
from accel_widgets.serving.config import ModelConfig

log = logging.getLogger("accel_widgets.serving")

#: Bumped when the race or the key changes meaning, so old verdicts are not reused.
CACHE_FORMAT = 1
#: Longest a child race may take (SSD-VGG fp32 opens two runtimes in ~10 s on 2 vCPUs).
CHILD_TIMEOUT_S = 300.0


@dataclass
class Verdict:
    """The outcome of one race: the runtime to serve with, each runtime's warm-up p50 (ms),
    the notes on what could not be opened, and when it was measured (Unix time)."""

    winner: str
    measured_ms: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    measured_at: float = 0.0
    #: "child" when raced for this start, "cache" when read from an earlier one.
    source: str = "child"

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "measured_ms": self.measured_ms,
            "notes": self.notes,
            "measured_at": self.measured_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> Verdict:
        return cls(
            winner=str(data["winner"]),
            measured_ms={str(k): float(v) for k, v in dict(data.get("measured_ms", {})).items()},
            notes=[str(n) for n in data.get("notes", [])],
            measured_at=float(data.get("measured_at", 0.0)),
            source=source,
        )


@dataclass(frozen=True)
class RaceSettings:
    """What the race depends on besides the model file (passed to the child as JSON)."""

    threads: int | None
    spinning: bool
    device: str
    dynamic_batch: int
    max_pixels: int
    max_batch: int


def wanted() -> bool:
    """Whether ``auto`` races in a child: there is something to race (``openvino`` could be
    imported; checked without importing it, which would map its libraries into this
    process), and ``$ACCEL_WIDGETS_RUNTIME_RACE`` is not ``here`` (the in-process race, kept
    for ``bench/bench_light_services.py``'s side-by-side figures and for hosts that forbid
    starting processes)."""
    if os.environ.get("ACCEL_WIDGETS_RUNTIME_RACE", "child") == "here":
        return False
    return importlib.util.find_spec("openvino") is not None


def cache_dir() -> Path | None:
    """The verdicts' folder, or None when there is nowhere to keep them (see the docstring)."""
    configured = os.environ.get("ACCEL_WIDGETS_RUNTIME_CACHE")
    if configured is not None:
        folder = Path(configured) if configured else None
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        folder = base / "accel-widgets" / "runtime-choice"
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder


def _cpu_identity() -> str:
    """The CPU model name and the number of CPUs this process may use."""
    name = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name or os.uname().machine} x{runtime.available_cpus()}"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def file_digest(path: Path) -> str:
    """SHA-256 of the model file (0.2 s for a 100 MB file; artifacts never change in place)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def race_key(config: ModelConfig, settings: RaceSettings) -> str:
    """A name for everything the race's outcome depends on (see the module docstring)."""
    parts = {
        "format": CACHE_FORMAT,
        "model": file_digest(config.onnx),
        "precision": config.precision,
        "bf16": config.bf16,
        "cpu": _cpu_identity(),
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
        "threads": settings.threads,
        "spinning": settings.spinning,
        "device": settings.device,
        "dynamic_batch": settings.dynamic_batch,
    }
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read(path: Path) -> Verdict | None:
    try:
        return Verdict.from_dict(json.loads(path.read_text()), source="cache")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or torn: race again


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def choose(config: ModelConfig, settings: RaceSettings) -> Verdict:
    """The verdict for ``config`` on this machine: cached, or raced now in a child process.

    Raises
    ------
    RuntimeError
        When the child race fails; the caller races in its own process instead.
    """
    folder = cache_dir()
    if folder is None:
        return race_in_child(config, settings)
    key = race_key(config, settings)
    path = folder / f"{key}.json"
    if (found := _read(path)) is not None:
        return found
    with _locked(folder / f"{key}.lock"):
        if (found := _read(path)) is not None:  # raced by another start while we waited
            return found
        verdict = race_in_child(config, settings)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            partial.write_text(json.dumps(verdict.to_dict()))
            partial.replace(path)
    return verdict


def race_in_child(config: ModelConfig, settings: RaceSettings) -> Verdict:
    """Run :func:`runtime_choice.race` in ``python -m accel_widgets.serving.race_child``."""
    request = {
        "model": config.to_dict(),
        "settings": {
            "threads": settings.threads,
            "spinning": settings.spinning,
            "device": settings.device,
            "dynamic_batch": settings.dynamic_batch,
            "max_pixels": settings.max_pixels,
            "max_batch": settings.max_batch,
        },
    }
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "accel_widgets.serving.race_child"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"the race process did not finish ({exc})") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("VERDICT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise RuntimeError(f"the race process failed: {tail[0]}")
    verdict = Verdict.from_dict(json.loads(lines[-1].removeprefix("VERDICT ")), source="child")
    log.info(
        "model %s: raced the runtimes in a child process in %.1f s: %s",
        config.name,
        time.perf_counter() - started,
        verdict.winner,
    )
    return verdict
