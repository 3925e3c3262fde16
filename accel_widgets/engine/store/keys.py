"""API keys: made, kept at rest, checked, and shown where a person reads them.

Where a usable key lives, and why there
---------------------------------------
The catalog (``catalog.db``) keeps only a salted scrypt hash of each key (``key_hash``),
enough to check a key, never to use one. The usable key is in one file per service,
``services/<name>/keys`` (mode 0600, in a 0700 workspace), which only its owner reads.

We chose a file over the OS keyring because every reader of the key needs a *file*: the
local server reads its keys file, the container target mounts it read-only into the
container as a secret file, and the Jupyter server (the sidebar's "copy key") runs as the
same user. A keyring would need a second copy in a file for all three. It would also need a
Secret Service on a D-Bus session, which JupyterHub single-user servers, containers and SSH
sessions on a workshop box usually lack (the ``keyring`` package then falls back to an
unencrypted file, or fails).

Showing keys
------------
The CLI's tables, ``accel-widgets services`` and the Deploy widget mask keys with
:func:`mask_key`, so a screenshot or a terminal log never holds a usable key. Whole keys are
shown only on request (``--show-key``, ``--show-keys``) or fetched at click time (the
widget's "copy key").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: Keys up to this long are hidden entirely: four characters each end would reveal most.
SHORT_KEY = 12

#: scrypt's cost: 16 MiB and ~40 ms per hash on one core. A key we make has 256 random
#: bits, which no cost protects better; a key a user chose (``key=``) may not.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def new_key() -> str:
    """A fresh API key: 32 random bytes, URL-safe text (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """``scrypt$n$r$p$salt$digest``: what the catalog keeps to check ``key`` later."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(key.encode(), salt=salt, dklen=32, **_SCRYPT)
    encode = base64.urlsafe_b64encode
    return "scrypt${n}${r}${p}$".format(**_SCRYPT) + (
        f"{encode(salt).decode()}${encode(digest).decode()}"
    )


def verify_key(key: str | None, hashed: str | None) -> bool:
    """Whether ``key`` is the key ``hashed`` was made from (constant time in the digest)."""
    if not key or not hashed:
        return False
    try:
        scheme, n, r, p, salt, digest = hashed.split("$")
        if scheme != "scrypt":
            return False
        found = hashlib.scrypt(
            key.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, base64.urlsafe_b64decode(digest))


def mask_key(key: str | None, none: str = "-") -> str:
    """``abcd••••••••wxyz`` for a long key, all bullets for a short one, ``none`` for no key."""
    if not key:
        return none
    return f"{key[:4]}{'•' * 8}{key[-4:]}" if len(key) > SHORT_KEY else "•" * len(key)
