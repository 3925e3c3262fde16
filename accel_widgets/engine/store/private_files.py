"""Files only their owner may read: folders 0700, files 0600, written without a moment of
exposure.

The workspace holds API keys, model files and a catalog of services; everything it makes
goes through these three functions, and so do the service folders and image build contexts
that other steps write into it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

#: Private to the owner: what every folder and file the workspace makes is set to.
DIR_MODE, FILE_MODE = 0o700, 0o600


def owned(path: Path) -> bool:
    try:
        return path.stat().st_uid == os.geteuid()
    except OSError:
        return False


def make_private(path: Path) -> None:
    """Folders 0700 and files 0600 under ``path`` (itself included), where this user owns them.

    A file with more than one link is left as it is: it is a hard link to something outside
    the workspace (the installed package's code or the shared wheel cache in an image's build
    context, a user's own model file), whose mode would change with it. The workspace's own
    copies of such files are private all the same: nobody else can enter a 0700 folder.
    """
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        with contextlib.suppress(OSError):
            info = item.lstat()
            if info.st_uid != os.geteuid() or item.is_symlink():
                continue
            if item.is_dir():
                os.chmod(item, DIR_MODE)
            elif info.st_nlink == 1:
                os.chmod(item, FILE_MODE)


def private_dir(path: Path) -> Path:
    """``path`` as a folder that only this user may enter; missing parents are made 0700
    too (``mkdir(parents=True)`` would give them the umask's mode)."""
    missing = []
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=DIR_MODE)
    if owned(path):
        with contextlib.suppress(OSError):
            os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically as a 0600 file (never readable by others, not
    even for a moment: the file is created 0600, then renamed into place)."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path
