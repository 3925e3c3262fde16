"""Labelled photos: folders whose every file says which class it shows.

Accuracy can only be measured on photos whose right answer is known, and nobody here should
be the one who wrote those answers down. Two folder layouts are read:

* **ImageNet files**, named ``WNID_anything.JPEG`` (``n01440764_tench.JPEG``), as ImageNet's
  validation photos and most of its samples are named. A photo's class index is the place of
  its WNID in the sorted list of the 1000 ImageNet-1k WNIDs, which ships with the package
  (``accel_widgets/data/imagenet_wnids.txt``, the standard index order of every ImageNet
  classifier here, and of ``imagenet_classes.txt``): no download.
* **One sub-folder per class**, named by the class index (``0``, ``1``...) or by the class
  name as the model's labels spell it (case, spaces and underscores do not matter): the
  layout ``accel-widgets train`` reads, and the one a trained model keeps its held-out
  pictures in.

Files that cannot be labelled (an image at the top of a class-folder tree, a WNID that is
not one of the 1000, a folder named after no class) are skipped and reported with the
reason, never guessed. A photo that cannot be decoded is reported when it is scored.

The 500 labelled photos of ``shared/data/imagenet-sample`` (one per class for every other
class) are found like the shared weights: ``$ACCEL_WIDGETS_DATA_DIR`` (folders separated by
``os.pathsep``, each holding ``imagenet-sample/``), else ``~/.cache/accel-widgets/data`` and
``../shared/data`` beside the checkout.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from accel_widgets.errors import AccelError

DATA_DIR_ENV = "ACCEL_WIDGETS_DATA_DIR"
#: The shared set's folder name inside a data folder.
IMAGENET_SAMPLE = "imagenet-sample"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_WNID = re.compile(r"^(n\d{8})(?:[_.-]|$)")


class LabelledDataError(AccelError):
    """A folder of labelled photos that cannot be read (missing, empty, nothing labelled)."""


@dataclass(frozen=True)
class LabelledPhoto:
    """One photo whose class is known: ``label`` is the class index."""

    name: str
    path: Path
    label: int

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


@dataclass(frozen=True)
class Skipped:
    """A file that was not scored, and why (in words a user can act on)."""

    name: str
    reason: str


@dataclass
class LabelledSet:
    """The photos of a folder that carry a label, and the files that were skipped."""

    folder: Path
    layout: str
    photos: list[LabelledPhoto]
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.photos)


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WNIDs in class-index order (sorted), shipped with the package."""
    path = Path(__file__).resolve().parents[2] / "data" / "imagenet_wnids.txt"
    return tuple(path.read_text().split())


def data_dirs() -> list[Path]:
    """Where shared labelled data sets are looked for, in order (see the module docstring)."""
    given = [Path(p).expanduser() for p in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep) if p]
    if given:
        return given
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    repo = Path(__file__).resolve().parents[3]
    return [cache / "accel-widgets" / "data", repo.parent / "shared" / "data"]


def shared_imagenet_photos() -> Path | None:
    """The shared folder of labelled ImageNet photos, or None where this machine has none."""
    for folder in data_dirs():
        candidate = folder / IMAGENET_SAMPLE
        if candidate.is_dir() and any(candidate.glob("n*")):
            return candidate
    return None


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def read_labelled(
    folder: str | os.PathLike[str], class_names: Sequence[str] | None = None
) -> LabelledSet:
    """Read a folder of labelled photos (either layout of the module docstring).

    ``class_names`` are the model's labels, in class order: they let sub-folders be named by
    class name, and bound the class indices a folder may name.

    Raises
    ------
    LabelledDataError
        When the folder does not exist, holds no images, or none of them can be labelled.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise LabelledDataError(
            f"no folder of labelled photos at {root}; give a folder with one sub-folder per "
            "class, or ImageNet photos named WNID_*.JPEG"
        )
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if any(_WNID.match(p.name) for p in images):
        labelled = _read_imagenet(root, images)
    elif folders:
        labelled = _read_class_folders(root, folders, images, class_names)
    else:
        why = "no label: not in a class sub-folder, not named WNID_*"
        labelled = LabelledSet(root, "none", [], [Skipped(p.name, why) for p in images])
    if not labelled.photos:
        skipped = labelled.skipped
        found = f"{len(skipped)} image(s), none labelled" if skipped else "no images"
        first = f"; first skipped: {skipped[0].name}: {skipped[0].reason}" if skipped else ""
        raise LabelledDataError(
            f"no labelled photos in {root} ({found}). Put each class's photos in a sub-folder "
            f"named by the class (its index or its label), or name ImageNet photos "
            f"WNID_*.JPEG{first}"
        )
    return labelled


def _read_imagenet(root: Path, images: list[Path]) -> LabelledSet:
    index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    photos, skipped = [], []
    for path in images:
        match = _WNID.match(path.name)
        if match is None:
            skipped.append(Skipped(path.name, "no label: the name does not start with a WNID"))
        elif match.group(1) not in index:
            skipped.append(
                Skipped(path.name, f"unknown WNID {match.group(1)}: not one of ImageNet-1k's 1000")
            )
        else:
            photos.append(LabelledPhoto(path.name, path, index[match.group(1)]))
    return LabelledSet(root, "imagenet", photos, skipped)


def _read_class_folders(
    root: Path, folders: list[Path], loose: list[Path], class_names: Sequence[str] | None
) -> LabelledSet:
    by_name: dict[str, int | None] = {}
    for i, name in enumerate(class_names or ()):
        key = _key(name)
        by_name[key] = None if key in by_name else i  # a name given twice is ambiguous
    count = len(class_names) if class_names else None
    photos: list[LabelledPhoto] = []
    skipped = [Skipped(p.name, "no label: not inside a class sub-folder") for p in loose]
    for sub in folders:
        label, why = _folder_label(sub.name, by_name, count)
        files = sorted(
            p
            for p in sub.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        for path in files:
            name = f"{sub.name}/{path.name}"
            if label is None:
                skipped.append(Skipped(name, why))
            else:
                photos.append(LabelledPhoto(name, path, label))
    return LabelledSet(root, "class folders", photos, skipped)


def _folder_label(
    name: str, by_name: dict[str, int | None], count: int | None
) -> tuple[int | None, str]:
    key = _key(name)
    if key in by_name:
        if by_name[key] is None:
            return None, f"class name {name!r} is given to several classes of the model"
        return by_name[key], ""
    if name.isdigit():
        index = int(name)
        if count is not None and index >= count:
            return None, f"class index {index} is outside the model's {count} classes"
        return index, ""
    return None, f"folder {name!r} names no class of the model (not a label, not an index)"


def split_for_calibration(
    photos: Sequence[LabelledPhoto], every: int = 5
) -> tuple[list[LabelledPhoto], list[LabelledPhoto]]:
    """Disjoint (calibration, validation) photos: every ``every``-th photo calibrates.

    Taking every fifth photo in name order spreads calibration over all classes of a sorted
    set (the shared one is sorted by WNID) and is the same on every machine.
    """
    calibration = [p for i, p in enumerate(photos) if i % every == 0]
    validation = [p for i, p in enumerate(photos) if i % every != 0]
    return calibration, validation
