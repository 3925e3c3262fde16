"""Target settings on the command line, from what each target declares.

``cli/`` names no target and no setting: a new target's settings appear as flags, and
``deploy MODEL --target T --help`` shows T's own, because the flags are built here from
``Target.settings`` (``Setting.capacity`` picks the quota command's).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from accel_widgets.errors import AccelError

#: Where a target setting's flag lands in the parsed arguments: a namespace of its own, so a
#: setting can never overwrite a command's own argument (``args.version``, ``args.image``).
SETTING_DEST = "setting__"


def given_settings(args: argparse.Namespace, target) -> dict[str, Any]:
    """The target settings given on the command line, as one mapping; a flag the target
    does not take is refused with the flags it does take."""
    given = {s.name: getattr(args, SETTING_DEST + s.name, None) for s in target_settings()}
    given = {k: v for k, v in given.items() if v is not None}
    unknown = [k for k in given if k not in target._names()]
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        offered = ", ".join(s.flag for s in target.settings if s.ui) or "none"
        raise AccelError(
            f"{flags} is not a setting of the {target.name} target; its settings: {offered}"
        )
    return given


def target_names() -> tuple[str, ...]:
    from accel_widgets.engine.targets import target_names

    return target_names()


def default_target() -> str:
    """The embedded default target: the first one registered."""
    return target_names()[0]


def target_settings() -> list:
    """Every target's command-line settings, each name once (targets share host, port...)."""
    from accel_widgets.engine.targets import targets

    seen: dict[str, Any] = {}
    for target in targets():
        for setting in target.settings:
            if setting.ui:
                seen.setdefault(setting.name, setting)
    return list(seen.values())


def chosen_target(argv: Sequence[str] | None, command: str, default: str | None) -> Any:
    """The target ``argv`` names for ``command`` (``--target T`` / ``--target=T``), else the
    command's default; None when it names no registered target (every setting is shown)."""
    from accel_widgets.engine.targets import get_target
    from accel_widgets.errors import ServingError

    args = list(argv or ())
    name = default
    if command in args:
        rest = args[args.index(command) + 1 :]
        for i, arg in enumerate(rest):
            if arg == "--target" and i + 1 < len(rest):
                name = rest[i + 1]
            elif arg.startswith("--target="):
                name = arg.split("=", 1)[1]
    if name is None:
        return None
    try:
        return get_target(name)
    except ServingError:
        return None


def add_target_settings(
    parser: argparse.ArgumentParser, shown: Any = None, *, for_capacity: bool = False
) -> None:
    """Flags from what the targets declare: a new target needs no edit here.

    Every target's settings parse (a flag of another target gets the error that names the
    chosen target's own), but ``--help`` shows only ``shown``'s: ``deploy MODEL --target T
    --help`` lists T's settings, ``accel-widgets targets`` lists all. ``for_capacity``: only
    the settings the quota step takes (``Setting.capacity``). A setting spelled like one of
    the command's own flags is the command's (the quota command's ``--subscription``).
    """
    from accel_widgets.engine.targets import targets

    every = targets()
    title = f"settings of the {shown.name} target" if shown else "target settings"
    note = (
        "other targets take other settings: add --target T to see T's; "
        "`accel-widgets targets` lists every target's"
    )
    group = parser.add_argument_group(title, note)
    own = {s.name: s for s in shown.settings} if shown else {}
    for setting in target_settings():
        if setting.flag in parser._option_string_actions:
            continue
        declared = [s for t in every for s in t.settings if s.name == setting.name]
        if for_capacity and not any(s.capacity for s in declared):
            continue
        if shown is None:
            users = [t.name for t in every if setting.name in t._names()]
            help_text = f"{setting.help} [{', '.join(users)}]"
        elif setting.name in own and own[setting.name].ui:
            help_text = own[setting.name].help
        else:
            help_text = argparse.SUPPRESS
        dest = SETTING_DEST + setting.name
        if setting.type is bool:
            # A hidden pair stays out of a mutually exclusive group: argparse's usage line
            # cannot be drawn with suppressed members in one.
            hidden = help_text == argparse.SUPPRESS
            flags = group if hidden else group.add_mutually_exclusive_group()
            flags.add_argument(
                setting.flag, dest=dest, action="store_true", default=None, help=help_text
            )
            flags.add_argument(
                "--no-" + setting.flag[2:],
                dest=dest,
                action="store_false",
                help=argparse.SUPPRESS if hidden else None,
            )
        else:
            group.add_argument(
                setting.flag,
                dest=dest,
                metavar=setting.name.upper(),
                type=setting.type,
                default=None,
                choices=setting.choices or None,
                help=help_text,
            )


def manifest_targets() -> list[str]:
    """The targets that write declarative objects (they override ``Target.manifests``)."""
    from accel_widgets.engine.targets import Target, targets

    return [t.name for t in targets() if type(t).manifests is not Target.manifests]
