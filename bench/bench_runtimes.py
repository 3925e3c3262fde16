"""Runtimes side by side in one process: ONNX Runtime vs OpenVINO, per precision, at batch 1.

For each model, every candidate (runtime x precision) gets the same preprocessed photo and is
timed in **blocks**: each round visits the candidates in a shuffled order, and each visit is
``--block`` calls with ``gap`` ms of idle before each; the first call of a visit is not counted
(the previous candidate's worker threads may still spin, docs/FINDINGS.md). Gaps of 0 ms (back to
back) and 50 ms (a lone request on an idle VM) are measured separately, since every runtime
slows down after idle on these VMs. Top-1 agreement with the fp32 reference is counted on the
real sample photos (scikit-image / scikit-learn), as the precision policy needs.

Models:

* the shared **SqueezeNet** (real weights, fp16 file): ONNX Runtime as stored vs OpenVINO
  with ``INFERENCE_PRECISION_HINT`` f32 and bf16; the reference is OpenVINO f32;
* **ResNet-50** (random weights; fp32 and INT8 QDQ, built and converted once into
  ``--workspace`` by ``bench_serving.prepare_models``): ONNX Runtime fp32 / INT8, OpenVINO
  fp32 (f32 and bf16 hints) / INT8 (f32 and bf16 hints); the reference is ONNX Runtime fp32.
  ``--quick`` skips it unless the workspace already holds it.

Usage: ``python bench/bench_runtimes.py [--quick] [--workspace DIR] [--rounds 12] [--out F]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

T = TypeVar("T")
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", flush=True)


def cpu_description() -> dict[str, Any]:
    """The CPU model and the flags that decide INT8/bf16 speed (from /proc/cpuinfo)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {
        "model": model,
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "flags": [f for f in CPU_FLAGS if f in flags],
    }


@dataclass
class Candidate:
    """One runtime x precision: a session, its input, and its label in the tables."""

    label: str
    session: Any
    feed: Callable[[np.ndarray], dict[str, np.ndarray]]
    output: str

    def __call__(self, tensor: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([self.output], self.feed(tensor))[0], np.float32)


def onnxruntime_candidate(label: str, path: Path, precision: str, threads: int | None) -> Candidate:
    from accel_widgets.serving.runtime import create_session

    session = create_session(path, precision, threads, spinning=True)
    name = session.get_inputs()[0].name
    return Candidate(label, session, lambda x: {name: x}, session.get_outputs()[0].name)


def openvino_candidate(label: str, path: Path, hint: str, threads: int | None) -> Candidate:
    from accel_widgets.serving.openvino_runtime import OpenVinoSession
    from accel_widgets.serving.runtime import available_cpus

    session = OpenVinoSession(path, threads=threads or available_cpus(), precision_hint=hint)
    name = session.get_inputs()[0].name
    return Candidate(label, session, lambda x: {name: x}, session.get_outputs()[0].name)


def in_blocks(
    candidates: Mapping[str, Callable[[], T]],
    *,
    rounds: int,
    block: int,
    gap_s: float,
    seed: int = 0,
    after_round: Callable[[int, dict[str, list[T]]], object] | None = None,
) -> dict[str, list[T]]:
    """What each candidate returned, visited in blocks: the one loop every bench times with.

    Each round visits the candidates in a shuffled order (so "who goes after whom" favours
    none) and calls each ``block`` times, each call after ``gap_s`` of idle. With ``block``
    > 1 the first call of a visit is not kept: the previous candidate's threads may still
    spin (docs/FINDINGS.md). ``after_round(index, kept)`` runs after each round (progress).
    """
    kept: dict[str, list[T]] = {name: [] for name in candidates}
    order = list(candidates)
    rng = random.Random(seed)
    for index in range(rounds):
        rng.shuffle(order)
        for name in order:
            for position in range(block):
                if gap_s:
                    time.sleep(gap_s)
                result = candidates[name]()
                if block == 1 or position:
                    kept[name].append(result)
        if after_round is not None:
            after_round(index, kept)
    return kept


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """``fn``, returning how long it took in ms (for :func:`in_blocks`)."""

    def call() -> float:
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) * 1000

    return call


