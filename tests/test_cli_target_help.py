"""``accel-widgets deploy MODEL --target T --help`` shows T's settings, and only T's.

The flags come from what each target declares (``Target.settings``), so an added target's
settings appear without an edit to ``cli/``, and ``cli/`` names no target itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from accel_widgets import cli
from accel_widgets.cli import main
from accel_widgets.engine import targets as registry
from accel_widgets.engine.targets import Setting, target_names
from accel_widgets.engine.targets.local import LocalTarget


def help_flags(capsys, *argv: str) -> list[str]:
    """The flags listed under the "settings of the ... target" heading of ``--help``."""
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    section = out.split("settings of the ", 1)[1]
    return re.findall(r"^  (--[a-z][a-z-]*)", section, re.MULTILINE)


def test_a_local_deploy_offers_the_local_settings_only(capsys):
    flags = help_flags(capsys, "deploy", "m", "--target", "local")
    assert flags[:4] == ["--host", "--port", "--auth", "--no-auth"]
    assert {"--runtime", "--idle-timeout", "--device"} <= set(flags)
    for other in ("--subscription", "--namespace", "--kubeconfig", "--instance-type"):
        assert other not in flags
    # Without --target, the default target's (the embedded local one).
    assert help_flags(capsys, "deploy", "m") == flags


def test_each_target_shows_what_it_declares(capsys):
    for name in target_names():
        target = registry.get_target(name)
        declared = {s.flag for s in target.settings if s.ui}
        assert (
            set(help_flags(capsys, "deploy", "m", f"--target={name}"))
            - {"--no-" + f[2:] for f in declared}
            == declared
        ), name


def test_the_quota_command_shows_the_settings_that_size_a_deployment(capsys):
    flags = help_flags(capsys, "quota", "--target", "kubernetes")
    assert "--replicas" in flags and "--namespace" in flags
    assert "--ready-timeout" not in flags and "--auth" not in flags  # Setting.capacity=False


def test_another_targets_flag_still_gets_the_error_naming_this_targets(capsys):
    assert main(["deploy", "m", "--target", "local", "--namespace", "x"]) == cli.ERROR
    err = capsys.readouterr().err
    assert "--namespace is not a setting of the local target; its settings: --host" in err


def test_an_added_targets_settings_appear_with_no_edit_to_the_cli(capsys):
    class Warmed(LocalTarget):
        name = "warmed"
        title = "Warmed (test)"
        settings = (*LocalTarget.settings, Setting("warmup_runs", int, 3, "runs before ready"))

    target = registry.register_target(Warmed())
    try:
        flags = help_flags(capsys, "deploy", "m", "--target", "warmed")
        assert "--warmup-runs" in flags and "--host" in flags
        assert "--warmup-runs" not in help_flags(capsys, "deploy", "m", "--target", "local")
        args = cli.build_parser(["deploy", "m"]).parse_args(
            ["deploy", "m", "--target", "warmed", "--warmup-runs", "5"]
        )
        assert args.setting__warmup_runs == 5
    finally:
        registry._REGISTRY.pop(target.name, None)


@pytest.mark.parametrize(
    "module", sorted(p.name for p in Path(cli.__file__).parent.glob("*.py")), ids=str
)
def test_the_cli_names_no_target(module):
    """No target name as a string in any module of ``cli/``, but for keys read from a record
    (a service's ``info.get("container")`` is the container's id, not the target)."""
    tree = ast.parse((Path(cli.__file__).parent / module).read_text())
    keys = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        for arg in node.args[:1]
    } | {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
    literals = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in keys
    }
    assert literals.isdisjoint(target_names())
