"""The ``accel-widgets`` command: the same engine calls as the widgets, from a terminal.

Each command is a small function registered in :data:`COMMANDS`; engine modules are imported
only when a command runs, so ``accel-widgets models`` answers without loading TensorFlow.
Every :class:`~accel_widgets.errors.AccelError` becomes one clear line on stderr and exit
code 1; Ctrl-C cancels the running step and exits 130.

The commands are grouped by the walk's steps: ``models.py`` (choose, register, build and
convert, evaluate, train), ``services.py`` (capacity, package, deploy, score, services, clean
up); ``settings.py`` turns the targets' declared settings into flags, ``output.py`` prints.
"""

from accel_widgets.cli.main import COMMANDS, build_parser, main
from accel_widgets.cli.output import ERROR, INTERRUPTED, PARTIAL, SUCCESS, USAGE

__all__ = [
    "COMMANDS",
    "ERROR",
    "INTERRUPTED",
    "PARTIAL",
    "SUCCESS",
    "USAGE",
    "build_parser",
    "main",
]
