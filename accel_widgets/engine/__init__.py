"""Engine: plain-Python steps behind the widgets and the command line (no UI imports)."""
