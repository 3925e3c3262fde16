"""API keys: loading the key file and checking a request's ``authorization`` value.

Keys are compared with :func:`hmac.compare_digest` against every configured key (no early
exit that a timing attack could measure), are never logged, and never appear in an error
message: a wrong key is answered "not valid", not "'abc' is not valid".
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
from pathlib import Path

from accel_widgets.errors import ServingError
from accel_widgets.serving.status import RequestError

log = logging.getLogger("accel_widgets.serving")

MISSING_KEY = (
    "this service needs an API key: send the metadata 'authorization: Bearer <key>' "
    "(PredictionClient(..., access_token=KEY)); `accel-widgets services` shows the key"
)
WRONG_KEY = (
    "the API key sent is not valid for this service; check it with `accel-widgets services` "
    "(keys may have been rotated)"
)


def load_keys(path: Path) -> tuple[bytes, ...]:
    """Read one key per line (blank lines and ``#`` comments skipped).

    A file readable by other users is served with a warning rather than refused: a
    Kubernetes secret volume is mode 0644 by default, and refusing would only push users
    to turn auth off.
    """
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise ServingError(f"cannot read the API keys file {path}: {exc.strerror}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("API keys file %s is readable by other users; chmod 600 it", path)
    keys = tuple(
        line.strip().encode()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )
    if not keys:
        raise ServingError(f"the API keys file {path} holds no key (one key per line)")
    return keys


class KeyChecker:
    """Checks ``authorization`` values; with no keys configured, everything passes."""

    def __init__(self, keys: tuple[bytes, ...] = ()) -> None:
        self.keys = keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, authorization: str | None) -> None:
        """Raise UNAUTHENTICATED unless the value is ``Bearer <key>`` (or the bare key).

        The bare form is accepted because the retired Azure client documented sending the
        token as the whole header value.
        """
        if not self.keys:
            return
        if not authorization:
            raise RequestError("UNAUTHENTICATED", MISSING_KEY)
        value = authorization.strip()
        if value[:7].lower() == "bearer ":
            value = value[7:].strip()
        candidate = value.encode("utf-8", "replace")
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise RequestError("UNAUTHENTICATED", WRONG_KEY)
