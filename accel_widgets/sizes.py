"""Sizes in one format everywhere a user reads them (widgets, sidebar, clean-up rows).

Each place used to round on its own: the sidebar said "493.5 MB" and the Package step
"493 MB" for one image, the Model step "2 MB" for the 2.4 MB sample. One rule here: a tenth
of a megabyte under 10 MB (where it is a real share of the size), whole megabytes above.
Images count in decimal megabytes as ``docker images`` does; model files in 2**20 bytes as
the catalog and the sample's documentation do.
"""

from __future__ import annotations

#: bytes per megabyte for container images (Docker's unit) and for model files
IMAGE_MB = 1_000_000
FILE_MB = 2**20


def round_mb(megabytes: float) -> float:
    """``2.37 -> 2.4``, ``493.5 -> 494``: one decimal under 10 MB, none above."""
    return round(megabytes, 1) if megabytes < 10 else float(round(megabytes))


def mb_text(megabytes: float) -> str:
    """``"2.4 MB"``, ``"494 MB"`` (no trailing ``.0``)."""
    return f"{round_mb(megabytes):g} MB"


def bytes_text(size_bytes: int | float, unit: int = FILE_MB) -> str:
    """A size in bytes as :func:`mb_text` shows it, counted in ``unit`` bytes per MB."""
    return mb_text(float(size_bytes) / unit)
