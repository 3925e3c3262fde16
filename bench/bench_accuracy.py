"""Accuracy beside speed: model x precision x runtime on the shared labelled ImageNet photos.

Every candidate is loaded through the serving code itself (``LoadedModel``: the decoding,
preprocessing, runtime and post-processing a service runs) and scores every labelled photo of
``shared/data/imagenet-sample`` (500 photos, one per class for every other class). The
candidates are interleaved photo by photo in a shuffled order, so each sees the same machine
state, and each call's time (decode + preprocess + run, in process) is recorded. Printed per
row: top-1 and top-5 with their 95 % intervals, top-1 agreement with the model's float
artifact on ONNX Runtime (the reference), p50 and p90 latency, the ratio of its p50 to the
reference's, and the verdict its report stores (engine/checks/verdicts.py); then the CPU.

Candidates:

* the **SqueezeNet sample** (real weights, fp16 file), registered as the walk registers it,
  and its INT8 (calibrated on 100 of the photos, the other 400 kept apart; the table scores
  all 500, so 100 of the INT8 rows' photos were seen, without labels, by its calibration);
* the model zoo's **MobileNetV2 INT8** (real weights, registered as is: no float reference);
* ``--catalog``: **ResNet-50** with random weights, fp32 and INT8 (accuracy at chance, shown
  for its latency and its uninformative agreement).

Runtimes: ONNX Runtime; OpenVINO with the f32 hint; OpenVINO with bf16 where the CPU has it.

Usage: ``python bench/bench_accuracy.py [--workspace DIR] [--limit N] [--catalog] [--out F]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_runtimes import cpu_description  # noqa: E402


def _candidates(workspace, artifact, label: str) -> list[tuple[str, Any]]:
    """(row name, LoadedModel) for each runtime this machine offers for ``artifact``."""
    from accel_widgets.engine.packaging.service_config import model_config_for
    from accel_widgets.errors import ServingError
    from accel_widgets.preprocess import MAX_PIXELS
    from accel_widgets.serving import openvino_runtime
    from accel_widgets.serving.model import LoadedModel

    config = model_config_for(workspace, artifact)
    rows = []

    def load(runtime: str, bf16: bool) -> Any:
        chosen = dataclasses.replace(config, bf16=bf16)
        return LoadedModel.load(
            chosen, threads=None, max_pixels=MAX_PIXELS, max_batch=1, runtime_name=runtime
        )

    rows.append((f"{label} | onnxruntime", load("onnxruntime", False)))
    if openvino_runtime.available() is None:
        # OpenVINO 2026.4 cannot read the zoo MobileNetV2's QLinearConv: that row is left
        # out with the reason, as a service on "auto" would fall back to ONNX Runtime.
        try:
            rows.append((f"{label} | openvino f32", load("openvino", False)))
            if openvino_runtime.cpu_has_bf16():
                rows.append((f"{label} | openvino bf16", load("openvino", True)))
        except ServingError as exc:
            print(f"{label} | openvino: left out ({str(exc)[:160]})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", help="a workspace to reuse (default: a temporary one)")
    parser.add_argument("--limit", type=int, help="score only the first N photos")
    parser.add_argument("--catalog", action="store_true", help="add ResNet-50 (random weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()

    from accel_widgets.engine.checks.accuracy import accuracy
    from accel_widgets.engine.checks.labelled import read_labelled, shared_imagenet_photos
    from accel_widgets.engine.checks.verdicts import artifact_check
    from accel_widgets.engine.models.labels import weights_dirs
    from accel_widgets.engine.models.register import register_onnx
    from accel_widgets.engine.store.workspace import Workspace
    from accel_widgets.engine.walk.choices import get_choice, prepare_choice

    folder = shared_imagenet_photos()
    if folder is None:
        sys.exit(
            "no shared labelled photos: set ACCEL_WIDGETS_DATA_DIR (see engine/checks/labelled.py)"
        )
    scratch = tempfile.TemporaryDirectory()
    workspace = Workspace(args.workspace or Path(scratch.name) / "workspace")
    started = time.monotonic()
    _, artifacts, _ = prepare_choice(get_choice("squeezenet"), quantize="int8", workspace=workspace)
    groups = [("squeezenet", {a.precision: a for a in artifacts})]
    found = (d / "mobilenetv2-12-int8.onnx" for d in weights_dirs())
    zoo = next((f for f in found if f.is_file()), None)
    if zoo is not None:
        if not workspace.list_models("mobilenetv2"):
            register_onnx(zoo, "mobilenetv2", postprocess="softmax", workspace=workspace)
        model = workspace.get_model("mobilenetv2")
        groups.append(("mobilenetv2", {a.precision: a for a in workspace.list_artifacts(model)}))
    if args.catalog:
        from accel_widgets.engine.walk.prepare import prepare_model

        model, artifacts, _ = prepare_model(
            "resnet50", weights="random", quantize="int8", workspace=workspace
        )
        groups.append(("resnet50 (random)", {a.precision: a for a in artifacts}))
    print(f"prepared in {time.monotonic() - started:.0f} s", flush=True)

    photos = read_labelled(folder).photos[: args.limit]
    rows: list[dict[str, Any]] = []
    for name, by_precision in groups:
        candidates: list[tuple[str, Any, Any]] = []
        for precision, artifact in sorted(by_precision.items()):
            for row, loaded in _candidates(workspace, artifact, f"{name} {precision}"):
                candidates.append((row, loaded, artifact))
        outputs = {row: [] for row, _, _ in candidates}
        times = {row: [] for row, _, _ in candidates}
        order = random.Random(args.seed)
        for photo in photos:
            data = photo.data
            visit = list(candidates)
            order.shuffle(visit)
            for row, loaded, _ in visit:
                t = time.perf_counter()
                scores = next(iter(loaded.predict(loaded.config.input_alias, [data], []).values()))
                times[row].append((time.perf_counter() - t) * 1000)
                outputs[row].append(np.asarray(scores, np.float64).reshape(-1))
        truth = [p.label for p in photos]
        float_rows = [r for r, _, a in candidates if a.precision != "int8" and "onnxruntime" in r]
        reference = float_rows[0] if float_rows else None
        for row, loaded, artifact in candidates:
            acc = accuracy(outputs[row], truth)
            agree = None
            if reference is not None:
                ref = [int(np.argmax(o)) for o in outputs[reference]]
                agree = float(
                    np.mean(
                        [int(np.argmax(o)) == r for o, r in zip(outputs[row], ref, strict=True)]
                    )
                )
            p50 = float(np.median(times[row]))
            rows.append(
                {
                    "candidate": row,
                    "photos": acc["n"],
                    "top1": acc["top1"],
                    "top1_ci95": acc["top1_ci95"],
                    "top5": acc["top5"],
                    "agreement_with_float": agree,
                    "p50_ms": round(p50, 2),
                    "p90_ms": round(float(np.percentile(times[row], 90)), 2),
                    "p50_vs_reference": round(p50 / float(np.median(times[reference])), 3)
                    if reference
                    else None,
                    "verdict": artifact_check(artifact.report, artifact.precision).text,
                }
            )
            loaded.close()
    _print(rows)
    cpu = cpu_description()
    print(f"\nCPU: {cpu['model']} ({', '.join(cpu['flags']) or 'no AVX-512'}), {cpu['cpus']} CPUs")
    print(f"photos: {folder} ({len(photos)})")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=2))


def _print(rows: list[dict[str, Any]]) -> None:
    header = [
        "candidate",
        "top-1 [95% CI]",
        "top-5",
        "agrees with float",
        "p50 ms",
        "p90 ms",
        "p50 / ref",
    ]
    table = [header]
    for r in rows:
        low, high = r["top1_ci95"]
        table.append(
            [
                r["candidate"],
                f"{r['top1']:.3f} [{low:.3f}, {high:.3f}]",
                f"{r['top5']:.3f}",
                "-" if r["agreement_with_float"] is None else f"{r['agreement_with_float']:.3f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p90_ms']:.2f}",
                "-" if r["p50_vs_reference"] is None else f"{r['p50_vs_reference']:.2f}x",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print()
    for r in rows:
        print(f"{r['candidate']}: {r['verdict']}")


if __name__ == "__main__":
    main()
