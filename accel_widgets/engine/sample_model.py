"""The real pretrained sample model: a documented download, checked against its checksum.

The walk's first choice is SqueezeNet 1.1 (float16 ONNX, 2.4 MB, real ImageNet weights) with
the 1000 ImageNet class names. Both files are public and pinned to a commit, so their bytes
never change:

* ``SqueezeNet_fp16.onnx`` from microsoft/Windows-Machine-Learning (MIT; the weights come
  from DeepScale/SqueezeNet, BSD-2-Clause), ``SharedContent/models/SqueezeNet_fp16.onnx``
  at commit ``0447574``;
* ``imagenet_classes.txt`` from pytorch/hub at commit ``c7895df``.

:func:`download_sample` fetches what is missing into :func:`~accel_widgets.engine.labels.
download_dir` (``~/.cache/accel-widgets/weights``, or the first folder of
``$ACCEL_WIDGETS_WEIGHTS_DIR``), verifies each file's sha256 before it takes its final name
(a temporary file in the same folder, then an atomic rename: a cut download or a wrong file
leaves nothing behind) and reports live progress. ``$ACCEL_WIDGETS_SAMPLE_URL`` (or
``base_url``) points at a mirror that serves the same files by name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from accel_widgets.engine.labels import WEIGHTS_DIR_ENV, download_dir, weights_dirs
from accel_widgets.errors import WeightsError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

SAMPLE_FILE = "SqueezeNet_fp16.onnx"
LABELS_FILE = "imagenet_classes.txt"
#: A mirror serving the same files by name: ``$ACCEL_WIDGETS_SAMPLE_URL/SqueezeNet_fp16.onnx``.
SAMPLE_URL_ENV = "ACCEL_WIDGETS_SAMPLE_URL"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class SampleFile:
    """One file of the sample: its name, public address, size and accepted sha256 digests."""

    name: str
    url: str
    size: int
    sha256: tuple[str, ...]
    what: str

    def url_from(self, base_url: str | None) -> str:
        return f"{base_url.rstrip('/')}/{self.name}" if base_url else self.url


SAMPLE_FILES = (
    SampleFile(
        name=SAMPLE_FILE,
        url=(
            "https://raw.githubusercontent.com/microsoft/Windows-Machine-Learning/"
            "044757481c274e4749f5c192962168520807b4cc/SharedContent/models/SqueezeNet_fp16.onnx"
        ),
        size=2_484_091,
        sha256=("21f25e3d9254af93e6218a359469fac714a017b3f9035c0f5c4acbf9a3ff7233",),
        what="the SqueezeNet 1.1 sample model (float16 ONNX, real ImageNet weights)",
    ),
    SampleFile(
        name=LABELS_FILE,
        url=(
            "https://raw.githubusercontent.com/pytorch/hub/"
            "c7895df70c7767403e36f82786d6b611b7984557/imagenet_classes.txt"
        ),
        size=10_472,
        # Upstream has no final newline; copies that added one (the shared weights folder)
        # are the same 1000 labels.
        sha256=(
            "1f386e0d1cb6e28b9c2dac651c3dea6801e98ad1b41a14ce6bb1a093d72069f5",
            "e697a491aa735cc6c2aaf982f8e86e8fc7b0a1ea7750a2cc6a2bdfc1e109012f",
        ),
        what="the 1000 ImageNet class names",
    ),
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def find_sample_file(name: str) -> Path | None:
    """``name`` in the first weights folder that holds it, or None."""
    return next((d / name for d in weights_dirs() if (d / name).is_file()), None)


def missing_files() -> list[SampleFile]:
    """The sample's files that no weights folder holds."""
    return [f for f in SAMPLE_FILES if find_sample_file(f.name) is None]


def how_to_get(folder: Path | None = None) -> str:
    """One sentence on getting the sample: the command, the folder, the variable, the URL."""
    folder = folder or download_dir()
    model = SAMPLE_FILES[0]
    return (
        f"Get it with `accel-widgets sample` (downloads {model.size / 2**20:.1f} MB into "
        f"{folder}), or fetch {model.url} by hand and put it in {folder} or in a folder named "
        f"by {WEIGHTS_DIR_ENV}"
    )


def download_sample(
    folder: str | os.PathLike[str] | None = None,
    *,
    base_url: str | None = None,
    timeout: float = 30.0,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Download the sample model and its labels into ``folder``; return the model's path.

    Files already there with the right checksum are kept. ``base_url`` (default
    ``$ACCEL_WIDGETS_SAMPLE_URL``, else the public addresses above) serves the files by name.

    Raises
    ------
    WeightsError
        When a file cannot be fetched (offline: the message names the file, the folder, the
        variable and the address to fetch it by hand) or its checksum does not match (nothing
        is kept).
    """
    report = as_reporter(progress, cancel)
    target = Path(folder).expanduser() if folder is not None else download_dir()
    base_url = base_url if base_url is not None else os.environ.get(SAMPLE_URL_ENV) or None
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f"cannot create the folder {target} for the sample model ({exc.strerror}); "
            f"set {WEIGHTS_DIR_ENV} to a folder you can write"
        ) from exc
    total = sum(f.size for f in SAMPLE_FILES)
    done = 0
    for file in SAMPLE_FILES:
        path = target / file.name
        if path.is_file() and sha256_of(path) in file.sha256:
            done += file.size
            report("download", done / total, f"{file.name} is already in {target}")
            continue
        url = file.url_from(base_url)
        report("download", done / total, f"downloading {file.name} from {url}")
        _fetch(file, url, path, timeout, report, done, total)
        done += file.size
        report("download", done / total, f"{file.name}: sha256 verified, saved in {target}")
    return target / SAMPLE_FILE


def _fetch(
    file: SampleFile, url: str, path: Path, timeout: float, report: Reporter, done: int, total: int
) -> None:
    """``url`` -> ``path`` through a temporary file in the same folder, verified, renamed."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{file.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    while block := response.read(CHUNK):
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                        report(
                            "download",
                            (done + min(received, file.size)) / total,
                            f"{file.name}: {received / 2**20:.1f} of {file.size / 2**20:.1f} MB",
                        )
            except urllib.error.HTTPError as exc:
                raise WeightsError(
                    f"could not download {file.name} from {url}: the server answered "
                    f"{exc.code} {exc.reason}. {_by_hand(file, path.parent)}"
                ) from exc
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise WeightsError(
                    f"could not download {file.name} from {url} ({reason}): this machine "
                    f"looks offline. {_by_hand(file, path.parent)}"
                ) from exc
        got = digest.hexdigest()
        if got not in file.sha256:
            raise WeightsError(
                f"the download of {file.name} from {url} is not the expected file (sha256 "
                f"{got}, expected {file.sha256[0]}; {received} bytes, expected {file.size}); "
                "nothing was kept. Try again, or check the address"
            )
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _by_hand(file: SampleFile, folder: Path) -> str:
    return (
        f"Fetch {file.what} by hand from {file.url} (sha256 {file.sha256[0]}) and put it in "
        f"{folder} as {file.name}, or set {WEIGHTS_DIR_ENV} to a folder that holds it"
    )
