"""Class labels for scores: load a label file, take the top k.

Label files are plain text, one label per line, line ``i`` for class ``i``. Two are known
by name and read from the shared weights folder, never from the package (the project does
not redistribute them): ``"imagenet"`` (1000 ImageNet-1k classes, ``imagenet_classes.txt``)
and ``"voc"`` (background + the 20 Pascal VOC classes, ``voc_classes.txt``, as SSD numbers
them). The folders are those of ``$ACCEL_WIDGETS_WEIGHTS_DIR`` (one, or several separated by
``os.pathsep``), else the download folder of ``accel-widgets sample``
(``~/.cache/accel-widgets/weights``) and ``../shared/weights`` beside the repository checkout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from accel_widgets.errors import WeightsError

#: Label sets known by name -> file name in the weights folder.
NAMED_LABELS = {"imagenet": "imagenet_classes.txt", "voc": "voc_classes.txt"}

WEIGHTS_DIR_ENV = "ACCEL_WIDGETS_WEIGHTS_DIR"


def _given_dirs() -> list[Path]:
    value = os.environ.get(WEIGHTS_DIR_ENV, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def download_dir() -> Path:
    """Where ``accel-widgets sample`` puts what it downloads: the first folder of
    ``$ACCEL_WIDGETS_WEIGHTS_DIR``, else ``~/.cache/accel-widgets/weights``
    (``$XDG_CACHE_HOME`` is honoured)."""
    given = _given_dirs()
    if given:
        return given[0]
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "accel-widgets" / "weights"


def weights_dirs() -> list[Path]:
    """Where the sample model and named label files are looked for, in order.

    ``$ACCEL_WIDGETS_WEIGHTS_DIR`` (one folder, or several separated by ``os.pathsep``)
    replaces the defaults, so pointing it at an empty folder shows what a fresh machine sees.
    """
    dirs = _given_dirs()
    if dirs:
        return dirs
    repo = Path(__file__).resolve().parents[3]
    return [download_dir(), repo.parent / "shared" / "weights"]


def labels_path(path_or_name: str | os.PathLike[str]) -> Path:
    """The label file for a path or a named set (``"imagenet"``, ``"voc"``).

    Used by :func:`load_labels` and by the deploy step, which hands the file to the server.

    Raises
    ------
    WeightsError
        When the file is missing, saying where a named file was looked for and where to put it.
    """
    name = str(path_or_name)
    if name.lower() in NAMED_LABELS:
        file_name = NAMED_LABELS[name.lower()]
        searched = [d / file_name for d in weights_dirs()]
        path = next((p for p in searched if p.is_file()), None)
        if path is None:
            raise WeightsError(
                f"the {name} label file {file_name} was not found; looked in "
                + ", ".join(str(p.parent) for p in searched)
                + f". Put {file_name} there or set {WEIGHTS_DIR_ENV} to its folder"
                + ("; `accel-widgets sample` downloads it" if name.lower() == "imagenet" else "")
            )
        return path
    path = Path(name).expanduser()
    if not path.is_file():
        known = ", ".join(f"'{n}'" for n in NAMED_LABELS)
        raise WeightsError(
            f"label file {path} does not exist; give a label file path or one of {known}"
        )
    return path


def load_labels(path_or_name: str | os.PathLike[str]) -> list[str]:
    """Labels from a file path, or from a named set (``"imagenet"``, ``"voc"``).

    Raises
    ------
    WeightsError
        When the file is missing (see :func:`labels_path`) or holds no labels.
    """
    path = labels_path(path_or_name)
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise WeightsError(f"label file {path} holds no labels (one label per line)")
    return labels


def top_k(
    scores: np.ndarray | Sequence[float], labels: Sequence[str] | None = None, k: int = 5
) -> list[tuple[int, str, float]]:
    """The ``k`` best classes as ``(index, label, score)``, best first.

    ``scores`` is one image's scores (a leading batch axis of 1 is dropped). With no labels
    the label is the index as text. A label list one longer than the scores whose first
    entry is ``background`` (TensorFlow's 1001-class files) is shifted by one, so the same
    file serves 1000- and 1001-output models.

    Raises
    ------
    ValueError
        For scores of more than one image, or labels that do not match the scores.
    """
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim > 1 and array.shape[0] == 1:
        array = array.reshape(array.shape[1:])
    array = array.reshape(-1) if array.ndim > 1 and array.size == max(array.shape) else array
    if array.ndim != 1:
        raise ValueError(
            f"top_k takes one image's scores; got shape {np.shape(scores)} (score images one "
            "at a time, or pass scores[i])"
        )
    offset = 0
    if labels is not None:
        if len(labels) == array.size + 1 and labels[0].strip().lower() == "background":
            offset = 1
        elif len(labels) != array.size:
            raise ValueError(
                f"{len(labels)} labels for {array.size} scores; use the label file made for "
                "this model"
            )
    k = max(0, min(int(k), array.size))
    order = np.argsort(-array, kind="stable")[:k]
    return [
        (int(i), labels[i + offset] if labels is not None else str(int(i)), float(array[i]))
        for i in order
    ]
