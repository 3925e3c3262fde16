"""What the engine's HTTP clients share: the REST scoring client (urllib) and the Azure
client (``engine/targets/azure/arm.py``, azure-core's pipeline).

Redirects refused for urllib (it would forward a key wherever they point), the one loopback
rule (plain http carries a secret to this machine only), a Retry-After parser for urllib's
answers, and a wait that a Cancel button can end (the Azure client's 429 and operation waits).
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from accel_widgets.progress import Reporter
from accel_widgets.serving.addresses import is_loopback

__all__ = ["NoRedirect", "is_loopback", "retry_after", "sleep"]


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
