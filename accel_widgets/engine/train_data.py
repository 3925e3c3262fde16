"""Training data: a folder with one sub-folder per class, split reproducibly, checked early.

A user's photos arrive as ``photos/rose/*.jpg``, ``photos/tulip/*.png``...: the sub-folder
names are the class names the trained model answers with. Everything that would make
training fail or mislead is refused here, before a feature is computed, in the user's words:
fewer than two classes, a class with too few images to both train on and hold out, and
files that cannot be decoded (all of them named, not just the first). Pictures of mixed
sizes are fine: the server's preprocessing (resize, centre crop) makes them one size.

The offline demo sets ship inside installed packages (nothing is downloaded):
scikit-learn's ``load_digits()`` (1,797 8x8 hand-written digits, 10 classes) written as
upscaled PNGs, and scikit-image's ``lfw_subset()`` (100 faces and 100 non-faces, 25x25
grayscale, from Labeled Faces in the Wild) written as JPEGs. Both go through the same folder
loader as a user's photos.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accel_widgets.engine.samples import IMAGE_SUFFIXES
from accel_widgets.errors import AccelError
from accel_widgets.preprocess import Preprocessing, prepare

#: Fewest images a class may have: at least one held out and a few to learn from.
MIN_PER_CLASS = 5
#: The bundled demo sets (``--sample``).
SAMPLES = ("digits", "lfw")


class TrainDataError(AccelError):
    """A training folder that cannot be trained on (the message says which part and why)."""


@dataclass(frozen=True)
class ImageFolder:
    """The scanned folder: class names (sorted), every image file and its class index."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[Path, ...]
    targets: np.ndarray  # int, one per file

    @property
    def counts(self) -> dict[str, int]:
        """Images per class, in class order (what the Train step shows before training)."""
        found = np.bincount(self.targets, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, found, strict=True)}


@dataclass(frozen=True)
class Split:
    """Indices into :attr:`ImageFolder.files`: what the head learns from, what it is judged on."""

    train: np.ndarray
    holdout: np.ndarray
    seed: int


def scan_folder(
    folder: str | os.PathLike[str], *, min_per_class: int = MIN_PER_CLASS
) -> ImageFolder:
    """Read the class folders and their image files (sorted, so runs are reproducible).

    Hidden files and files that are not images by suffix (notes, ``Thumbs.db``) are skipped;
    images in the top folder itself are refused, since they belong to no class.

    Raises
    ------
    TrainDataError
        A missing folder, fewer than two classes, or classes with too few images.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise TrainDataError(
            f"training folder {root} does not exist; give a folder with one sub-folder per "
            "class (photos/rose/*.jpg, photos/tulip/*.jpg ...)"
        )
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = {
        d.name: sorted(
            p
            for p in d.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        for d in class_dirs
    }
    per_class = {name: files for name, files in per_class.items() if files}
    if len(per_class) < 2:
        found = ", ".join(f"{n} ({len(f)} images)" for n, f in per_class.items()) or "none"
        hint = (
            f"; the {len(loose)} images directly in {root.name} belong to no class, "
            "move them into class folders"
            if loose
            else ""
        )
        raise TrainDataError(
            f"{root} needs at least 2 class folders with images in them to train a classifier; "
            f"found {len(per_class)}: {found}{hint}"
        )
    small = {name: len(files) for name, files in per_class.items() if len(files) < min_per_class}
    if small:
        listing = ", ".join(f"{name} has {n}" for name, n in small.items())
        raise TrainDataError(
            f"every class needs at least {min_per_class} images (some to learn from, at least "
            f"one held out to check on); {listing}. Add images or remove the class folder."
        )
    classes = tuple(per_class)
    files = tuple(p for name in classes for p in per_class[name])
    targets = np.array([i for i, name in enumerate(classes) for _ in per_class[name]], np.int64)
    return ImageFolder(root, classes, files, targets)


def split(data: ImageFolder, *, holdout: float = 0.2, seed: int = 0) -> Split:
    """Hold out ``holdout`` of each class (at least one image), the same way for the same seed.

    Per class rather than scikit-learn's ``train_test_split(stratify=...)``: that refuses a
    test set smaller than the number of classes, which small folders (5 images a class, many
    classes) hit, and every class must be checked on at least one image it never trained on.
    """
    if not 0.0 < holdout < 1.0:
        raise TrainDataError(f"holdout must be between 0 and 1 (a share of each class); {holdout}")
    rng = np.random.default_rng(seed)
    train, held = [], []
    for index in range(len(data.classes)):
        members = np.flatnonzero(data.targets == index)
        members = members[rng.permutation(len(members))]
        n_held = min(len(members) - 1, max(1, round(len(members) * holdout)))
        held.extend(members[:n_held])
        train.extend(members[n_held:])
    return Split(np.sort(np.array(train)), np.sort(np.array(held)), seed)


def load_pixels(
    files: Sequence[Path], pre: Preprocessing, *, root: Path | None = None
) -> list[np.ndarray]:
    """Decode every file as the server will (same decoder, resize and crop), one [H, W, 3] each.

    Raises
    ------
    TrainDataError
        Naming every file that could not be decoded (up to 20), so one pass fixes them all.
    """
    pixels, bad = [], []
    for path in files:
        try:
            pixels.append(prepare(path.read_bytes(), pre)[0])
        except (AccelError, OSError, ValueError) as exc:
            shown = path.relative_to(root) if root is not None else path
            bad.append(f"{shown} ({exc})")
    if bad:
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise TrainDataError(
            f"{len(bad)} file(s) cannot be read as images: "
            + "; ".join(bad[:20])
            + more
            + ". Remove or replace them (or re-save them as JPEG/PNG) and train again."
        )
    return pixels


def _sample_set(name: str) -> tuple[np.ndarray, np.ndarray, list[str], str, str]:
    """A bundled set's images (0..1 grays), class indices, class names, suffix and format."""
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images / 16.0, bunch.target, [str(d) for d in range(10)], ".png", "PNG"
    if name == "lfw":
        from skimage.data import lfw_subset

        images = lfw_subset()  # 0..1 floats; the first 100 are faces
        return images, np.array([0] * 100 + [1] * 100), ["face", "not-face"], ".jpg", "JPEG"
    raise TrainDataError(f"no sample set {name!r}; the bundled ones are {', '.join(SAMPLES)}")


