"""Decode paths: what ``Preprocessing.decode="exact"`` costs against ``"fast"``, and what it buys.

Measured side by side in one run (interleaved, see engine/clients/timing.py):

* cost: decode + resize + crop + normalise to the model input, p50 ms per image, for the
  bundled photos and the chelsea photo enlarged to 1024x768, 2048x1536 and 4032x3024 (a
  12-megapixel phone photo), and the ratio exact / fast;
* fidelity: how far each path's pixels land from a reference pipeline written out here
  (Pillow full decode, bilinear resize of the short side to 256, centre crop 224), and with
  the real weights in ``$ACCEL_WIDGETS_WEIGHTS_DIR`` the largest score difference and top-1
  agreement per photo for SqueezeNet fp16 and MobileNetV2 INT8.

Usage: ``python bench/bench_decode.py [--runs 30]``.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from accel_widgets.engine.checks.samples import encode_jpeg, sample_photos
from accel_widgets.engine.clients.timing import measure_interleaved
from accel_widgets.preprocess import Preprocessing, prepare

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def reference_crop(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    size = (256, round(h * 256 / w)) if w <= h else (round(w * 256 / h), 256)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    return np.asarray(image.crop((left, top, left + 224, top + 224)))


def photos() -> dict[str, bytes]:
    found = {p.name: p.data for p in sample_photos()}
    cat = Image.open(io.BytesIO(found["chelsea"]))
    for size in ((1024, 768), (2048, 1536), (4032, 3024)):
        enlarged = cat.resize(size, Image.Resampling.BICUBIC)
        found[f"chelsea {size[0]}x{size[1]}"] = encode_jpeg(np.asarray(enlarged))
    return found


def cost_and_pixels(found: dict[str, bytes], runs: int) -> None:
    exact, fast = Preprocessing(dtype="uint8"), Preprocessing(dtype="uint8", decode="fast")
    print(f"{'photo':<20} {'exact ms':>9} {'fast ms':>8} {'exact/fast':>10}  |fast - ref| max/mean")
    for name, data in found.items():
        times = measure_interleaved(
            {"exact": lambda d=data: prepare(d, exact), "fast": lambda d=data: prepare(d, fast)},
            runs=runs if len(data) < 200_000 else max(5, runs // 3),
            gap_s=0.01,
        )
        ref = reference_crop(data).astype(int)
        assert (prepare(data, exact)[0].astype(int) == ref).all(), "exact must equal the reference"
        diff = np.abs(prepare(data, fast)[0].astype(int) - ref)
        e, f = times["exact"]["p50_ms"], times["fast"]["p50_ms"]
        print(f"{name:<20} {e:>9.2f} {f:>8.2f} {e / f:>10.2f}  {diff.max()}/{diff.mean():.2f}")


def fidelity(found: dict[str, bytes], weights: Path) -> None:
    import onnxruntime as ort

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max())
        return e / e.sum()

    models = {
        "squeezenet": (
            "SqueezeNet_fp16.onnx",
            Preprocessing(channel_order="BGR", layout="NCHW", dtype="float16"),
            lambda c: c[..., ::-1].astype(np.float32).transpose(2, 0, 1)[None].astype(np.float16),
            lambda o: o.astype(np.float64).ravel(),
        ),
        "mobilenetv2-int8": (
            "mobilenetv2-12-int8.onnx",
            Preprocessing(layout="NCHW", scale=1 / 255, mean=MEAN, std=STD),
            lambda c: ((c / 255.0 - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)[None],
            lambda o: softmax(o.astype(np.float64).ravel()),
        ),
    }
    print(
        f"\n{'photo':<12} {'model':<17} "
        f"{'exact: top1, max|diff|':>24} {'fast: top1, max|diff|':>24}"
    )
    for model, (file_name, pre, reference_input, scores) in models.items():
        session = ort.InferenceSession(str(weights / file_name), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        for name, data in found.items():
            if "x" in name:  # the enlarged copies say nothing new about labels
                continue
            ref = scores(session.run(None, {feed: reference_input(reference_crop(data))})[0])
            cells = []
            for mode in ("exact", "fast"):
                x = prepare(data, Preprocessing(**{**pre.__dict__, "decode": mode}))
                out = scores(session.run(None, {feed: x})[0])
                same = "same" if out.argmax() == ref.argmax() else "FLIPS"
                cells.append(f"{same}, {np.abs(out - ref).max():.2g}")
            print(f"{name:<12} {model:<17} {cells[0]:>24} {cells[1]:>24}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    cpu = subprocess.run(
        ["grep", "-m1", "model name", "/proc/cpuinfo"], capture_output=True, text=True
    ).stdout.strip()
    print(f"{cpu}, {os.cpu_count()} CPUs")
    found = photos()
    cost_and_pixels(found, args.runs)
    weights = Path(os.environ.get("ACCEL_WIDGETS_WEIGHTS_DIR", "../shared/weights"))
    if (weights / "SqueezeNet_fp16.onnx").is_file():
        fidelity(found, weights)
    else:
        print(f"\n(no real weights in {weights}: set ACCEL_WIDGETS_WEIGHTS_DIR for fidelity)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
