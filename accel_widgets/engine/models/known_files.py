"""Pretrained files the kit recognises by their bytes, and the pixels each was trained on.

A pretrained classifier only answers right when it is fed the pixels it was trained with,
and an ONNX file does not say what those are. The walk's SqueezeNet sample lost 18 points of
top-1 on labelled ImageNet photos (0.42 instead of 0.60) because it was registered without
the Caffe mean it was trained with. So the facts live here, once, keyed by the file's sha256:
every path that registers one of these files (the walk, ``accel-widgets register``, the
scoring notebook, the CLI walk) gets the same preprocessing without being told, and an
explicit ``preprocessing`` still wins.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class KnownFile:
    """A pretrained file's identity and what it needs."""

    title: str
    preprocessing: dict[str, Any]
    labels: str
    source: str


#: DeepScale trained SqueezeNet 1.1 in Caffe on BGR pixels 0..255 minus the mean
#: 104/117/123 (its train_val.prototxt); measured on the 500 shared labelled ImageNet photos:
#: top-1 0.60, top-5 0.82 with it, 0.45 / 0.69 without (published: 58.2 % / 80.6 %).
SAMPLE_PREPROCESSING: dict[str, Any] = {"channel_order": "BGR", "mean": [104.0, 117.0, 123.0]}

KNOWN_FILES: dict[str, KnownFile] = {
    "21f25e3d9254af93e6218a359469fac714a017b3f9035c0f5c4acbf9a3ff7233": KnownFile(
        title="SqueezeNet 1.1 (float16 ONNX, Windows-Machine-Learning's SqueezeNet_fp16.onnx)",
        preprocessing=SAMPLE_PREPROCESSING,
        labels="imagenet",
        source="DeepScale/SqueezeNet's Caffe training: BGR, 0..255, mean 104/117/123",
    ),
    "83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f": KnownFile(
        title="MobileNetV2 1.0 INT8 (ONNX model zoo mobilenetv2-12-int8)",
        preprocessing={"preset": "torch"},
        labels="imagenet",
        source="the ONNX model zoo's torchvision preprocessing: RGB / 255, mean and std",
    ),
}


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def known_file(path: str | os.PathLike[str]) -> KnownFile | None:
    """The facts for ``path`` when its bytes are one of :data:`KNOWN_FILES`, else None."""
    if Path(path).stat().st_size > 64 * 2**20:  # every known file is small; skip hashing big ones
        return None
    return KNOWN_FILES.get(file_sha256(path))
