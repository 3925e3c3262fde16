"""What every HTTP call of the engine shares: the Azure quota check, the Azure ML target's
ARM client and the REST scoring client.

Redirects refused (urllib would forward a key or a bearer token wherever they point), the
one loopback rule (plain http carries a secret to this machine only), the one Retry-After
parser, and a wait that a Cancel button can end.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from accel_widgets.progress import Reporter
from accel_widgets.serving.addresses import is_loopback

__all__ = ["NoRedirect", "is_loopback", "retry_after", "sleep", "throttle_wait"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would forward the bearer token to wherever they point."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        return None


def retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (the delta-seconds form Azure sends), else None."""
    if headers is None:
        return None
    raw = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def sleep(seconds: float, report: Reporter) -> None:
    """Wait, but let a Cancel button end the wait within a tenth of a second."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        report.check()
        time.sleep(min(0.1, left))
    report.check()


def throttle_wait(
    headers: Any, *, throttled: int, max_retries: int, default_s: float, max_s: float
) -> tuple[float, bool]:
    """How long a 429 asks to wait (its Retry-After, else ``default_s``) and whether to wait
    it: not once ``throttled`` answers in a row exceed ``max_retries``, and not when the wait
    is longer than ``max_s`` (it is handed back to the user instead of blocking)."""
    given = retry_after(headers)
    wait = default_s if given is None else given
    return wait, throttled <= max_retries and wait <= max_s
