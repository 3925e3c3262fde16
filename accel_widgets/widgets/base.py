"""What every step widget shares: a locked/busy/done life cycle, live progress, errors in words.

A step runs its engine call on a background thread when a button is clicked, so the kernel
keeps handling messages (the Cancel click, other widgets) while a model converts. Tests and
the headless notebook call the same work synchronously through ``run()`` methods, or click
and then :meth:`Step.wait`.
"""

from __future__ import annotations

import html
import re
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.errors import AccelError, CancelledError
from accel_widgets.progress import CancelToken, ProgressEvent

_LOG_LINES = 200

#: What each bundled sample photo shows, as the walk names it (the file name in brackets
#: where people know the photo by it).
PHOTO_NAMES = {
    "chelsea": "cat (chelsea)",
    "coffee": "espresso cup",
    "astronaut": "astronaut (Eileen Collins)",
    "rocket": "rocket (Falcon 9)",
    "china": "palace (china)",
    "flower": "flower",
}


def photo_name(name: str) -> str:
    """What a bundled photo shows ("cat (chelsea)"), or the name itself for any other."""
    return PHOTO_NAMES.get(name, name)


_DIGITS = re.compile(r"\d+")


def _shape(line: str) -> str:
    """A log line with its numbers blanked: repeated ticks of one message look alike."""
    return _DIGITS.sub("#", line)


def error_text(exc: BaseException) -> str:
    """What the user reads: our errors as they are (in a widget's words where the engine
    has them: ``widget_message``), anything else named with its type."""
    if isinstance(exc, AccelError):
        return getattr(exc, "widget_message", None) or str(exc)
    return f"{type(exc).__name__}: {exc}"


class ProgressPanel(widgets.VBox):
    """One bar per engine step (build, convert, validate, ...) and a live log below them.

    Events with a fraction move their step's bar; events without one (a tf2onnx pass, a
    server warming up) put the bar in its "working" style; every event is a log line.
    """

    updates = traitlets.Int(0, help="events received so far: tests watch it move")

    def __init__(self, **kwargs: Any) -> None:
        self._bars: dict[str, widgets.FloatProgress] = {}
        self._bar_box = widgets.VBox()
        self._lines: list[str] = []
        # HTML, not a Textarea: a Textarea never wraps its lines (a horizontal scrollbar even
        # when they fit) and keeps its scroll position at the top while lines arrive. Here the
        # lines wrap, and a column-reverse box starts scrolled to its end: the last line shows.
        self.log_box = widgets.HTML(value="", layout=widgets.Layout(width="100%", display="none"))
        self.log_box.add_class("accel-log")
        super().__init__([self._bar_box, self.log_box], **kwargs)
        self.add_class("accel-progress")

    def reset(self) -> None:
        self._bars.clear()
        self._bar_box.children = ()
        self._lines = []
        self.log_box.value = ""
        self.log_box.layout.display = "none"

    @property
    def log_text(self) -> str:
        """The log as plain lines, newest last (what the box shows, without its markup)."""
        return "\n".join(self._lines)

    def _render_log(self) -> None:
        lines = html.escape(self.log_text)
        self.log_box.value = (
            "<div class='accel-log-lines' style='display:flex;flex-direction:column-reverse;"
            "max-height:10em;overflow-y:auto;overflow-x:hidden;border:1px solid #ccc;"
            "padding:2px 6px;font-family:var(--jp-code-font-family,monospace);font-size:12px;"
            "line-height:1.4'>"
            f"<div style='white-space:pre-wrap;overflow-wrap:anywhere'>{lines}</div></div>"
        )

    def bar(self, step: str) -> widgets.FloatProgress:
        """The bar of ``step`` (created on first use)."""
        if step not in self._bars:
            bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description=step)
            bar.add_class(f"accel-progress-{step}")
            self._bars[step] = bar
            self._bar_box.children = (*self._bar_box.children, bar)
        return self._bars[step]

    def __call__(self, event: ProgressEvent) -> None:
        bar = self.bar(event.step)
        if event.fraction is None:
            bar.bar_style = "info"
        else:
            bar.value = event.fraction
            bar.bar_style = "success" if event.fraction >= 1.0 else ""
        stamp = time.strftime("%H:%M:%S")
        line = f"{stamp} {event.step}: {event.message}"
        if self._lines and _shape(self._lines[-1]) == _shape(line):
            self._lines[-1] = line  # "warming up (0.1 s)", "(0.2 s)"...: one line that counts
        else:
            self._lines = [*self._lines[-_LOG_LINES + 1 :], line]
        self._render_log()
        self.log_box.layout.display = ""
        self.updates += 1

    def finish(self, ok: bool) -> None:
        """Bars of an interrupted run turn red; a finished run's bars read full."""
        for bar in self._bars.values():
            if ok:
                bar.value = 1.0
                bar.bar_style = "success"
            elif bar.value < 1.0:
                bar.bar_style = "danger"


