"""How an API key is shown where a person reads it: enough to tell two apart, not to use.

The CLI's tables, ``accel-widgets services`` and the Deploy widget all show keys this way, so
a screenshot or a terminal log never holds a usable key. Whole keys are shown only on request
(``--show-key``) or fetched at click time (the widget's "copy key").
"""

from __future__ import annotations

#: Keys up to this long are hidden entirely: four characters each end would reveal most.
SHORT_KEY = 12


def mask_key(key: str | None, none: str = "-") -> str:
    """``abcd••••••••wxyz`` for a long key, all bullets for a short one, ``none`` for no key."""
    if not key:
        return none
    return f"{key[:4]}{'•' * 8}{key[-4:]}" if len(key) > SHORT_KEY else "•" * len(key)
