"""Mutation testing of the modules where a wrong number or a wrong answer hurts most.

A test suite that passes says little about what it would catch. Mutation testing plants one
small bug at a time (``<`` for ``<=``, ``-`` for ``+``, a constant off by one, an argument
dropped, ``True`` for ``False``) into a copy of the code and runs the tests that reach it:
a mutant the tests still pass on ("survived") is a change no test would notice. This script
runs `mutmut <https://mutmut.readthedocs.io>`_ 3 over each group of modules below, on the
fast tests of that group, and prints the score per module and every surviving mutant as a
diff. It is not part of CI (see docs/MEASUREMENTS.md, "Mutation testing", for what a run
costs on the 2-core machine).

Why mutmut 3 rather than cosmic-ray 8.7 (by how each runs a mutant; the cost of a mutmut run
is in docs/MEASUREMENTS.md, "Mutation testing"): mutmut writes every
mutant of a file into one copy (``mutants/``) behind trampolines, runs the tests once to
learn which tests reach which function, and then forks a warm process per mutant that runs
only those tests; cosmic-ray starts a fresh test command per mutant, which pays the import
of numpy, gRPC, ONNX Runtime and the test collection every time.

What it means for this project:

* Only tests that call the code **in the test process** count: mutmut learns coverage from
  its trampolines, so a function reached only inside a server subprocess is "no tests" even
  when a subprocess test would catch the bug. tests/test_pinned_serving.py therefore runs the
  real gRPC and HTTP servers in-process (threads, loopback) for the serving modules.
* Module-level constants (``NMS_IOU``, ``SERVICE_CONFIG``, ``PUBLIC_METHODS``) and decorated
  functions (``@property``, ``@lru_cache``) are not mutated; tests/test_pinned_*.py pin the
  constants that matter as user-visible facts instead.
* "Fast tests": each group's test files are run once first and every test that costs more
  than ``--max-test-seconds`` (its own time plus the module/session fixtures it needs, which a
  forked mutant run sets up again) is left out, so one mutant costs seconds, not minutes.
* The work happens in ``.mutation/<group>/`` (git-ignored): a copy of ``accel_widgets/``,
  ``tests/`` and ``pyproject.toml`` (from the working tree, or from ``--ref REF`` for a
  "before" score), plus mutmut's ``mutants/`` and a ``summary.json``.

Install the tool beside the project (not in CI's set)::

    python -m venv --system-site-packages .venv-mutmut
    .venv-mutmut/bin/pip install 'mutmut>=3.8,<4'

Usage::

    .venv-mutmut/bin/python bench/mutation.py                  # every group, working tree
    .venv-mutmut/bin/python bench/mutation.py serving ssd      # some groups
    .venv-mutmut/bin/python bench/mutation.py --ref f80df67    # the score before a change
    .venv-mutmut/bin/python bench/mutation.py --report serving # print a finished run again
    .venv-mutmut/bin/python bench/mutation.py --rerun-survivors --ref f80df67 serving  # after

Run it under ``nice`` on a shared machine; ``--children`` (default 1) forked mutants run at
once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"


@dataclass(frozen=True)
class Group:
    """Modules mutated together and the test files that may kill their mutants."""

    modules: tuple[str, ...]
    tests: tuple[str, ...]


GROUPS: dict[str, Group] = {
    "preprocess": Group(
        ("accel_widgets/preprocess.py",),
        (
            "tests/test_preprocess.py",
            "tests/test_serving_config.py",
            "tests/test_validate.py",
            "tests/test_pinned_preprocess.py",
        ),
    ),
    "serving": Group(
        (
            "accel_widgets/serving/tensors.py",
            "accel_widgets/serving/v2.py",
            "accel_widgets/serving/auth.py",
            "accel_widgets/serving/pipeline.py",
        ),
        (
            "tests/test_serving_protocol.py",
            "tests/test_serving_config.py",
            "tests/test_v2_protocol.py",
            "tests/test_client.py",
            "tests/test_review_defects.py",
            "tests/test_pinned_serving.py",
            "tests/test_pinned_tensors.py",
        ),
    ),
    "reports": Group(
        (
            "accel_widgets/engine/conversion/reports.py",
            "accel_widgets/engine/checks/verdicts.py",
            "accel_widgets/engine/checks/accuracy.py",
        ),
        (
            "tests/test_accuracy.py",
            "tests/test_validate.py",
            "tests/test_review_defects.py",
            "tests/test_pinned_reports.py",
        ),
    ),
    "targets": Group(
        ("accel_widgets/engine/targets/base.py",),
        (
            "tests/test_targets_registry.py",
            "tests/test_pinned_settings.py",
            "tests/test_pinned_targets.py",
        ),
    ),
    "client": Group(
        ("accel_widgets/engine/clients/grpc_client.py",),
        ("tests/test_client.py", "tests/test_pinned_client.py"),
    ),
    "ssd": Group(
        ("accel_widgets/engine/models/ssd_decode.py",),
        ("tests/test_ssd_decode.py", "tests/test_pinned_ssd.py"),
    ),
}

#: mutmut's exit-code statuses, folded into what the score counts.
KILLED = ("killed", "timeout", "segfault", "caught by type check")


# -- the work folder ----------------------------------------------------------------------------


def work_folder(name: str, ref: str | None) -> Path:
    """``.mutation/serving`` for the working tree, ``.mutation/serving@REF`` for a commit."""
    return WORK / (f"{name}@{ref}" if ref else name)


def prepare_folder(name: str, group: Group, ref: str | None) -> Path:
    """A fresh copy of the code and tests to mutate, with mutmut's settings for ``group``."""
    folder = work_folder(name, ref)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if ref:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "accel_widgets", "tests", "pyproject.toml"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    else:
        ignore = shutil.ignore_patterns("__pycache__", "labextension", "*.pyc")
        shutil.copytree(ROOT / "accel_widgets", folder / "accel_widgets", ignore=ignore)
        shutil.copytree(ROOT / "tests", folder / "tests", ignore=ignore)
        shutil.copy2(ROOT / "pyproject.toml", folder / "pyproject.toml")
    return folder