class Step(widgets.VBox):
    """A step of the walk.

    Traits: ``locked`` (the step before is not done: controls are disabled and a hint says
    so), ``busy`` (work is running), ``done`` (the step has its result), ``error`` (the last
    failure, in words; shown in red, never as a traceback).
    """

    title = traitlets.Unicode("")
    locked = traitlets.Bool(False)
    busy = traitlets.Bool(False)
    done = traitlets.Bool(False)
    error = traitlets.Unicode("")
    status = traitlets.Unicode("")
    #: what the step's result does not prove, in words: shown in amber, and the step gets a
    #: warning mark instead of a check mark (nothing gets a check mark that is unproven)
    warning = traitlets.Unicode("")

    #: the CSS class of the step's box, for notebooks, Voila and browser tests
    css_name = "step"
    #: what a locked step says instead of its controls' state
    lock_words = "Finish the step above first."
    #: a locked step hides its status (it would repeat the lock hint in other words)
    quiet_when_locked = True

    def __init__(self, children: list[widgets.Widget], **kwargs: Any) -> None:
        self.header = widgets.HTML()
        self.lock_hint = widgets.HTML()
        self.status_line = widgets.HTML()
        self.status_line.add_class(f"accel-{self.css_name}-status")
        self.error_box = widgets.HTML()
        self.error_box.add_class("accel-error")
        self.warning_box = widgets.HTML()
        self.warning_box.add_class("accel-warning")
        self._thread: threading.Thread | None = None
        self._cancel: CancelToken | None = None
        self._cancel_asked: float | None = None
        self.state: Any = None  # the walk's WalkState, when the step is part of a walk
        # The error sits at the top of the step, under its title: where the user is looking
        # after a click, and in the place of the result it replaces.
        super().__init__(
            [
                self.header,
                self.lock_hint,
                self.error_box,
                *children,
                self.warning_box,
                self.status_line,
            ],
            **kwargs,
        )
        self.add_class("accel-step")
        self.add_class(f"accel-step-{self.css_name}")
        self._render_header()
        self._render_lock()

    # -- what the user sees -------------------------------------------------------------

    @traitlets.observe("title", "done", "error", "warning")
    def _render_header(self, change: Any = None) -> None:
        # A failed last action never leaves a check mark: the user must not believe it worked.
        if self.error:
            mark = " <span style='color:#b00020' title='the last action failed'>&#10007;</span>"
        elif self.done and self.warning:
            tip = html.escape(self.warning, quote=True)
            mark = (
                " <span class='accel-warning-mark' style='color:#b26a00' "
                f"title='{tip}'>&#9888;</span>"
            )
        elif self.done:
            mark = " &#10003;"
        else:
            mark = ""
        self.header.value = f"<h3 style='margin:0.4em 0'>{html.escape(self.title)}{mark}</h3>"

    @traitlets.observe("locked")
    def _render_lock(self, change: Any = None) -> None:
        if change is not None and change["new"] and not self.busy:
            # Locked again (the step above lost its result): this step's last failure is
            # about a state that is gone; the lock hint says what to do now, with no stale ✗.
            self.error = ""
        waiting = self.locked and not self.done
        self.lock_hint.value = f"<i>{html.escape(self.lock_words)}</i>" if waiting else ""
        self._set_enabled(not self.locked and not self.busy)
        self._render_status()

    @traitlets.observe("busy")
    def _render_busy(self, change: Any) -> None:
        self._set_enabled(not self.locked and not self.busy)

    @traitlets.observe("error")
    def _render_error(self, change: Any) -> None:
        self.error_box.value = (
            f"<div style='color:#b00020;white-space:pre-wrap'>{html.escape(self.error)}</div>"
            if self.error
            else ""
        )

    @traitlets.observe("warning")
    def _render_warning(self, change: Any = None) -> None:
        text = html.escape(self.warning)
        self.warning_box.value = (
            f"<div style='color:#8a5300;white-space:pre-wrap'>&#9888; {text}</div>"
            if self.warning
            else ""
        )

    @traitlets.observe("status")
    def _render_status(self, change: Any = None) -> None:
        # A locked step says one thing, what to do first; its own last words wait below it.
        waiting = self.locked and not self.done and self.quiet_when_locked
        self.status_line.value = "" if waiting else html.escape(self.status)

    def _set_enabled(self, enabled: bool) -> None:
        """Subclasses disable their inputs and action buttons here."""

    # -- the walk's shared state --------------------------------------------------------------

    def use_state(self, state: Any) -> None:
        """Show what ``state`` (a :class:`~accel_widgets.widgets.state.WalkState`) says.

        The step re-reads it whenever it changes and when its own work ends.
        """
        self.state = state
        state.observe(lambda change: self._sync(), ["models", "images", "services"])
        self.observe(lambda change: change["new"] or self._sync(), "busy")

    def _refresh_state(self) -> None:
        """After an action: read the workspace again, so every step sees what it changed."""
        if self.state is not None:
            self.state.refresh()

    def _sync(self) -> None:
        """Subclasses compare what they show with the state here (never while busy)."""

    # -- running work ---------------------------------------------------------------------

    def _guarded(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` with busy/error bookkeeping; errors become the step's error text."""
        if self.locked:
            self.error = self.lock_words
            return None
        self.error = ""
        self.busy = True
        try:
            return work()
        except CancelledError as exc:
            self.error = f"Cancelled: {exc}"
            self.status = self._cancelled_words()
        except AccelError as exc:
            self.error = error_text(exc)
        except Exception as exc:  # a bug: say what happened, keep the kernel and the walk alive
            self.error = error_text(exc) + "\n" + traceback.format_exc(limit=3)
        finally:
            self._cancel_asked = None
            self.busy = False
        return None

    def _start(self, work: Callable[[], Any]) -> None:
        """Run ``work`` on a background thread (one at a time) so the UI stays live."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self.locked:
            self.error = self.lock_words
            return
        self.busy = True  # at once, so a second click cannot start a second run
        self._thread = threading.Thread(
            target=self._guarded, args=(work,), daemon=True, name=f"accel-{self.css_name}"
        )
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a clicked action to finish; True when it did (whatever the outcome)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _new_cancel(self) -> CancelToken:
        self._cancel = CancelToken()
        return self._cancel

    def cancel(self) -> None:
        """Ask the running work to stop at its next progress event; say so at once.

        The work stops at its next safe point (a converter may take seconds to get there),
        so the step answers the click now ("cancelling...") and says when it has stopped.
        """
        if self._cancel is None or not self.busy:
            return
        self._cancel.cancel()
        if self._cancel_asked is None:
            self._cancel_asked = time.monotonic()
        self.status = "cancelling... (stopping at the next safe point)"

    def _cancelled_words(self) -> str:
        if self._cancel_asked is None:
            return "cancelled"
        return f"cancelled ({time.monotonic() - self._cancel_asked:.1f} s after the click)"


def image(css: str, fmt: str = "png", **layout: str) -> widgets.Image:
    """An Image widget hidden until it has a picture (an empty one shows a broken icon).

    ``align_self`` is ``flex-start`` so a box never stretches it to the cell's width.
    """
    layout.setdefault("align_self", "flex-start")
    picture = widgets.Image(format=fmt, layout=widgets.Layout(display="none", **layout))
    picture.add_class(f"accel-{css}")

    def show(change: Any) -> None:
        picture.layout.display = "" if change["new"] else "none"

    picture.observe(show, "value")
    return picture


def button(description: str, css: str, style: str = "", icon: str = "") -> widgets.Button:
    """A button with a stable CSS class (``accel-<css>``) for Voila and browser tests."""
    b = widgets.Button(description=description, button_style=style, icon=icon)
    b.add_class(f"accel-{css}")
    return b


def html_table(header: list[str], rows: list[list[Any]], css: str = "", row_css: str = "") -> str:
    """A small HTML table with escaped cells (widget HTML is not sanitised for us)."""
    head = "".join(
        f"<th style='text-align:left;padding:2px 8px'>{html.escape(h)}</th>" for h in header
    )
    body = "".join(
        f"<tr class='{row_css}'>"
        + "".join(f"<td style='padding:2px 8px'>{html.escape(str(c))}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
