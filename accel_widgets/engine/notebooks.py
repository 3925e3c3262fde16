"""Notebooks the kit hands to a user: a copy of the walkthrough, a scoring notebook per service.

The JupyterLab launcher and the deployments sidebar call these through the server extension;
a user's own copy is never overwritten (their edits are their work).
"""

from __future__ import annotations

import json
from pathlib import Path

from accel_widgets.engine.workspace import check_name
from accel_widgets.errors import AccelError

WALKTHROUGH = "walkthrough.ipynb"


def bundled_notebook(name: str = WALKTHROUGH) -> Path:
    """The notebook shipped in the wheel (or, in a source checkout, in ``notebooks/``)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "notebooks" / name, package.parent / "notebooks" / name):
        if candidate.is_file():
            return candidate
    raise AccelError(f"the bundled notebook {name} is missing; reinstall accel-widgets")


def copy_walkthrough(folder: str | Path) -> tuple[Path, bool]:
    """Copy the walkthrough into ``folder``; ``(path, created)``.

    When ``folder`` already holds a ``walkthrough.ipynb`` it is left as it is and returned
    with ``created=False``: the user's copy is opened, not replaced.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AccelError(f"{folder} is not a folder; open the launcher in an existing folder")
    target = folder / WALKTHROUGH
    if target.exists():
        return target, False
    target.write_bytes(bundled_notebook().read_bytes())
    return target, True


def _cell(kind: str, source: str) -> dict:
    cell = {"cell_type": kind, "metadata": {}, "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def scoring_notebook(service: str, folder: str | Path) -> tuple[Path, bool]:
    """Write ``score-<service>.ipynb`` into ``folder`` (kept if it exists); ``(path, created)``."""
    check_name(service, "service")
    folder = Path(folder)
    if not folder.is_dir():
        raise AccelError(f"{folder} is not a folder")
    target = folder / f"score-{service}.ipynb"
    if target.exists():
        return target, False
    cells = [
        _cell(
            "markdown",
            f"# Score pictures with the service `{service}`\n\n"
            "The service runs outside this kernel: restarting the kernel does not stop it. "
            "To score your own picture, pass its bytes: "
            '`score(client, open("my.jpg", "rb").read(), labels)`.',
        ),
        _cell(
            "code",
            "from accel_widgets.engine.client import client_from_service\n"
            "from accel_widgets.engine.samples import sample_photos\n"
            "from accel_widgets.engine.scoring import score, service_labels\n"
            "from accel_widgets.engine.workspace import Workspace\n\n"
            "workspace = Workspace()\n"
            f'service = workspace.get_service("{service}")\n'
            "client = client_from_service(service)\n"
            "labels = service_labels(service, workspace)",
        ),
        _cell(
            "code",
            'photo = sample_photos(["chelsea"])[0]  # a cat; or open("my.jpg", "rb").read()\n'
            "result = score(client, photo.data, labels)\n"
            "for index, label, confidence in result.top:\n"
            '    print(f"{confidence:6.3f}  {label}")\n'
            'print(f"{result.latency_ms:.1f} ms")',
        ),
    ]
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    for index, cell in enumerate(cells):
        cell["id"] = f"score-{index}"
    target.write_text(json.dumps(notebook, indent=1))
    return target, True
