"""Engine: plain-Python steps behind the widgets and the command line (no UI imports)."""

from accel_widgets.engine import _moved

_moved.install()
