"""Real photos for validation, calibration and demos, with no download.

scikit-image and scikit-learn ship a handful of real photographs inside their wheels
(a cat, an espresso, a rocket, a palace...). They are re-encoded as JPEG (quality 90) because
that is what users send to a service. A user's own folder of images can replace them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accel_widgets.errors import AccelError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class Photo:
    """One sample photo: a name, its JPEG (or original file) bytes, and what it shows."""

    name: str
    data: bytes
    shows: str


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).convert("RGB").save(
        buffer, format="JPEG", quality=quality
    )
    return buffer.getvalue()


def sample_photos(names: list[str] | None = None) -> list[Photo]:
    """The bundled photos (skimage: chelsea, coffee, astronaut, rocket; sklearn: china, flower)."""
    from skimage import data as sk

    found: dict[str, tuple[np.ndarray, str]] = {
        "chelsea": (sk.chelsea(), "a cat (ImageNet 281-285)"),
        "coffee": (sk.coffee(), "an espresso (ImageNet 967)"),
        "astronaut": (sk.astronaut(), "an astronaut"),
        "rocket": (sk.rocket(), "a rocket (ImageNet 657 missile)"),
    }
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        for file_name, image in zip(bunch.filenames, bunch.images, strict=True):
            stem = Path(file_name).stem
            found[stem] = (image, "a palace" if stem == "china" else "a flower")
    except ImportError:  # scikit-learn is optional: the skimage photos are enough
        pass
    wanted = names or list(found)
    unknown = [n for n in wanted if n not in found]
    if unknown:
        raise AccelError(f"no sample photo {unknown}; available: {', '.join(found)}")
    return [Photo(n, encode_jpeg(found[n][0]), found[n][1]) for n in wanted]


def photos_from_folder(folder: str | Path, limit: int = 64) -> list[Photo]:
    """Images from a user's folder (JPEG, PNG, BMP, WebP), sorted by name, at most ``limit``."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise AccelError(f"calibration folder {folder} does not exist; give a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise AccelError(
            f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); "
            "add a few typical photos, 8 or more"
        )
    return [Photo(p.stem, p.read_bytes(), "") for p in files]
