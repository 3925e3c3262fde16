"""Whether OpenVINO may compute a model in bf16: measured on the real photos at conversion.

OpenVINO's CPU plugin computes in bf16 by default on CPUs that have it (AVX512-BF16, AMX):
ResNet-50 fp32 took 0.34x ONNX Runtime fp32's time that way on the AMD EPYC here, against
0.62x in f32 (bench/bench_runtimes.py). bf16 keeps 8 bits of mantissa, so near ties can flip.
The server therefore computes in bf16 only where this check, stored as the artifact report's
``bf16`` entry, found the same top 1 as fp32 on every validation photo
(``engine/service_config.bf16_validated``); everywhere else it asks for f32 explicitly.

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


def bf16_check(
    onnx_path: Path, inputs: Sequence[np.ndarray], fp32_outputs: Sequence[np.ndarray]
) -> dict[str, Any]:
    """OpenVINO bf16 against ONNX Runtime fp32 on ``inputs``: a ``validate.compare`` dict
    plus ``device``, or ``{"skipped": why}`` when bf16 cannot run here."""
    from accel_widgets.engine.validate import compare
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
    bf16_outputs = [session.run(None, {name: x})[0] for x in inputs]
    return {**compare(fp32_outputs, bf16_outputs), "device": "CPU"}
