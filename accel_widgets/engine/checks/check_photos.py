"""Which photos a conversion calibrates INT8 on and validates on, chosen once, in one place.

Three rules, each from a measured failure:

* **Validation photos carry labels where any can be had**, so accuracy, not only agreement,
  is measured: a folder the user gives (either layout of :mod:`~accel_widgets.engine.
  labelled`), a trained model's own held-out pictures, or, for an ImageNet classifier, the
  shared labelled ImageNet photos. The six bundled photos are the last resort.
* **Calibration photos are never validation photos.** INT8 calibrated on the very photos it
  is checked on looks better than it is; a labelled set is split (every fifth photo
  calibrates, :func:`~accel_widgets.engine.checks.labelled.split_for_calibration`), a trained model
  calibrates on its training split. When they cannot be kept apart (the bundled photos),
  the report says so and the INT8 artifact is not recommended.
* **Enough of them**: up to :data:`CALIBRATION_MAX` calibration photos (100 from the shared
  set), up to :data:`VALIDATION_MAX` validation photos. A catalog model built with random
  weights answers at chance whatever it is shown (a dry run of the path), so it is checked on
  :data:`RANDOM_WEIGHTS_PHOTOS` of them: enough to show that, without paying for 400 runs of
  VGG-16 (64 s here) that prove nothing more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_widgets.engine.checks.labelled import (
    IMAGE_SUFFIXES,
    LabelledDataError,
    Skipped,
    read_labelled,
    shared_imagenet_photos,
    split_for_calibration,
)
from accel_widgets.engine.store.workspace import ModelRecord
from accel_widgets.errors import AccelError

CALIBRATION_MAX = 200
VALIDATION_MAX = 1000
RANDOM_WEIGHTS_PHOTOS = 64


@dataclass
class CheckPhotos:
    """Files to calibrate and validate on (None: the bundled photos) and where they came from."""

    calibration: list[Path] | None
    validation: list[Path] | None
    labels: list[int] | None
    source: str
    calibration_source: str
    disjoint: bool
    skipped: list[Skipped] = field(default_factory=list)

    def to_job(self) -> dict[str, Any]:
        """The converter child's view (JSON): file lists, labels and their provenance."""
        return {
            "calibration": {"files": [str(p) for p in self.calibration]}
            if self.calibration is not None
            else None,
            "validation": {
                "files": [str(p) for p in self.validation],
                "labels": self.labels,
            }
            if self.validation is not None
            else None,
            "validation_source": self.source,
            "calibration_source": self.calibration_source,
            "calibration_disjoint": self.disjoint,
            "skipped": [[s.name, s.reason] for s in self.skipped],
        }


def class_names_of(model: ModelRecord) -> list[str] | None:
    from accel_widgets.engine.models.labels import load_labels

    labels = model.spec.get("labels")
    if not labels:
        return None
    try:
        return load_labels(labels)
    except AccelError:
        return None


def _images(folder: Path) -> list[Path]:
    """Every image under ``folder`` (sub-folders too), in name order."""
    if not folder.is_dir():
        raise AccelError(f"photo folder {folder} does not exist; give a folder of images")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise AccelError(
            f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); "
            "add typical photos, 100 or more for INT8 calibration"
        )
    return files


def check_photos(
    model: ModelRecord,
    *,
    calibration: str | os.PathLike[str] | None = None,
    validation: str | os.PathLike[str] | None = None,
) -> CheckPhotos:
    """The calibration and validation photos for ``model`` (see the module docstring)."""
    checked = _check_photos(model, calibration, validation)
    if model.kind == "catalog" and model.tags.get("weights") == "random":
        if checked.validation is not None and validation is None:
            checked.validation = checked.validation[:RANDOM_WEIGHTS_PHOTOS]
            if checked.labels is not None:
                checked.labels = checked.labels[:RANDOM_WEIGHTS_PHOTOS]
            checked.source += f", the first {RANDOM_WEIGHTS_PHOTOS} (random weights)"
        if checked.calibration is not None and calibration is None:
            checked.calibration = checked.calibration[: RANDOM_WEIGHTS_PHOTOS // 2]
    return checked


def _check_photos(
    model: ModelRecord,
    calibration: str | os.PathLike[str] | None,
    validation: str | os.PathLike[str] | None,
) -> CheckPhotos:
    names = class_names_of(model)
    labelled = None
    source = ""
    if validation is not None:
        try:
            labelled = read_labelled(validation, names)
            source = f"{validation} (labelled: {labelled.layout})"
        except LabelledDataError:
            files = _images(Path(validation).expanduser())[:VALIDATION_MAX]
            return _with_calibration(model, files, None, f"{validation} (no labels)", calibration)
    elif (held := model.spec.get("holdout")) and (model.path / held).is_dir():
        labelled = read_labelled(model.path / held, names)
        source = "its held-out pictures (labelled)"
    elif (examples := model.spec.get("examples")) and (model.path / examples).is_dir():
        # A model trained before held-out pictures were kept by class: its flat examples.
        files = _images(model.path / examples)[:VALIDATION_MAX]
        return _with_calibration(model, files, None, "its held-out examples", calibration)
    elif model.spec.get("labels") == "imagenet" and (shared := shared_imagenet_photos()):
        labelled = read_labelled(shared, names)
        source = f"the shared labelled ImageNet photos ({shared})"
    if labelled is None:
        if calibration is not None:
            files = _images(Path(calibration).expanduser())[:CALIBRATION_MAX]
            return CheckPhotos(files, None, None, "the bundled photos", str(calibration), True)
        return CheckPhotos(None, None, None, "the bundled photos", "the bundled photos", False)
    photos = labelled.photos
    if calibration is None and not _own_calibration(model):
        calibrate, photos = split_for_calibration(photos)
        return CheckPhotos(
            [p.path for p in calibrate[:CALIBRATION_MAX]],
            [p.path for p in photos[:VALIDATION_MAX]],
            [p.label for p in photos[:VALIDATION_MAX]],
            source,
            f"every fifth photo of {source.split(' (')[0]}, kept out of validation",
            True,
            labelled.skipped,
        )
    photos = photos[:VALIDATION_MAX]
    checked = _with_calibration(
        model, [p.path for p in photos], [p.label for p in photos], source, calibration
    )
    checked.skipped = labelled.skipped
    return checked


def _own_calibration(model: ModelRecord) -> Path | None:
    folder = model.spec.get("calibration")
    return model.path / folder if folder and (model.path / folder).is_dir() else None


def _with_calibration(
    model: ModelRecord,
    files: list[Path],
    labels: list[int] | None,
    source: str,
    calibration: str | os.PathLike[str] | None,
) -> CheckPhotos:
    if calibration is not None:
        calibrate = _images(Path(calibration).expanduser())[:CALIBRATION_MAX]
        where = str(calibration)
    elif own := _own_calibration(model):
        calibrate = _images(own)[:CALIBRATION_MAX]
        where = "pictures of its training split"
    elif len(files) >= 10:  # split the folder as a labelled set is split
        calibrate, files = files[::5], [f for i, f in enumerate(files) if i % 5]
        labels = [x for i, x in enumerate(labels) if i % 5] if labels is not None else None
        where = "every fifth photo of the validation folder, kept out of validation"
    else:  # too few to split: calibrate on them all, and say they are not kept apart
        calibrate, where = list(files), "the validation photos themselves (too few to split)"
    seen = {p.resolve() for p in files}
    disjoint = not any(p.resolve() in seen for p in calibrate)
    return CheckPhotos(calibrate, files, labels, source, where, disjoint)
