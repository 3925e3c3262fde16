"""Run a notebook headless, the way a reader would, and hand back what it showed.

Notebook tests assert on what a person running the walk sees, so they execute the real
``.ipynb`` in a real ``python3`` kernel (nbclient) rather than importing its code. Three
things make that safe and repeatable:

* **Nothing is written into the repository.** The notebook is read into memory and the
  kernel's working directory is a temporary folder, so a test run leaves no executed copy,
  no checkpoints and no plot files behind.
* **The kernel gets its own workspace.** ``ACCEL_WIDGETS_WORKSPACE`` is handed to the kernel
  process in its environment (the rest of this process's environment, including the offline
  and weights settings from ``conftest.py``, is inherited), so the walk never touches the
  user's real workspace.
* **Parameters are injected papermill-style.** A cell assigning the given values is added
  right after the cell tagged ``parameters``, so the notebook's own defaults stay visible and
  the override is explicit.

A failing cell raises :class:`NotebookExecutionError` naming the notebook, the cell number,
its source and the traceback without terminal colour codes.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
TEXT_MIMES = ("text/plain", "text/html")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookExecutionError(AssertionError):
    """A cell failed; ``notebook`` holds what ran up to and including the failing cell.

    An ``AssertionError`` so pytest shows the message as a test failure, not an internal error.
    """

    def __init__(self, message: str, notebook: nbformat.NotebookNode) -> None:
        super().__init__(message)
        self.notebook = notebook


def strip_ansi(text: str) -> str:
    """Drop terminal colour codes (IPython colours its tracebacks)."""
    return _ANSI.sub("", text)


def inject_parameters(nb: nbformat.NotebookNode, parameters: Mapping[str, Any]) -> None:
    """Add a cell assigning ``parameters`` right after the cell tagged ``parameters``.

    Values are written with ``repr``, so they must be literals (str, int, float, bool, None,
    and lists/dicts of them). An earlier injected cell is replaced, not stacked.

    Raises
    ------
    ValueError
        When no cell is tagged ``parameters`` (silently adding the values at the top would let
        the notebook's own defaults win), or a name is not a Python identifier.
    """
    for name in parameters:
        if not str(name).isidentifier():
            raise ValueError(f"parameter name {name!r} is not a Python identifier")
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    index = next(
        (
            i
            for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and PARAMETERS_TAG in cell.metadata.get("tags", [])
        ),
        None,
    )
    if index is None:
        raise ValueError(
            f"the notebook has no code cell tagged {PARAMETERS_TAG!r}; tag the cell holding "
            "the defaults so parameters can override them"
        )
    source = "# Parameters injected by tests/notebook_runner.py\n" + "\n".join(
        f"{name} = {value!r}" for name, value in parameters.items()
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = [INJECTED_TAG]
    nb.cells.insert(index + 1, cell)


def _failed_cell(nb: nbformat.NotebookNode) -> tuple[int, nbformat.NotebookNode] | None:
    """The first code cell with an error output, with its 1-based position among code cells."""
    number = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        number += 1
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return number, cell
    return None


def execute_notebook(
    path: str | os.PathLike[str],
    *,
    workspace_dir: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    timeout: int = 600,
) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` in a fresh ``python3`` kernel; return it executed.

    Parameters
    ----------
    workspace_dir:
        Becomes ``ACCEL_WIDGETS_WORKSPACE`` in the kernel's environment.
    parameters:
        Values overriding the cell tagged ``parameters`` (see :func:`inject_parameters`).
    timeout:
        Seconds any one cell may run.

    Raises
    ------
    NotebookExecutionError
        When a cell raises, times out or the kernel dies; the message has the cell's source
        and the traceback.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    env = {**os.environ, "ACCEL_WIDGETS_WORKSPACE": str(Path(workspace_dir).absolute())}
    with tempfile.TemporaryDirectory(prefix="notebook-run-") as cwd:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            store_widget_state=True,
            resources={"metadata": {"path": cwd}},
        )
        try:
            # ``env`` travels through nbclient to jupyter_client's KernelManager.start_kernel,
            # which uses it as the kernel process's whole environment.
            client.execute(env=env)
        except CellExecutionError as exc:
            failed = _failed_cell(nb)
            where = f"code cell {failed[0]}" if failed else "a cell"
            raise NotebookExecutionError(
                f"{path.name}: {where} failed\n{strip_ansi(str(exc))}", nb
            ) from None
        except (CellTimeoutError, DeadKernelError) as exc:
            raise NotebookExecutionError(
                f"{path.name}: {type(exc).__name__}: {strip_ansi(str(exc))}", nb
            ) from exc
    return nb


def _output_texts(output: Mapping[str, Any]) -> Iterator[str]:
    kind = output.get("output_type")
    if kind == "stream":
        yield output.get("text", "")
    elif kind in ("display_data", "execute_result"):
        data = output.get("data", {})
        for mime in TEXT_MIMES:
            if mime in data:
                value = data[mime]
                yield "".join(value) if isinstance(value, list) else str(value)
    elif kind == "error":
        yield strip_ansi("\n".join(output.get("traceback", [])))


def cell_texts(cell: nbformat.NotebookNode) -> list[str]:
    """Every text a code cell showed: stream output, ``text/plain`` and ``text/html``."""
    if cell.cell_type != "code":
        return []
    return [text for output in cell.get("outputs", []) for text in _output_texts(output)]


def notebook_texts(nb: nbformat.NotebookNode) -> list[str]:
    """:func:`cell_texts` of every code cell, in order, as one flat list."""
    return [text for cell in nb.cells for text in cell_texts(cell)]


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """All text outputs joined with newlines: one string to search with ``in`` or ``re``."""
    return "\n".join(notebook_texts(nb))


def output_mimes(nb: nbformat.NotebookNode) -> set[str]:
    """Every MIME type in display outputs (e.g. ``image/png`` for a plot)."""
    return {
        mime
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        for mime in output.get("data", {})
    }
