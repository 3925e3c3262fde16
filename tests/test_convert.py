"""Build -> register -> convert -> validate -> quantize, on the real catalog architectures.

Weights are random (no downloads here), so the pipeline is proven numerically: the ONNX model
must compute what the TensorFlow SavedModel computes, on real photos, within float rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from accel_widgets.engine.checks.samples import sample_photos
from accel_widgets.engine.conversion.convert import convert
from accel_widgets.engine.models.build import build_model
from accel_widgets.engine.models.catalog import get_spec
from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.preprocess import Preprocessing, prepare
from accel_widgets.progress import EventLog

CLASSIFIERS = ["resnet50", "resnet152", "densenet121", "vgg16"]


@pytest.fixture(scope="module")
def catalog_workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("catalog-workspace"))


def _tensorflow_scores(saved_model, pixels: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    outputs = loaded.signatures["predict_pixels"](pixels=tf.constant(pixels))
    return next(iter(outputs.values())).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_catalog_classifier_converts_and_matches_tensorflow(catalog_workspace, name):
    spec = get_spec(name)
    events = EventLog()
    quantize = "int8" if name == "resnet50" else None
    model = build_model(name, weights="random", workspace=catalog_workspace, progress=events)
    artifacts = convert(name, workspace=catalog_workspace, quantize=quantize, progress=events)

    fp32 = artifacts[0]
    assert fp32.precision == "fp32" and fp32.file.is_file()
    same_pixels = fp32.report["vs_tensorflow"]
    # Checked on the shared labelled ImageNet photos: TensorFlow on 32 of the 64 a
    # random-weight model is checked on (engine/checks/check_photos.py), ONNX Runtime on all 64.
    assert same_pixels["n_images"] == 32
    assert same_pixels["top1_agreement"] == 1.0
    assert same_pixels["max_rel_diff"] < 1e-3, same_pixels
    # The end-to-end path (TF's own JPEG decoding vs ours) is reported for the user to see.
    assert fp32.report["vs_tensorflow_jpeg"]["n_images"] == 32
    assert fp32.report["accuracy"]["n"] == 64 and len(fp32.report["predictions"]) == 64
    assert fp32.size_bytes / 2**20 == pytest.approx(spec.fp32_mb, rel=0.15)
    # The catalog tells users how much memory converting needs: it must be true.
    assert fp32.report["convert_peak_rss_gib"] <= spec.convert_gib, fp32.report

    # Independently of the report: a fresh ONNX Runtime session on the cat photo.
    import onnxruntime as ort

    pixels = prepare(sample_photos(["chelsea"])[0].data, Preprocessing())
    session = ort.InferenceSession(str(fp32.file), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {"pixels": pixels})[0]
    tf_scores = _tensorflow_scores(model.path / "saved_model", pixels)
    assert onnx_scores.shape == (1, spec.num_classes)
    np.testing.assert_allclose(onnx_scores, tf_scores, rtol=1e-3, atol=1e-6)
    assert onnx_scores.sum() == pytest.approx(1.0, abs=1e-4)

    # Whether OpenVINO may compute in bf16 was measured on the photos
    # (engine/conversion/bf16_check.py).
    from accel_widgets.serving import openvino_runtime

    bf16 = fp32.report["bf16"]
    if openvino_runtime.cpu_has_bf16():
        assert bf16["n_images"] == 64 and bf16["device"] == "CPU", bf16
        assert bf16["reference_top1"] == fp32.report["predictions"]
        pairs = zip(bf16["reference_top1"], bf16["candidate_top1"], strict=True)
        agree = sum(r == c for r, c in pairs)
        assert bf16["top1_agree_count"] == agree
    else:
        assert "no AVX512-BF16 or AMX" in bf16["skipped"], bf16
    if name == "resnet50":
        _served_precision_follows_the_bf16_check(catalog_workspace, fp32, bf16)

    steps = events.steps()
    assert steps[:2] == ["build", "register"]
    assert "convert" in steps and "validate" in steps
    assert sum(e.step == "convert" for e in events) > 2, "conversion progress must move"

    if quantize:
        int8 = artifacts[1]
        assert int8.precision == "int8"
        assert int8.size_bytes <= 0.3 * fp32.size_bytes
        assert int8.report["vs_fp32"]["n_images"] == 64
        assert int8.report["calibration_disjoint"] is True
        assert "quantize" in events.steps()
        # Converting and quantizing run in one child process: its peak must fit the catalog too.
        assert int8.report["process_peak_rss_gib"] <= spec.convert_gib, int8.report
        # Random weights give (nearly) every photo one class: agreement proves nothing, so
        # INT8 is kept but not recommended, and deploy takes the float model by default.
        gate = int8.report["gate"]
        assert gate["recommended"] is False and "not informative" in gate["reasons"][0], gate
        assert catalog_workspace.get_artifact(name).precision == "fp32"


def test_quantized_catalog_name_builds_float_and_quantizes(workspace):
    """`quantized-densenet121` is the float build plus an INT8 artifact, registered together."""
    from accel_widgets.cli import main

    code = main(
        [
            "--workspace",
            str(workspace.root),
            "convert",
            "quantized-densenet121",
            "--weights",
            "random",
        ]
    )
    assert code == 0
    artifacts = workspace.list_artifacts(workspace.get_model("densenet121"))
    assert sorted(a.precision for a in artifacts) == ["fp32", "int8"]
    agreement = next(a for a in artifacts if a.precision == "int8").report["vs_fp32"]
    assert agreement["top1_agreement"] >= 5 / 6


def _served_precision_follows_the_bf16_check(workspace, artifact, bf16) -> None:
    """OpenVINO serves the artifact in bf16 exactly when the check agreed on every photo
    and this CPU has bf16; otherwise it is asked for f32 (its own default would be bf16)."""
    from accel_widgets.engine.packaging.service_config import server_config_for
    from accel_widgets.serving import openvino_runtime
    from accel_widgets.serving.model import LoadedModel

    config = server_config_for(workspace, artifact, "bf16-check")
    model = LoadedModel.load(
        config.models[0],
        threads=None,
        max_pixels=config.max_pixels,
        max_batch=1,
        runtime_name="openvino",
    )
    validated = bf16.get("top1_agreement") == 1.0 and openvino_runtime.cpu_has_bf16()
    assert model.runtime_info.inference_precision == ("bf16" if validated else "f32")