def blocks(
    candidates: list[Candidate],
    tensor: np.ndarray,
    *,
    rounds: int,
    block: int,
    gap_s: float,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """p50 / p90 ms per candidate, timed in shuffled blocks (see the module docstring)."""
    for candidate in candidates:
        for _ in range(3):
            candidate(tensor)
    samples = in_blocks(
        {c.label: timed(lambda c=c: c(tensor)) for c in candidates},
        rounds=rounds,
        block=block,
        gap_s=gap_s,
        seed=seed,
    )
    return {
        label: {
            "p50_ms": round(statistics.median(values), 2),
            "p90_ms": round(float(np.percentile(values, 90)), 2),
            "n": len(values),
        }
        for label, values in samples.items()
    }


def agreement(
    candidates: list[Candidate], reference: str, tensors: list[np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Top-1 agreement and max |difference| of each candidate's outputs vs the reference's."""
    outputs = {c.label: [c(t).reshape(-1) for t in tensors] for c in candidates}
    ref = outputs[reference]
    out = {}
    for label, rows in outputs.items():
        agree = sum(int(a.argmax() == b.argmax()) for a, b in zip(rows, ref, strict=True))
        out[label] = {
            "top1_agree": agree,
            "photos": len(rows),
            "top5_same": sum(
                set(np.argsort(-a)[:5]) == set(np.argsort(-b)[:5])
                for a, b in zip(rows, ref, strict=True)
            ),
            "max_abs_diff": float(max(np.abs(a - b).max() for a, b in zip(rows, ref, strict=True))),
        }
    return out


def measure_model(
    title: str,
    candidates: list[Candidate],
    reference: str,
    tensors: list[np.ndarray],
    args: argparse.Namespace,
) -> dict[str, Any]:
    log(f"== {title}: {', '.join(c.label for c in candidates)}")
    result: dict[str, Any] = {"reference": reference, "agreement": {}, "timings": {}}
    result["agreement"] = agreement(candidates, reference, tensors)
    for gap_ms in args.gaps:
        log(f"  blocks of {args.block}, {args.rounds} rounds, {gap_ms:g} ms idle gaps")
        result["timings"][f"{gap_ms:g}"] = blocks(
            candidates, tensors[0], rounds=args.rounds, block=args.block, gap_s=gap_ms / 1000
        )
    return result


def squeezenet(args: argparse.Namespace, photos: list[Any]) -> dict[str, Any]:
    from accel_widgets.preprocess import Preprocessing, prepare

    weights = Path(os.environ.get("ACCEL_WIDGETS_WEIGHTS_DIR", ROOT.parent / "shared" / "weights"))
    path = weights / "SqueezeNet_fp16.onnx"
    pre = Preprocessing(channel_order="BGR", layout="NCHW", dtype="float16")
    tensors = [prepare(p.data, pre) for p in photos]
    candidates = [
        onnxruntime_candidate("ORT fp16 (as stored)", path, "fp16", args.threads),
        openvino_candidate("OpenVINO f32", path, "f32", args.threads),
        openvino_candidate("OpenVINO bf16", path, "bf16", args.threads),
    ]
    return measure_model("SqueezeNet 1.1 (real weights)", candidates, "OpenVINO f32", tensors, args)


def resnet50(args: argparse.Namespace, photos: list[Any], workspace: Any) -> dict[str, Any]:
    from accel_widgets.engine.packaging.service_config import model_config_for
    from accel_widgets.preprocess import prepare

    fp32 = workspace.get_artifact("resnet50", precision="fp32")
    int8 = workspace.get_artifact("resnet50", precision="int8")
    pre = model_config_for(workspace, fp32).preprocessing
    tensors = [prepare(p.data, pre) for p in photos]
    candidates = [
        onnxruntime_candidate("ORT fp32", fp32.file, "fp32", args.threads),
        onnxruntime_candidate("ORT int8", int8.file, "int8", args.threads),
        openvino_candidate("OpenVINO fp32 (f32)", fp32.file, "f32", args.threads),
        openvino_candidate("OpenVINO fp32 (bf16)", fp32.file, "bf16", args.threads),
        openvino_candidate("OpenVINO int8 (f32)", int8.file, "f32", args.threads),
        openvino_candidate("OpenVINO int8 (bf16)", int8.file, "bf16", args.threads),
    ]
    return measure_model("ResNet-50 (random weights)", candidates, "ORT fp32", tensors, args)


def print_table(name: str, result: dict[str, Any], gaps: list[float]) -> list[str]:
    reference = result["reference"]
    first_gap = f"{gaps[0]:g}"
    base = next(iter(result["timings"][first_gap]))  # the first candidate: ONNX Runtime
    header = f"{'':<24}" + "".join(f"{'p50 ' + f'{g:g}' + ' ms gap':>16}" for g in gaps)
    header += f"{'/ ' + base[:12]:>16}{'top-1 / ref':>13}{'top-5 same':>11}{'max |diff|':>11}"
    lines = ["", f"{name} (reference for agreement: {reference})", header]
    for label in result["timings"][first_gap]:
        cells = "".join(f"{result['timings'][f'{g:g}'][label]['p50_ms']:>16.2f}" for g in gaps)
        ratio = (
            result["timings"][first_gap][label]["p50_ms"]
            / result["timings"][first_gap][base]["p50_ms"]
        )
        agree = result["agreement"][label]
        lines.append(
            f"{label:<24}{cells}{ratio:>16.2f}"
            f"{agree['top1_agree']:>7}/{agree['photos']:<5}{agree['top5_same']:>7}/{agree['photos']:<3}"
            f"{agree['max_abs_diff']:>11.1e}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="SqueezeNet only, few rounds")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of blocks per gap")
    parser.add_argument("--block", type=int, default=6, help="calls per visit (first dropped)")
    parser.add_argument("--gaps-ms", default="0,50", help="idle gaps to measure, ms")
    parser.add_argument("--threads", type=int, help="runtime threads (default: the CPUs)")
    parser.add_argument("--workspace", type=Path, help="holds/keeps ResNet-50 fp32 + INT8")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    args.gaps = [float(g) for g in args.gaps_ms.split(",") if g.strip()]
    if args.quick:
        args.rounds, args.block = min(args.rounds, 3), min(args.block, 4)

    import onnxruntime

    from accel_widgets.engine.checks.samples import sample_photos
    from accel_widgets.serving.openvino_runtime import import_openvino

    openvino = import_openvino()  # as the server imports it (no conversion tools, no fork)

    cpu = cpu_description()
    results: dict[str, Any] = {
        "cpu": cpu,
        "versions": {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__},
        "args": {k: str(v) for k, v in vars(args).items()},
        "models": {},
    }
    log(f"CPU {cpu['model']} x{cpu['cpus']}, flags {' '.join(cpu['flags']) or 'none of note'}")
    photos = sample_photos()
    results["models"]["squeezenet"] = squeezenet(args, photos)
    folder = args.workspace
    with tempfile.TemporaryDirectory(prefix="accel-runtimes-") as temp:
        from accel_widgets.engine.store.workspace import Workspace

        workspace = Workspace(folder or Path(temp))
        have = workspace.find_model("resnet50") is not None
        if not args.quick or have:
            if not have:
                from bench_serving import prepare_models

                log("== building + converting ResNet-50 (random weights) into the workspace")
                prepare_models(workspace)
            results["models"]["resnet50"] = resnet50(args, photos, workspace)
    lines = [
        "",
        "SUMMARY: in-process batch-1 p50 by runtime and precision, side by side in one run",
        f"CPU: {cpu['model']} ({cpu['cpus']} CPUs; flags: {' '.join(cpu['flags']) or '-'}); "
        f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}",
    ]
    for name, result in results["models"].items():
        lines += print_table(name, result, args.gaps)
    lines += [
        "",
        "bf16 policy: a model may serve in bf16 only where its bf16 row agrees on top-1 with the "
        'reference on every photo (then set the model\'s "bf16": true).',
        f"runtime {time.monotonic() - _STARTED:.0f} s",
    ]
    print("\n".join(lines), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
