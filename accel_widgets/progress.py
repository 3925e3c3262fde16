"""One progress protocol for every long call.

Long engine calls take ``progress`` (a callable that receives :class:`ProgressEvent`) and
``cancel`` (a :class:`CancelToken`). Widgets turn the events into a progress bar and a log,
the command line into a terminal bar, and tests into a list they assert on. Cancellation
travels back through the token, which the engine checks between events.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from accel_widgets.errors import CancelledError


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long call.

    ``fraction`` is the share of *this step* done (0..1), or ``None`` when the step cannot
    tell (a tf2onnx pass, a server warming up).
    """

    step: str
    fraction: float | None
    message: str


Progress = Callable[[ProgressEvent], None]


class CancelToken:
    """Set by the user (a Cancel button, Ctrl-C), checked by the engine between events."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("cancelled by the user; nothing half-done was kept")


class Reporter:
    """What an engine function holds: emits events and checks for cancellation in one call.

    Engine code writes ``report("convert", 0.5, "optimizing")`` and never checks whether
    anyone listens; a cancelled token turns the next report into :class:`CancelledError`.
    """

    def __init__(self, progress: Progress | None = None, cancel: CancelToken | None = None):
        self.progress = progress
        self.cancel = cancel

    def __call__(self, step: str, fraction: float | None, message: str) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        if self.progress is not None:
            if fraction is not None:
                fraction = min(1.0, max(0.0, float(fraction)))
            self.progress(ProgressEvent(step, fraction, message))

    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()


def as_reporter(
    progress: Progress | Reporter | None = None, cancel: CancelToken | None = None
) -> Reporter:
    """Accept a plain callable, a Reporter or nothing, so every engine call has one shape."""
    if isinstance(progress, Reporter):
        if cancel is not None and progress.cancel is None:
            progress.cancel = cancel
        return progress
    return Reporter(progress, cancel)


class EventLog(list):
    """A list that records events: the test adapter.

    ``events = EventLog(); build_model(..., progress=events)``, then assert on ``events``.
    """

    def __call__(self, event: ProgressEvent) -> None:
        self.append(event)

    def steps(self) -> list[str]:
        """Step names in first-seen order."""
        seen: list[str] = []
        for event in self:
            if event.step not in seen:
                seen.append(event.step)
        return seen


class TerminalProgress:
    """The command-line adapter: one redrawn line per step on a TTY, plain lines otherwise.

    Plain lines (a pipe, a log file, a notebook cell) are throttled to one a second per
    step, plus a step's first and last line: a server warming up reports every 50 ms, which
    would be hundreds of lines in a log.
    """

    def __init__(
        self, stream: TextIO | None = None, width: int = 28, min_interval: float = 1.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.min_interval = min_interval
        self._step: str | None = None
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._started = time.monotonic()
        self._last_line = float("-inf")

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.step != self._step:
            if self._step is not None and self._tty:
                self.stream.write("\n")
            self._step = event.step
            self._started = now
            self._last_line = float("-inf")
        if not self._tty:
            last = event.fraction is not None and event.fraction >= 1.0
            if not last and now - self._last_line < self.min_interval:
                return
            self._last_line = now
        elapsed = now - self._started
        if event.fraction is None:
            bar = "." * min(self.width, int(elapsed) % (self.width + 1))
            bar = bar.ljust(self.width)
            pct = "  ? "
        else:
            filled = round(event.fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            pct = f"{event.fraction * 100:3.0f}%"
        line = f"{event.step:<10} [{bar}] {pct} {elapsed:5.1f}s  {event.message}"
        if self._tty:
            self.stream.write("\r" + line[:160].ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._tty and self._step is not None:
            self.stream.write("\n")
            self.stream.flush()
