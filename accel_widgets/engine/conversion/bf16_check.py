"""Whether OpenVINO may compute a model in bf16: measured on the real photos at conversion.

OpenVINO's CPU plugin computes in bf16 by default on CPUs that have it (AVX512-BF16, AMX):
ResNet-50 fp32 took 0.34x ONNX Runtime fp32's time that way on the AMD EPYC here, against
0.62x in f32 (bench/bench_runtimes.py). bf16 keeps 8 bits of mantissa, so near ties can flip.
The server therefore computes in bf16 only where this check, stored as the artifact report's
``bf16`` entry, allows it (``allowed``, read by ``engine/service_config.bf16_validated``);
everywhere else it asks for f32 explicitly. The rule, for float and INT8 artifacts alike
(the non-quantized parts of an INT8 graph run in the hinted precision too: ResNet-50 INT8 ran
in 5.1 ms with bf16 against 7.0 ms in f32 on an AMX Xeon):

* on labelled photos, bf16's top-1 accuracy is within :data:`BF16_MAX_LOSS_POINTS` of the
  f32 run's (a near tie that flips both ways costs nothing; a systematic loss is refused);
* without labels, bf16 gives the same top 1 as f32 on every photo.

The check runs in the converter's child process, after the fp32 validation, on the same
preprocessed photos; it costs one OpenVINO compile and one run per photo (about 1 s for
ResNet-50 here). Where OpenVINO is not installed or the CPU has no bf16, the entry says why
and the model serves in f32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BF16_MAX_LOSS_POINTS = 0.5


def bf16_check(
    onnx_path: Path,
    inputs: Sequence[np.ndarray],
    fp32_outputs: Sequence[np.ndarray],
    labels: Sequence[int] | None = None,
) -> dict[str, Any]:
    """OpenVINO bf16 against the f32 outputs (ONNX Runtime's) on ``inputs``: a
    ``validate.compare`` dict plus ``device``, the accuracies where ``labels`` are given,
    and the decision ``allowed`` with its ``rule``; or ``{"skipped": why}`` when bf16
    cannot run here."""
    from accel_widgets.engine.conversion.validate import compare
    from accel_widgets.serving import openvino_runtime
    from accel_widgets.serving.runtime import available_cpus

    missing = openvino_runtime.available()
    if missing is not None:
        return {"skipped": missing}
    if not openvino_runtime.cpu_has_bf16():
        return {"skipped": "this CPU has no AVX512-BF16 or AMX: OpenVINO computes in f32"}
    try:
        session = openvino_runtime.OpenVinoSession(
            onnx_path, threads=available_cpus(), precision_hint="bf16"
        )
    except Exception as exc:  # a model OpenVINO cannot read is served by ONNX Runtime
        return {"skipped": f"OpenVINO cannot compile this model: {exc}"}
    name = session.get_inputs()[0].name
    bf16_outputs = [session.run(None, {name: x.astype(np.float32)})[0] for x in inputs]
    result: dict[str, Any] = {**compare(fp32_outputs, bf16_outputs), "device": "CPU"}
    if labels:
        from accel_widgets.engine.checks.accuracy import accuracy

        bf16_acc = accuracy(bf16_outputs, labels)["top1"]
        f32_acc = accuracy(fp32_outputs, labels)["top1"]
        change = round((bf16_acc - f32_acc) * 100, 2)
        result.update(
            top1_accuracy=bf16_acc,
            f32_top1_accuracy=f32_acc,
            accuracy_change_points=change,
            allowed=-change <= BF16_MAX_LOSS_POINTS,
            rule=f"top-1 within {BF16_MAX_LOSS_POINTS} point of f32 on {len(labels)} "
            "labelled photos",
        )
    else:
        result.update(
            allowed=result["top1_agreement"] == 1.0,
            rule=f"the same top 1 as f32 on every one of {len(inputs)} photos",
        )
    return result
