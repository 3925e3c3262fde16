"""A new kind of capacity is one module and one registration, as a new target is.

The check added here is real, not a stand-in: it counts this process's open files against
its soft limit (``RLIMIT_NOFILE``), which a service that holds many connections runs out of.
A target that draws on it is registered beside it; the quota step, its widget and the
command line then offer and run it without an edit anywhere else.
"""

from __future__ import annotations

import os
import resource
from typing import Any

import pytest

from accel_widgets.cli import main
from accel_widgets.engine import targets as registry
from accel_widgets.engine.targets import capacity
from accel_widgets.engine.targets.capacity import (
    STEP,
    CapacityCheck,
    QuotaReport,
    QuotaRow,
    register_capacity_check,
)
from accel_widgets.engine.targets.local import LocalTarget
from accel_widgets.engine.targets.quota import check_quota, quota_choices, quota_targets
from accel_widgets.errors import QuotaError
from accel_widgets.progress import EventLog, Reporter
from accel_widgets.widgets import QuotaWidget


# -- the new module's whole content: a check and a target that draws on it ------------------
class OpenFiles(CapacityCheck):
    """This process's open files against its soft limit."""

    name = "open-files"
    title = "Open files"
    options = ("needed",)

    def check(self, report: Reporter, **options: Any) -> QuotaReport:
        report(STEP, 0.0, "counting open files")
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
        row = QuotaRow("open files", float(used), float(soft), "files", float(options["needed"]))
        report(STEP, 1.0, "open files counted")
        advice = "enough" if row.enough else "raise the limit with `ulimit -n`"
        return QuotaReport(self.name, [row], row.enough, advice)


class ManyConnections(LocalTarget):
    """The local server, checked for open files instead of memory and disk."""

    name = "many-connections"
    title = "Many connections (test)"
    capacity = OpenFiles.name


# --------------------------------------------------------------------------------------------


@pytest.fixture
def added():
    check = register_capacity_check(OpenFiles())
    target = registry.register_target(ManyConnections())
    yield check, target
    registry._REGISTRY.pop(target.name, None)
    capacity._CHECKS.pop(check.name, None)


def test_a_target_runs_the_check_it_draws_on(added):
    events = EventLog()
    report = check_quota("many-connections", needed=8, progress=events)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert report.target == "open-files"
    assert [r.name for r in report.rows] == ["open files"]
    assert report.rows[0].limit == soft and 0 < report.rows[0].current < soft
    assert report.verdict is True
    assert [e.message for e in events] == ["counting open files", "open files counted"]


def test_the_check_is_offered_by_name_and_gets_the_quota_steps_options(added):
    assert "many-connections" in quota_targets() and "open-files" in quota_targets()
    assert ("Open files", "open-files") in quota_choices()
    report = check_quota("open-files", needed=10**9)
    assert report.verdict is False
    assert "ulimit -n" in report.advice


def test_the_quota_widget_offers_it_without_azures_fields(added):
    widget = QuotaWidget()
    assert ("Open files", "open-files") in widget.target.options
    widget.target.value = "azure"
    assert widget.azure_box.layout.display == ""
    widget.target.value = "many-connections"
    assert widget.azure_box.layout.display == "none"
    report = widget.run()
    assert report is not None and report.target == "open-files"


def test_the_command_line_runs_it(added, capsys):
    assert main(["quota", "--target", "open-files", "--needed", "4"]) == 0
    out = capsys.readouterr().out
    assert "open files" in out and "files" in out


def test_a_kind_nobody_registered_is_an_error_never_azures_check():
    class Nowhere(LocalTarget):
        name = "nowhere-target"
        title = "Nowhere (test)"
        capacity = "nowhere"

    target = registry.register_target(Nowhere())
    try:
        with pytest.raises(QuotaError, match=r"no capacity check called 'nowhere'.*local.*azure"):
            check_quota("nowhere-target")
    finally:
        registry._REGISTRY.pop(target.name, None)
