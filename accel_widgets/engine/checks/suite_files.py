"""The pinned files the test suite reads, and how a clone without ``../shared`` gets them.

The tests score with real pretrained weights and measure accuracy on real labelled photos.
In this project's own checkouts they lie in ``../shared`` beside the repository; a clone
made from GitHub has no such folder, so the test command (``scripts/test.sh``) runs
``python -m accel_widgets.engine.checks.suite_files`` first. It fetches what is missing with the
same verified download as ``accel-widgets sample``
(:func:`~accel_widgets.engine.models.sample_model.download_files`: sha256 checked, a temporary file
renamed into place) into the user's cache, or, offline, prints one message naming each
missing file, the folder it goes in and its address, and exits 2.

Every address is pinned to a commit, so the bytes never change:

* the weights (``~/.cache/accel-widgets/weights``): the SqueezeNet sample and its ImageNet
  class names (:data:`~accel_widgets.engine.models.sample_model.SAMPLE_FILES`), and MobileNetV2
  INT8 from the ONNX Model Zoo, as copied into ``Lawrence-lugs/hwacc_design_garage`` at
  commit ``3d6147f`` (the bytes the tests were written against; the zoo has had more than
  one revision of this file, see ``../shared/weights/SOURCES.md``);
* the 500 labelled photos (``~/.cache/accel-widgets/data/imagenet-sample``): one photo for
  every other ImageNet class, from ``EliSchwartz/imagenet-sample-images`` at commit
  ``bc69043``. Their names, sizes and sha256 digests are in ``imagenet_sample.sha256``
  beside this module (54 MB in all, so they are not part of the repository).

The photo folder follows ``$ACCEL_WIDGETS_DATA_DIR`` (its first folder) as the weights
follow ``$ACCEL_WIDGETS_WEIGHTS_DIR``; a mirror serving ``<name>`` and
``imagenet-sample/<name>`` can stand in for the public addresses
(``$ACCEL_WIDGETS_SAMPLE_URL`` or ``--url``).
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from accel_widgets.engine.checks.labelled import DATA_DIR_ENV, IMAGENET_SAMPLE, data_dirs
from accel_widgets.engine.models.sample_model import (
    SAMPLE_FILES,
    SAMPLE_URL_ENV,
    SampleFile,
    download_files,
    sha256_of,
)
from accel_widgets.errors import WeightsError

PHOTOS_SUBDIR = IMAGENET_SAMPLE
PHOTOS_REPO = "EliSchwartz/imagenet-sample-images"
PHOTOS_COMMIT = "bc69043e2862758a1906c6a24a792bb28c6bb2ff"
PHOTOS_BASE = f"https://raw.githubusercontent.com/{PHOTOS_REPO}/{PHOTOS_COMMIT}"
MANIFEST = Path(__file__).with_name("imagenet_sample.sha256")
#: Photos fetched at once: 500 small files, so the wait per request dominates one at a time.
PHOTO_WORKERS = 8

MOBILENET_INT8 = SampleFile(
    name="mobilenetv2-12-int8.onnx",
    url=(
        "https://raw.githubusercontent.com/Lawrence-lugs/hwacc_design_garage/"
        "3d6147f8729cafb4c79faf9c2f1eab1bf76213a2/onnx_models/mobilenetv2-12-int8.onnx"
    ),
    size=3_655_640,
    sha256=("83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f",),
    what="MobileNetV2 INT8 (ONNX Model Zoo mobilenetv2-12-int8, real ImageNet weights)",
)
#: What the tests read from the weights folder.
WEIGHTS_FILES: tuple[SampleFile, ...] = (*SAMPLE_FILES, MOBILENET_INT8)


def data_download_dir() -> Path:
    """Where the photos are kept: the first folder the labelled photos are looked for in
    (:func:`~accel_widgets.engine.checks.labelled.data_dirs`: the first of
    ``$ACCEL_WIDGETS_DATA_DIR``, else ``~/.cache/accel-widgets/data``); the photos go in its
    ``imagenet-sample/``."""
    return data_dirs()[0]


def photo_files(manifest: Path = MANIFEST) -> tuple[SampleFile, ...]:
    """The 500 photos, from the manifest (``sha256 bytes name`` a line, ``#`` comments)."""
    files = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        digest, size, name = line.split(" ", 2)
        files.append(
            SampleFile(
                name=name,
                url=f"{PHOTOS_BASE}/{urllib.parse.quote(name)}",
                size=int(size),
                sha256=(digest,),
                what=f"the labelled ImageNet photo {name}",
                subdir=PHOTOS_SUBDIR,
                folder_env=DATA_DIR_ENV,
            )
        )
    return tuple(files)


@dataclass(frozen=True)
class Missing:
    """A pinned file a folder lacks (or holds with other bytes), and where it belongs."""

    file: SampleFile
    folder: Path

    @property
    def path(self) -> Path:
        return self.file.path_in(self.folder)


def missing(weights: Path, data: Path) -> list[Missing]:
    """The suite's files that ``weights`` and ``data`` lack, or hold with another sha256."""
    wanted = [(f, weights) for f in WEIGHTS_FILES] + [(f, data) for f in photo_files()]
    return [
        Missing(f, folder)
        for f, folder in wanted
        if not (f.path_in(folder).is_file() and sha256_of(f.path_in(folder)) in f.sha256)
    ]


def fetch(
    weights: Path, data: Path, *, base_url: str | None = None, progress=None, timeout=30.0
) -> None:
    """Download what :func:`missing` lists into ``weights`` and ``data``.

    Raises
    ------
    WeightsError
        At the first file that cannot be had (see :func:`how_to_get` for the whole list).
    """
    todo = missing(weights, data)
    for folder, workers in ((weights, 1), (data, PHOTO_WORKERS)):
        files = [m.file for m in todo if m.folder == folder]
        if files:
            download_files(
                files,
                folder,
                base_url=base_url,
                timeout=timeout,
                progress=progress,
                workers=workers,
                what="the test files",
            )


def how_to_get(todo: Sequence[Missing], reason: str = "") -> str:
    """One message: each missing file, the folder it goes in and its address.

    The photos are named one by one too (the list is long, but it is exactly what to
    fetch); the manifest beside this module holds their sizes and sha256 digests.
    """
    lines = []
    if reason:
        lines.append(f"The test files could not be downloaded: {reason}")
    lines.append(
        f"{len(todo)} file(s) the tests read are missing. Fetch each from its address into "
        "the folder shown (or run this command again where the addresses answer and copy "
        "the folders over):"
    )
    for folder in dict.fromkeys(m.path.parent for m in todo):
        here = [m for m in todo if m.path.parent == folder]
        lines.append(f"into {folder}/ ({len(here)} file(s)):")
        lines.extend(f"  {m.file.name}  <- {m.file.url}" for m in here)
    if any(m.file.subdir == PHOTOS_SUBDIR for m in todo):
        lines.append(
            f"The photos' sizes and sha256 digests are in {MANIFEST}; the whole set is also "
            f"`git clone https://github.com/{PHOTOS_REPO}` at commit {PHOTOS_COMMIT}."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m accel_widgets.engine.checks.suite_files --weights DIR
    --data DIR [--url URL]``."""
    from accel_widgets.engine.models.labels import download_dir
    from accel_widgets.progress import TerminalProgress

    parser = argparse.ArgumentParser(
        prog="python -m accel_widgets.engine.checks.suite_files",
        description="Check the pinned files the tests read; download the missing ones.",
    )
    parser.add_argument("--weights", type=Path, default=None, help="the weights folder")
    parser.add_argument("--data", type=Path, default=None, help="the labelled-photos folder")
    parser.add_argument("--url", default=None, help=f"a mirror (default ${SAMPLE_URL_ENV})")
    parser.add_argument("--check", action="store_true", help="only say what is missing")
    args = parser.parse_args(argv)
    weights = (args.weights or download_dir()).expanduser()
    data = (args.data or data_download_dir()).expanduser()
    todo = missing(weights, data)
    if not todo:
        print(f"the test files are all here ({weights}, {data / PHOTOS_SUBDIR})")
        return 0
    if args.check:
        print(how_to_get(todo), file=sys.stderr)
        return 2
    print(
        f"fetching {len(todo)} test file(s) (sha256 checked) into {weights} and {data}", flush=True
    )
    progress = TerminalProgress()
    try:
        fetch(weights, data, base_url=args.url, progress=progress)
    except WeightsError as exc:
        progress.close()
        reason = str(exc).split(". ", 1)[0]
        print(how_to_get(missing(weights, data), reason), file=sys.stderr)
        return 2
    progress.close()
    print(f"the test files are all here ({weights}, {data / PHOTOS_SUBDIR})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
