"""The real pretrained sample model: a documented download, checked against its checksum.

The walk's first choice is SqueezeNet 1.1 (float16 ONNX, 2.4 MB, real ImageNet weights) with
the 1000 ImageNet class names. Both files are public and pinned to a commit, so their bytes
never change:

* ``SqueezeNet_fp16.onnx`` from microsoft/Windows-Machine-Learning (MIT; the weights come
  from DeepScale/SqueezeNet, BSD-2-Clause), ``SharedContent/models/SqueezeNet_fp16.onnx``
  at commit ``0447574``;
* ``imagenet_classes.txt`` from pytorch/hub at commit ``c7895df``.

:func:`download_sample` fetches what is missing into :func:`~accel_widgets.engine.models.labels.
download_dir` (``~/.cache/accel-widgets/weights``, or the first folder of
``$ACCEL_WIDGETS_WEIGHTS_DIR``), verifies each file's sha256 before it takes its final name
(a temporary file in the same folder, then an atomic rename: a cut download or a wrong file
leaves nothing behind) and reports live progress. ``$ACCEL_WIDGETS_SAMPLE_URL`` (or
``base_url``) points at a mirror that serves the same files by name.

:func:`download_files` is the same download for any list of pinned files: the test command
fetches the suite's files with it (:mod:`accel_widgets.engine.checks.suite_files`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from accel_widgets.engine.models.labels import WEIGHTS_DIR_ENV, download_dir, weights_dirs
from accel_widgets.errors import WeightsError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

SAMPLE_FILE = "SqueezeNet_fp16.onnx"
LABELS_FILE = "imagenet_classes.txt"
#: A mirror serving the same files by name: ``$ACCEL_WIDGETS_SAMPLE_URL/SqueezeNet_fp16.onnx``.
SAMPLE_URL_ENV = "ACCEL_WIDGETS_SAMPLE_URL"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class SampleFile:
    """One pinned file: its name, public address, size and accepted sha256 digests.

    ``subdir`` is the folder it goes in below the download folder, and its place on a
    mirror (``<mirror>/<subdir>/<name>``); ``folder_env`` names the variable that points
    the project at a folder holding it.
    """

    name: str
    url: str
    size: int
    sha256: tuple[str, ...]
    what: str
    subdir: str = ""
    folder_env: str = WEIGHTS_DIR_ENV

    def url_from(self, base_url: str | None) -> str:
        if not base_url:
            return self.url
        parts = [base_url.rstrip("/"), *([self.subdir] if self.subdir else [])]
        return "/".join([*parts, urllib.parse.quote(self.name)])

    def path_in(self, folder: Path) -> Path:
        """Where the file lies in a download folder."""
        return folder / self.subdir / self.name if self.subdir else folder / self.name


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
    target = Path(folder).expanduser() if folder is not None else download_dir()
    download_files(
        SAMPLE_FILES,
        target,
        base_url=base_url,
        timeout=timeout,
        progress=progress,
        cancel=cancel,
        what="the sample model",
    )
    return target / SAMPLE_FILE


def download_files(
    files: Sequence[SampleFile],
    folder: Path,
    *,
    base_url: str | None = None,
    timeout: float = 30.0,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
    workers: int = 1,
    what: str = "the files",
) -> list[Path]:
    """Fetch each of ``files`` that ``folder`` lacks (or holds with another checksum).

    Each file goes through a temporary file in its own folder, is checked by size and sha256,
    then renamed: a cut download or a wrong file leaves nothing behind. ``workers`` > 1
    fetches that many at once (the 500 test photos are small: one request at a time spends
    most of its time waiting for the next answer). ``base_url`` (default
    ``$ACCEL_WIDGETS_SAMPLE_URL``) is a mirror serving ``<subdir>/<name>``. Returns the paths.

    Raises
    ------
    WeightsError
        At the first file that cannot be fetched or is not the expected file; files not yet
        started are not fetched, and those already verified are kept.
    """
    report = as_reporter(progress, cancel)
    base_url = base_url if base_url is not None else os.environ.get(SAMPLE_URL_ENV) or None
    paths = [f.path_in(folder) for f in files]
    try:
        for path in {p.parent for p in paths}:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        env = files[0].folder_env if files else WEIGHTS_DIR_ENV
        raise WeightsError(
            f"cannot create the folder {folder} for {what} ({exc.strerror}); "
            f"set {env} to a folder you can write"
        ) from exc
    meter = _Meter(report, sum(f.size for f in files), len(files))
    todo = []
    for file, path in zip(files, paths, strict=True):
        if path.is_file() and sha256_of(path) in file.sha256:
            meter.kept(file, path.parent)
        else:
            todo.append((file, path))
    stop = threading.Event()

    def fetch_one(file: SampleFile, path: Path) -> None:
        if stop.is_set():
            return
        url = file.url_from(base_url)
        meter.starting(file, url)
        try:
            _fetch(file, url, path, timeout, meter.received)
        except BaseException:
            stop.set()
            raise
        meter.verified(file, path.parent)

    if workers <= 1 or len(todo) <= 1:
        for file, path in todo:
            fetch_one(file, path)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:
            futures = [pool.submit(fetch_one, file, path) for file, path in todo]
            errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
    return paths


class _Meter:
    """One progress bar over many files, fed from the download threads (hence the lock).

    With many files only every file's end is reported (a line per 64 KB block of 500 photos
    would be thousands of events); a single file reports its bytes as they come.
    """

    def __init__(self, report: Reporter, total: int, count: int) -> None:
        self.report = report
        self.total = max(total, 1)
        self.count = count
        self.done = 0
        self.files_done = 0
        self.lock = threading.Lock()

    def _emit(self, message: str) -> None:
        self.report("download", self.done / self.total, message)

    def kept(self, file: SampleFile, folder: Path) -> None:
        with self.lock:
            self.done += file.size
            self.files_done += 1
            if self.count <= 3 or self.files_done == self.count:
                self._emit(f"{file.name} is already in {folder}")

    def starting(self, file: SampleFile, url: str) -> None:
        if self.count <= 3:
            with self.lock:
                self._emit(f"downloading {file.name} from {url}")

    def received(self, file: SampleFile, received: int, size: int) -> None:
        if self.count <= 3:
            with self.lock:
                fraction = (self.done + min(received, size)) / self.total
                self.report(
                    "download",
                    fraction,
                    f"{file.name}: {received / 2**20:.1f} of {size / 2**20:.1f} MB",
                )

    def verified(self, file: SampleFile, folder: Path) -> None:
        with self.lock:
            self.done += file.size
            self.files_done += 1
            if self.count <= 3:
                self._emit(f"{file.name}: sha256 verified, saved in {folder}")
            else:
                self._emit(f"{self.files_done} of {self.count} files: {file.name} verified")


def _fetch(
    file: SampleFile,
    url: str,
    path: Path,
    timeout: float,
    on_block: Callable[[SampleFile, int, int], None],
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
                        on_block(file, received, file.size)
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
        f"{folder} as {file.name}, or set {file.folder_env} to a folder that holds it"
    )
