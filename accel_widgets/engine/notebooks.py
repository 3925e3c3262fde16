"""Notebooks the kit hands to a user: a copy of the walkthrough, a scoring notebook per service.

The JupyterLab launcher and the deployments sidebar call these through the server extension;
``scripts/walkthrough.sh`` runs ``python -m accel_widgets.engine.notebooks FOLDER``. The
user always works in a copy: the notebooks shipped with the package (in a source checkout,
the tracked ``notebooks/``) are templates, read and never opened, so running the walk
never changes the repository. A copy starts clean (no outputs, no execution counts, no
saved widget state, which would show "Error displaying widget: model not found" before the
kernel makes the widgets again), and a user's own copy is never overwritten (their edits
are their work).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from accel_widgets.engine.workspace import check_name
from accel_widgets.errors import AccelError

WALKTHROUGH = "walkthrough.ipynb"
#: Every notebook a user gets: the walkthrough, the plain-code walk it links to, the second
#: walk (train your own classes).
TEMPLATES = (WALKTHROUGH, "walkthrough-code.ipynb", "train-your-own.ipynb")
_NOTEBOOK_NAME = re.compile(r"[\w.-]+\.ipynb")
#: Per-cell metadata a run leaves behind (timings); tags such as ``parameters`` stay.
_RUN_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled")


def bundled_notebook(name: str = WALKTHROUGH) -> Path:
    """The notebook shipped in the wheel (or, in a source checkout, in ``notebooks/``)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "notebooks" / name, package.parent / "notebooks" / name):
        if candidate.is_file():
            return candidate
    raise AccelError(f"the bundled notebook {name} is missing; reinstall accel-widgets")


def clean_notebook(text: str) -> str:
    """The notebook without what a run leaves in it: outputs, execution counts, widget
    state and cell timings. Written as Jupyter writes notebooks (one-space indent, sorted
    keys), so a clean template is copied byte for byte."""
    notebook = json.loads(text)
    notebook.get("metadata", {}).pop("widgets", None)
    for cell in notebook.get("cells", []):
        metadata = cell.get("metadata", {})
        for key in _RUN_METADATA:
            metadata.pop(key, None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def kernel_language_info() -> dict:
    """The ``language_info`` the Python kernel reports when it starts (ipykernel's own).

    JupyterLab writes what the kernel reports into the notebook's metadata; a notebook that
    holds less (``{"name": "python"}``) changes on opening and its tab shows unsaved changes
    before the user did anything. A copy that holds the same is left as it is.
    """
    try:
        from ipykernel.ipkernel import IPythonKernel

        return json.loads(json.dumps(IPythonKernel.language_info))
    except Exception:  # no ipykernel here: the kernel machine says the rest
        return {"name": "python", "version": ".".join(map(str, sys.version_info[:3]))}


def copy_text(name: str) -> str:
    """What a user's copy of the bundled notebook ``name`` holds: the clean template, with
    the kernel's ``language_info`` so that opening it changes nothing."""
    notebook = json.loads(clean_notebook(bundled_notebook(name).read_text(encoding="utf-8")))
    notebook.setdefault("metadata", {})["language_info"] = kernel_language_info()
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def linked_notebooks(name: str = WALKTHROUGH) -> list[str]:
    """The bundled notebooks that ``name``'s text cells mention ("beside this notebook")."""
    notebook = json.loads(bundled_notebook(name).read_text(encoding="utf-8"))
    text = "\n".join(
        "".join(cell.get("source", ""))
        for cell in notebook.get("cells", [])
        if cell.get("cell_type") == "markdown"
    )
    mentioned = dict.fromkeys(_NOTEBOOK_NAME.findall(text))
    return [n for n in mentioned if n != name and n in TEMPLATES]


def copy_template(name: str, folder: str | Path) -> tuple[Path, bool]:
    """A clean copy of the bundled notebook ``name`` in ``folder``; ``(path, created)``.

    When ``folder`` already holds a notebook of that name it is left as it is and returned
    with ``created=False``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AccelError(f"{folder} is not a folder; open the launcher in an existing folder")
    target = folder / name
    if target.exists():
        return target, False
    target.write_text(copy_text(name), encoding="utf-8")
    return target, True


def copy_walkthrough(folder: str | Path) -> tuple[Path, bool]:
    """Copy the walkthrough, and the notebooks it links to, into ``folder``; ``(path, created)``.

    When ``folder`` already holds a ``walkthrough.ipynb`` it is left as it is and returned
    with ``created=False``: the user's copy is opened, not replaced (so are the linked ones).
    """
    path, created = copy_template(WALKTHROUGH, folder)
    for name in linked_notebooks(WALKTHROUGH):
        copy_template(name, folder)
    return path, created


def copy_notebooks(folder: str | Path, names: Sequence[str] = TEMPLATES) -> list[tuple[Path, bool]]:
    """Clean copies of ``names`` (default: all of them) in ``folder``, made if missing."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AccelError(f"cannot make the folder {folder} for the notebooks: {exc}") from exc
    return [copy_template(name, folder) for name in names]


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
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            },
            "language_info": kernel_language_info(),
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    for index, cell in enumerate(cells):
        cell["id"] = f"score-{index}"
    target.write_text(json.dumps(notebook, indent=1))
    return target, True


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m accel_widgets.engine.notebooks FOLDER``: the user's copies, made once."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m accel_widgets.engine.notebooks FOLDER", file=sys.stderr)
        return 2
    try:
        copies = copy_notebooks(args[0])
    except AccelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path, created in copies:
        print(f"{'copied' if created else 'kept your'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
