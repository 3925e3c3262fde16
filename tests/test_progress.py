"""The command-line progress adapter: readable in a terminal and in a log file alike."""

from __future__ import annotations

import io

from accel_widgets.progress import ProgressEvent, TerminalProgress


def test_plain_output_is_throttled_but_keeps_each_steps_first_and_last_line():
    """A server warming up reports every 50 ms; a log must not get a line for each."""
    stream = io.StringIO()
    progress = TerminalProgress(stream, min_interval=60.0)
    progress(ProgressEvent("deploy", 0.0, "starting the server"))
    for tick in range(200):
        progress(ProgressEvent("deploy", None, f"warming up ({tick})"))
    progress(ProgressEvent("deploy", 1.0, "ready"))
    progress(ProgressEvent("score", 0.5, "scoring"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("deploy") and lines[0].endswith("starting the server")
    assert "100%" in lines[1] and lines[1].endswith("ready")
    assert lines[2].startswith("score") and " 50%" in lines[2]


def test_plain_output_prints_again_after_the_interval():
    stream = io.StringIO()
    progress = TerminalProgress(stream, min_interval=0.0)
    for tick in range(5):
        progress(ProgressEvent("convert", tick / 10, f"pass {tick}"))
    assert len(stream.getvalue().splitlines()) == 5