def sample_counts(name: str, per_class: int | None = None) -> dict[str, int]:
    """Classes and image counts of a bundled set as :func:`write_sample` would write it."""
    _, targets, classes, _, _ = _sample_set(name)
    found = np.bincount(targets, minlength=len(classes))
    counts = zip(classes, found, strict=True)
    return {c: int(min(n, per_class) if per_class else n) for c, n in counts}


def sample_examples(name: str, per_class: int = 4, size: int = 48) -> dict[str, list[bytes]]:
    """The first ``per_class`` pictures of each class of a bundled set, as PNG bytes of
    ``size`` px: what "Look at the data" shows beside the counts (a digit is easier to
    believe seen than counted)."""
    from PIL import Image

    images, targets, classes, _, _ = _sample_set(name)
    examples: dict[str, list[bytes]] = {}
    for index, class_name in enumerate(classes):
        pictures = []
        for member in np.flatnonzero(targets == index)[:per_class]:
            gray = np.clip(images[member] * 255.0, 0, 255).astype(np.uint8)
            picture = Image.fromarray(gray).resize((size, size), Image.NEAREST)
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            pictures.append(buffer.getvalue())
        examples[class_name] = pictures
    return examples


def write_sample(
    name: str,
    folder: str | os.PathLike[str],
    *,
    per_class: int | None = None,
    size: int = 64,
) -> Path:
    """Write a bundled demo set as a class-per-folder tree under ``folder``; returns it.

    ``digits``: classes ``0``..``9``, each 8x8 digit upscaled to ``size`` px (bilinear) and
    saved as PNG (its sharp strokes suffer in JPEG). ``lfw``: classes ``face`` and
    ``not-face``, 25x25 grayscale upscaled and saved as JPEG, as photos usually arrive.
    ``per_class`` keeps the first N of each class (a quick demo or test).
    """
    from PIL import Image

    root = Path(folder).expanduser()
    images, targets, classes, suffix, fmt = _sample_set(name)
    for index, class_name in enumerate(classes):
        members = np.flatnonzero(targets == index)[:per_class]
        class_dir = root / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        for number, member in enumerate(members):
            gray = np.clip(images[member] * 255.0, 0, 255).astype(np.uint8)
            picture = Image.fromarray(gray).convert("RGB").resize((size, size), Image.BILINEAR)
            buffer = io.BytesIO()
            picture.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
            (class_dir / f"{class_name}-{number:04d}{suffix}").write_bytes(buffer.getvalue())
    return root
