"""What every command prints the same way: exit codes, tables, the conversion report, masked
keys, the note on where a manifest's secret lives."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from accel_widgets.progress import CancelToken, TerminalProgress

SUCCESS, ERROR, USAGE, INTERRUPTED = 0, 1, 2, 130


#: ``evaluate``'s exit status when it measured accuracy but some files could not be scored.
PARTIAL = 3


@contextlib.contextmanager
def live_progress() -> Iterator[tuple[TerminalProgress, CancelToken]]:
    """A command's live progress line and the token its step watches.

    Ctrl-C sets the token, so the step stops where it can and cleans up what it started (a
    half-built image, a service that never came up) before the interrupt reaches ``main``;
    and the line is closed however the step ends, so an error prints on a line of its own.
    """
    progress, cancel = TerminalProgress(), CancelToken()
    try:
        yield progress, cancel
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    finally:
        progress.close()


def table(rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns; the first row is the header."""
    text = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(text[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in text]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def workspace_of(args: argparse.Namespace):
    from accel_widgets.engine.store.workspace import Workspace

    return Workspace(args.workspace)


def print_reports(artifacts) -> None:
    """The validation table the Convert widget shows (engine/conversion/reports.py), then the files
    and, for an INT8 artifact that was not recommended, why and what deploy does instead."""
    from accel_widgets.engine.checks.verdicts import artifact_check
    from accel_widgets.engine.conversion.reports import REPORT_COLUMNS, report_row
    from accel_widgets.engine.store.workspace import default_order

    print(table([REPORT_COLUMNS, *(report_row(a) for a in artifacts)]))
    for artifact in artifacts:
        ref = f"{artifact.model_name}:{artifact.model_version}"
        print(f"{ref} {artifact.precision}  {artifact.file}")
    for artifact in artifacts:
        check = artifact_check(artifact.report, artifact.precision)
        if artifact.precision == "int8" and check.mark == "warn":
            fallback = sorted(artifacts, key=default_order)[0].precision
            print(
                f"warning: INT8 is {check.text}.\n  deploy serves {fallback} by default; "
                "--precision int8 deploys INT8 anyway",
                file=sys.stderr,
            )


def mask(key: str | None) -> str:
    from accel_widgets.engine.store.keys import mask_key

    return mask_key(key)


def secret_note(obj: dict[str, Any], where: str) -> str:
    """Where a generated Secret's API key is written down, and how to read it back."""
    meta = obj.get("metadata", {})
    name, namespace = meta.get("name", "?"), meta.get("namespace", "default")
    field = next(iter(obj.get("stringData") or {}), "api-keys")
    return (
        f"{where} holds the service's new API key, in field stringData.{field} of the "
        f"Secret {name}; it is written down nowhere else (not in the workspace). Clients "
        f"send it as 'authorization: Bearer KEY'. Once applied, read it back with: kubectl "
        f"get secret {name} -n {namespace} -o jsonpath='{{.data.{field}}}' | base64 -d. "
        "Keep it out of version control, or use a secret manager (for GitOps: "
        "sealed-secrets, external-secrets); --no-auth leaves it out."
    )


def wrapped(text: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, 96)
