"""Request counts and latency histograms for ``/metrics``, kept by ``prometheus_client``.

Every protocol (TF Serving gRPC, Open Inference Protocol gRPC and REST, TF Serving REST)
reports here through :mod:`accel_widgets.serving.pipeline`, labelled by model, protocol
and status code, so one dashboard query compares them. Each server holds its own
``CollectorRegistry`` (not the process-global one), so two servers in one process (the
tests) never add up each other's requests.

Why the library and not the 80 lines of text formatting this module used to be: it is pure
Python with no dependencies, 0.5 MB installed and 40 ms to import (measured on the 2-core CI
machine, against a server start of seconds), and it writes the exposition format every
Prometheus version parses, escaping included, which a test checks with its own parser.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Latency buckets in seconds: batch-1 image models answer in 1 ms to a few seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: What ``/metrics`` answers with: the text format every Prometheus 2.x and 3.x scrapes (the
#: library's newest default, version 1.0.0, is refused by older scrapers; our names are plain
#: ASCII, so the body is the same in both).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Thread-safe request counters and latency histograms of one server."""

    def __init__(self) -> None:
        #: When the last scoring request ended (``time.monotonic``; the start before any):
        #: what ``--idle-timeout`` measures. Health checks and metadata calls do not count,
        #: so a sidebar that polls a service does not keep it alive.
        self.last_request = time.monotonic()
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "accel_widgets_requests",
            "Requests by model, protocol and status code.",
            ("model", "protocol", "code"),
            registry=self.registry,
        )
        self._errors = Counter(
            "accel_widgets_request_errors",
            "Failed requests by model and code.",
            ("model", "code"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "accel_widgets_request_duration_seconds",
            "Request latency in the server, by model, protocol and status code.",
            ("model", "protocol", "code"),
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._register_idle_gauge()

    def _register_idle_gauge(self) -> None:
        # Read at scrape time: what `accel-widgets room` shows as a service's idle time.
        idle = Gauge(
            "accel_widgets_idle_seconds",
            "Seconds since the last scoring request ended (or since the server started).",
            registry=self.registry,
        )
        idle.set_function(self.idle_seconds)

    def idle_seconds(self) -> float:
        """Seconds since the last scoring request ended (or since the server started)."""
        return time.monotonic() - self.last_request

    def observe(self, model: str, protocol: str, code: str, seconds: float) -> None:
        self.last_request = time.monotonic()
        self._requests.labels(model, protocol, code).inc()
        self._latency.labels(model, protocol, code).observe(seconds)
        if code != "OK":
            self._errors.labels(model, code).inc()

    def render(self) -> str:
        return generate_latest(self.registry).decode()