def existing_tests(folder: Path, group: Group) -> list[str]:
    """The group's test files that exist in this copy (a ``--ref`` may predate some)."""
    return [t for t in group.tests if (folder / t).is_file()]


#: Written beside the copy (and copied into ``mutants/``, on the path of every server a test
#: starts): a child process must not inherit mutmut's "stats" mode, in which every call
#: records itself into mutmut's state and reads its settings from the current folder,
#: which a server started elsewhere does not have. A child started while a mutant is under
#: test keeps that mutant, so a test that goes through a server tests the mutated code too.
SITECUSTOMIZE = """\
import os

if os.environ.get("MUTANT_UNDER_TEST") == "stats":
    del os.environ["MUTANT_UNDER_TEST"]
"""


def write_settings(folder: Path, group: Group, tests: list[str], slow: list[str]) -> None:
    """Append ``[tool.mutmut]`` to the copy's pyproject.toml (mutmut reads it from the cwd)."""
    selection = [*tests, "-p", "no:cacheprovider"]
    for node in slow:
        selection += ["--deselect", node]
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    settings = {
        "source_paths": ["accel_widgets"],
        "only_mutate": list(group.modules),
        "also_copy": ["sitecustomize.py"],
        "pytest_add_cli_args_test_selection": selection,
        # gRPC is not fork-safe once its threads run: fork mutants from a clean server process.
        "process_isolation": "forkserver",
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    with open(folder / "pyproject.toml", "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def environment(folder: Path) -> dict[str, str]:
    """The tests' environment: the copy's code only, the shared weights where they are."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # The copy lives under .mutation/, so the shared folders beside the repository are named.
    env.setdefault("ACCEL_WIDGETS_WEIGHTS_DIR", str(ROOT.parent / "shared" / "weights"))
    env.setdefault("ACCEL_WIDGETS_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    env["PYTHONPATH"] = str(folder)
    return env


# -- which tests are fast -----------------------------------------------------------------------


class CostRecorder:
    """A pytest plugin: what each test costs when run alone, as a forked mutant run does.

    A test's cost is its own setup, call and teardown, plus the set-up time of every module
    or session fixture it uses that another test set up first (a forked run sets them up
    again for each mutant).
    """

    def __init__(self) -> None:
        self.own: dict[str, float] = defaultdict(float)
        self.fixtures: dict[str, float] = {}
        self.uses: dict[str, list[str]] = {}
        self.set_up_by: dict[str, str] = {}
        self.failed: set[str] = set()
        self.current = ""

    def pytest_runtest_setup(self, item: Any) -> None:
        self.current = item.nodeid
        self.uses[item.nodeid] = list(item.fixturenames)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Any:
        start = time.perf_counter()
        outcome = yield
        if fixturedef.scope != "function":
            self.fixtures[fixturedef.argname] = time.perf_counter() - start
            self.set_up_by[fixturedef.argname] = self.current
        return outcome

    def pytest_runtest_logreport(self, report: Any) -> None:
        self.own[report.nodeid] += report.duration
        if report.failed:
            self.failed.add(report.nodeid)

    def costs(self) -> dict[str, float]:
        result = {}
        for node, seconds in self.own.items():
            shared = sum(
                self.fixtures[f]
                for f in self.uses.get(node, ())
                if f in self.fixtures and self.set_up_by.get(f) != node
            )
            result[node] = round(seconds + shared, 3)
        return result


def measure_costs(folder: Path, tests: list[str], out: Path) -> dict[str, Any]:
    """Run the group's tests once (in a child, on the copy): each test's cost, and the tests
    that failed (mutmut needs a passing run to start from, so they are left out and listed)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", str(out), "--", *tests]
    with open(folder / "measure.log", "wb") as log:
        subprocess.run(
            command, cwd=folder, env=environment(folder), stdout=log, stderr=subprocess.STDOUT
        )
    return json.loads(out.read_text()) if out.is_file() else {"costs": {}, "failed": []}


def _measure_main(out: Path, args: list[str]) -> int:
    recorder = CostRecorder()
    code = pytest.main(["-q", "-p", "no:cacheprovider", *args], plugins=[recorder])
    measured = {"costs": recorder.costs(), "failed": sorted(recorder.failed)}
    out.write_text(json.dumps(measured, indent=1, sort_keys=True))
    return int(code)


# -- running and reporting ----------------------------------------------------------------------


def run_group(name: str, group: Group, args: argparse.Namespace) -> dict[str, Any]:
    folder = prepare_folder(name, group, args.ref)
    tests = existing_tests(folder, group)
    started = time.monotonic()
    measured = measure_costs(folder, tests, folder / "test-costs.json")
    costs, failed = measured["costs"], measured["failed"]
    slow = sorted(n for n, s in costs.items() if s > args.max_test_seconds and n not in failed)
    measure_seconds = time.monotonic() - started
    write_settings(folder, group, tests, [*slow, *failed])
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.children)]
    started = time.monotonic()
    with open(folder / "mutmut.log", "wb") as log:
        code = subprocess.run(
            command, cwd=folder, env=environment(folder), stdout=log, stderr=subprocess.STDOUT
        ).returncode
    seconds = time.monotonic() - started
    summary = {
        "group": name,
        "ref": args.ref or "working tree",
        "git_ref": args.ref,
        "mutmut_exit_code": code,
        "tests": tests,
        "fast_tests": len(set(costs) - set(slow) - set(failed)),
        "slow_tests_left_out": slow,
        "failing_tests_left_out": failed,
        "max_test_seconds": args.max_test_seconds,
        "measure_seconds": round(measure_seconds, 1),
        "mutmut_seconds": round(seconds, 1),
        "children": args.children,
        "mutmut_version": _mutmut_version(),
        "modules": collect(folder, group),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def rerun_survivors(name: str, group: Group, args: argparse.Namespace) -> dict[str, Any]:
    """Test a finished run's survivors again, against the working tree's tests now.

    The "after" of a change that only adds tests, at a fraction of a full run's cost: a
    mutant killed before stays killed when tests are only added (the old tests still run on
    it), so only the mutants that were not killed need a new verdict. The group's code and
    tests are copied into the existing ``.mutation/<group>/`` afresh; mutmut re-mutates a
    module whose source changed (every mutant of a changed function gets a new verdict),
    learns which functions the new tests reach, and then runs each survivor again. New tests
    belong in the group's existing test files: a changed test selection makes mutmut forget
    every verdict. With ``--ref REF`` the run of that commit (the "before") is the one taken
    up, so before and after come from the same folder.
    """
    folder = work_folder(name, args.ref)
    previous = json.loads((folder / "summary.json").read_text())
    ignore = shutil.ignore_patterns("__pycache__", "labextension", "*.pyc")
    shutil.copytree(
        ROOT / "accel_widgets", folder / "accel_widgets", ignore=ignore, dirs_exist_ok=True
    )
    shutil.copytree(ROOT / "tests", folder / "tests", ignore=ignore, dirs_exist_ok=True)
    # Modules outside the group are copied into mutants/ once by mutmut; refresh them too.
    mutated = {str(Path(m)) for m in group.modules}

    def keep_mutated(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(ROOT)
        return {n for n in names if str(relative / n) in mutated} | set(ignore(directory, names))

    shutil.copytree(
        ROOT / "accel_widgets",
        folder / "mutants" / "accel_widgets",
        ignore=keep_mutated,
        dirs_exist_ok=True,
    )
    survivors = sorted(
        mutant
        for data in previous["modules"].values()
        for mutant, status in data["status"].items()
        if status not in KILLED
    )
    base = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.children)]
    started = time.monotonic()
    with open(folder / "mutmut-rerun.log", "wb") as log:
        code = 0
        # First any mutant without a verdict (a changed function), then the survivors.
        for command in (base, [*base, *survivors]) if survivors else (base,):
            code = (
                code
                or subprocess.run(
                    command,
                    cwd=folder,
                    env=environment(folder),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ).returncode
            )
    seconds = time.monotonic() - started
    summary = {
        **previous,
        "ref": "working tree (the survivors of "
        + previous.get("before_ref", previous["ref"])
        + " tested again)",
        "before_ref": previous.get("before_ref", previous["ref"]),
        "mutmut_exit_code": code,
        "rerun_survivors": len(survivors),
        "rerun_seconds": round(seconds, 1),
        "before": previous.get("before")
        or {m: score(d["status"])[:2] for m, d in previous["modules"].items()},
        "modules": collect(folder, group),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def collect(folder: Path, group: Group) -> dict[str, Any]:
    """Per module: each mutant's status, read from mutmut's ``.meta`` files."""
    from mutmut.stats import status_by_exit_code

    modules = {}
    for module in group.modules:
        meta = folder / "mutants" / (module + ".meta")
        if not meta.is_file():
            modules[module] = {"status": {}, "error": "no mutants written (see mutmut.log)"}
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        modules[module] = {"status": {k: status_by_exit_code[v] for k, v in codes.items()}}
    return modules


def score(statuses: dict[str, str]) -> tuple[int, int, float]:
    """(killed, total, share): every mutant counts, untested ones as not killed."""
    killed = sum(s in KILLED for s in statuses.values())
    total = len(statuses)
    return killed, total, (killed / total if total else 1.0)


def diff(folder: Path, mutant: str) -> str:
    """The mutant as a unified diff of its function (mutmut's own ``show``)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    here = os.getcwd()
    os.chdir(folder)
    try:
        return get_diff_for_mutant(mutant)
    except Exception as exc:  # a report must not die on one mutant it cannot show
        return f"(no diff: {exc})"
    finally:
        os.chdir(here)


def report(summary: dict[str, Any], show_survivors: bool = True) -> None:
    folder = work_folder(summary["group"], summary.get("git_ref"))
    print(
        f"\n== {summary['group']} ({summary['ref']}): mutmut {summary['mutmut_version']}, "
        f"{summary['mutmut_seconds']:.0f} s mutating + {summary['measure_seconds']:.0f} s "
        f"measuring tests, {summary['children']} child(ren); {summary['fast_tests']} fast "
        f"tests, {len(summary['slow_tests_left_out'])} left out (> "
        f"{summary['max_test_seconds']} s)"
    )
    for node in summary.get("failing_tests_left_out", []):
        print(f"  left out, failing before any mutation: {node}")
    if "rerun_seconds" in summary:
        print(
            f"   then {summary['rerun_survivors']} survivors tested again against the tests "
            f"now: {summary['rerun_seconds']:.0f} s; before -> after:"
        )
    for module, data in summary["modules"].items():
        if module in summary.get("before", {}):
            k, t = summary["before"][module]
            print(f"{module:<40} before {k / t if t else 1:6.1%} killed ({k}/{t})")
        statuses = data["status"]
        killed, total, share = score(statuses)
        counts = Counter(statuses.values())
        detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        print(f"{module:<40} {share:6.1%} killed ({killed}/{total}: {detail})")
    if not show_survivors:
        return
    for data in summary["modules"].values():
        for mutant, status in sorted(data["status"].items()):
            if status not in KILLED:
                print(f"\n--- {status}: {mutant}\n{diff(folder, mutant)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--measure"]:
        return _measure_main(Path(argv[1]), argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", help=f"any of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--ref", help="mutate this git commit's code and tests (a 'before')")
    parser.add_argument("--children", type=int, default=1, help="mutants run at once")
    parser.add_argument("--max-test-seconds", type=float, default=3.0)
    parser.add_argument("--report", action="store_true", help="print finished runs again")
    parser.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="test a finished run's survivors again against the working tree (an 'after')",
    )
    parser.add_argument("--no-survivors", action="store_true", help="scores only")
    args = parser.parse_args(argv)
    names = args.groups or list(GROUPS)
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; groups are {', '.join(GROUPS)}")
    for name in names:
        if args.report:
            summary = json.loads((work_folder(name, args.ref) / "summary.json").read_text())
        elif args.rerun_survivors:
            summary = rerun_survivors(name, GROUPS[name], args)
        else:
            summary = run_group(name, GROUPS[name], args)
        report(summary, show_survivors=not args.no_survivors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
