"""Prometheus counters and a latency histogram, in the text format, without a dependency.

``/metrics`` on the REST port serves :meth:`Metrics.render`. Names follow Prometheus
conventions (``_total`` counters, ``_seconds`` histogram with cumulative ``le`` buckets).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

#: Latency buckets in seconds: batch-1 image models answer in 1 ms to a few seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe request counters (by model, protocol, code) and latency (by model)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = {}
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)

    def observe(self, model: str, protocol: str, code: str, seconds: float) -> None:
        with self._lock:
            self._requests[(model, protocol, code)] += 1
            counts = self._buckets.setdefault(model, [0] * (len(BUCKETS) + 1))
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._sum[model] += seconds
            self._count[model] += 1

    def render(self) -> str:
        with self._lock:
            requests = dict(self._requests)
            buckets = {m: list(c) for m, c in self._buckets.items()}
            sums, counts = dict(self._sum), dict(self._count)
        lines = [
            "# HELP accel_widgets_requests_total Requests by model, protocol and status code.",
            "# TYPE accel_widgets_requests_total counter",
        ]
        for (model, protocol, code), n in sorted(requests.items()):
            lines.append(
                f'accel_widgets_requests_total{{model="{_escape(model)}",'
                f'protocol="{protocol}",code="{code}"}} {n}'
            )
        errors: dict[tuple[str, str], int] = defaultdict(int)
        for (model, _, code), n in requests.items():
            if code != "OK":
                errors[(model, code)] += n
        lines += [
            "# HELP accel_widgets_request_errors_total Failed requests by model and code.",
            "# TYPE accel_widgets_request_errors_total counter",
        ]
        for (model, code), n in sorted(errors.items()):
            lines.append(
                f'accel_widgets_request_errors_total{{model="{_escape(model)}",code="{code}"}} {n}'
            )
        lines += [
            "# HELP accel_widgets_request_duration_seconds Request latency in the server.",
            "# TYPE accel_widgets_request_duration_seconds histogram",
        ]
        for model in sorted(buckets):
            label = _escape(model)
            cumulative = 0
            for bound, n in zip((*BUCKETS, float("inf")), buckets[model], strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(
                    f'accel_widgets_request_duration_seconds_bucket{{model="{label}",le="{le}"}} '
                    f"{cumulative}"
                )
            lines.append(
                f'accel_widgets_request_duration_seconds_sum{{model="{label}"}} {sums[model]:.6f}'
            )
            lines.append(
                f'accel_widgets_request_duration_seconds_count{{model="{label}"}} {counts[model]}'
            )
        return "\n".join(lines) + "\n"
