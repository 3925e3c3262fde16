"""Engine benchmark: conversion cost per classifier, and batch-1 latency ratios for ResNet-50.

Everything is measured side by side in one run on this machine, so the ratios hold even when
the absolute numbers drift with the machine's load:

* conversion seconds and peak memory (RSS of the converter process) for each classifier;
* ResNet-50 batch-1 latency: ONNX Runtime fp32 vs TensorFlow in-process (the SavedModel's
  pixel function), and INT8 vs fp32 -- interleaved with idle gaps (see engine/clients/timing.py);
* where JPEG decoding should live: simplejpeg vs Pillow vs ``tf.io.decode_jpeg`` on the same
  photo, decode + resize + crop to the model input.

Usage: ``python bench/bench_engine.py [--models resnet50,densenet121] [--runs 40]``.
Random weights: latency does not depend on weight values.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def conversion_table(names: list[str], workspace) -> list[dict]:
    from accel_widgets.engine.conversion.convert import convert
    from accel_widgets.engine.models.build import build_model

    rows = []
    for name in names:
        started = time.monotonic()
        model = build_model(name, weights="random", workspace=workspace)
        built = time.monotonic() - started
        artifacts = convert(
            model.name, quantize="int8" if name == "resnet50" else None, workspace=workspace
        )
        fp32 = artifacts[0].report
        rows.append(
            {
                "model": name,
                "build_s": round(built, 1),
                "convert_s": fp32["convert_seconds"],
                "convert_peak_gib": fp32["convert_peak_rss_gib"],
                "onnx_mb": fp32["size_mb"],
                "max_abs_diff_vs_tf": fp32["vs_tensorflow"]["max_abs_diff"],
                "top1_vs_tf": fp32["vs_tensorflow"]["top1_agreement"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def latency_ratios(workspace, runs: int) -> dict:
    import tensorflow as tf

    from accel_widgets.engine.checks.samples import sample_photos
    from accel_widgets.engine.clients.timing import measure_interleaved
    from accel_widgets.engine.conversion.validate import onnx_session
    from accel_widgets.preprocess import Preprocessing, prepare

    model = workspace.get_model("resnet50")
    fp32 = onnx_session(workspace.get_artifact("resnet50", precision="fp32").file)
    int8 = onnx_session(workspace.get_artifact("resnet50", precision="int8").file)
    loaded = tf.saved_model.load(str(model.path / "saved_model"))
    pixel_fn = loaded.signatures["predict_pixels"]
    x = prepare(sample_photos(["chelsea"])[0].data, Preprocessing())
    constant = tf.constant(x)
    timings = measure_interleaved(
        {
            "tensorflow_fp32": lambda: pixel_fn(pixels=constant),
            "onnxruntime_fp32": lambda: fp32.run(None, {"pixels": x}),
            "onnxruntime_int8": lambda: int8.run(None, {"pixels": x}),
        },
        runs=runs,
        warmup=5,
        gap_s=0.05,
    )
    tf_p50 = timings["tensorflow_fp32"]["p50_ms"]
    fp32_p50 = timings["onnxruntime_fp32"]["p50_ms"]
    int8_p50 = timings["onnxruntime_int8"]["p50_ms"]
    return {
        "timings": timings,
        "ort_fp32_vs_tf": round(fp32_p50 / tf_p50, 3),
        "int8_vs_fp32": round(int8_p50 / fp32_p50, 3),
        "int8_vs_tf": round(int8_p50 / tf_p50, 3),
    }


def decode_comparison(runs: int) -> dict:
    """Decode + resize short side 256 + centre crop 224, three ways, on two photo sizes."""
    import io

    import tensorflow as tf
    from PIL import Image

    from accel_widgets.engine.checks.samples import encode_jpeg, sample_photos
    from accel_widgets.engine.clients.timing import measure_interleaved
    from accel_widgets.preprocess import Preprocessing, prepare

    pre = Preprocessing()
    small = sample_photos(["chelsea"])[0].data  # 451x300
    big_rgb = np.asarray(Image.open(io.BytesIO(small)).resize((1024, 768)))
    big = encode_jpeg(big_rgb)

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def tf_decode(data):
        image = tf.cast(tf.io.decode_jpeg(data, channels=3), tf.float32)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        new = tf.cast(tf.round(shape * 256.0 / tf.reduce_min(shape)), tf.int32)
        image = tf.image.resize(image, new, antialias=True)
        return tf.image.resize_with_crop_or_pad(image, 224, 224)

    def pil(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = image.size
        s = 256 / min(w, h)
        image = image.resize((round(w * s), round(h * s)), Image.BILINEAR)
        w, h = image.size
        left, top = (w - 224) // 2, (h - 224) // 2
        return np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32)

    out = {}
    for label, data in (("451x300", small), ("1024x768", big)):
        tensor = tf.constant(data)
        out[label] = measure_interleaved(
            {
                "simplejpeg (ours)": lambda d=data: prepare(d, pre),
                "pillow": lambda d=data: pil(d),
                "tf.io.decode_jpeg": lambda t=tensor: tf_decode(t),
            },
            runs=runs,
            gap_s=0.01,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,densenet121,resnet152,vgg16")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    from accel_widgets.engine.store.workspace import Workspace

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if "resnet50" not in names:
        names.insert(0, "resnet50")
    with tempfile.TemporaryDirectory(prefix="accel-bench-") as folder:
        workspace = Workspace(folder)
        print("== conversion (random weights, one child process per model)", flush=True)
        conversions = conversion_table(names, workspace)
        print("== ResNet-50 batch-1 latency, interleaved", flush=True)
        latency = latency_ratios(workspace, args.runs)
        print(json.dumps(latency, indent=1), flush=True)
        print("== decode + resize + crop to 224, p50 ms", flush=True)
        decode = decode_comparison(args.runs)
        for size, rows in decode.items():
            print(size, {k: v["p50_ms"] for k, v in rows.items()}, flush=True)

    print("\nSUMMARY")
    print(f"{'model':<12} {'convert s':>9} {'peak GiB':>9} {'ONNX MB':>8} {'max|TF-ONNX|':>13}")
    for row in conversions:
        print(
            f"{row['model']:<12} {row['convert_s']:>9} {row['convert_peak_gib']:>9} "
            f"{row['onnx_mb']:>8} {row['max_abs_diff_vs_tf']:>13.2e}"
        )
    t = latency["timings"]
    print(
        f"ResNet-50 p50: TF {t['tensorflow_fp32']['p50_ms']:.1f} ms, "
        f"ORT fp32 {t['onnxruntime_fp32']['p50_ms']:.1f} ms, "
        f"ORT int8 {t['onnxruntime_int8']['p50_ms']:.1f} ms"
    )
    print(
        f"ratios: ORT fp32 / TF = {latency['ort_fp32_vs_tf']} (target <= 0.7); "
        f"INT8 / fp32 = {latency['int8_vs_fp32']} (target <= 0.35); "
        f"INT8 / TF = {latency['int8_vs_tf']}"
    )
    if args.out:
        args.out.write_text(
            json.dumps({"conversions": conversions, "latency": latency, "decode": decode}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
