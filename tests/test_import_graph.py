"""The package's import graph: no cycles between its files, and the old flat names still work.

A cycle is found by reading every module's imports with :mod:`ast`, the lazy ones inside
functions included: a lazy import hides a cycle from the interpreter until the one call that
closes it, so it is counted here like any other.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from accel_widgets.engine._moved import MOVED

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "accel_widgets"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        deps.add(f"{source}.{alias.name}")
                    elif source in modules:
                        deps.add(source)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_cycle_finder_finds_a_lazy_cycle():
    """The checker itself: two modules importing each other, one of them inside a function."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 80, "the graph should hold every module of accel_widgets"
    found = cycles(graph)
    assert found == [], "import cycles (a helper two steps share belongs in one of them): " + (
        "; ".join(" <-> ".join(group) for group in found)
    )


def test_no_private_name_is_imported_across_modules():
    """A helper two files share is public where it lives; ``from x import _helper`` is not."""
    modules = _modules()
    crossings = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("accel_widgets"):
                crossings += [
                    f"{name}: from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                    and not a.name.startswith("__")
                    and f"{node.module}.{a.name}" not in modules
                ]
    assert crossings == []


def test_the_engine_top_level_holds_at_most_two_loose_modules():
    engine = PACKAGE / "engine"
    loose = sorted(p.name for p in engine.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 2, loose


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_flat_name_is_the_moved_module_itself(old):
    moved = importlib.import_module(f"accel_widgets.engine.{MOVED[old]}")
    assert importlib.import_module(f"accel_widgets.engine.{old}") is moved
    # The module keeps its own name: pickles and reprs name where the code is now.
    assert moved.__spec__.name == moved.__name__ == f"accel_widgets.engine.{MOVED[old]}"


def test_old_names_in_from_imports_and_python_m_still_work():
    from accel_widgets.engine.workspace import Workspace as OldWorkspace

    from accel_widgets.engine.store.workspace import Workspace

    assert OldWorkspace is Workspace
    done = subprocess.run(
        [sys.executable, "-m", "accel_widgets.engine.notebooks"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "usage: python -m accel_widgets.engine.walk.notebooks FOLDER" in done.stderr


def test_a_name_that_never_existed_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("accel_widgets.engine.no_such_step")


def test_every_name_imported_from_the_package_exists_there():
    """After a move, ``from accel_widgets.x import name`` must still find ``name`` in x (a
    function that imports it lazily would otherwise fail only on the day it is called)."""
    missing = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level:
                continue
            if not (node.module or "").startswith("accel_widgets"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ModuleNotFoundError:
                    missing.append(f"{name}: from {node.module} import {alias.name}")
    assert missing == []
