"""Benchmark a deployed service from the client's side: latency distribution and throughput.

What the Score widget's "benchmark N requests" button and ``accel-widgets score --repeat``
show. The client's channel is reused, so the numbers are what an application that keeps its
client sees; the first (connecting) call is left out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from accel_widgets.engine.clients.grpc_client import client_from_service
from accel_widgets.engine.store.workspace import ServiceRecord
from accel_widgets.errors import AccelError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter


@dataclass(frozen=True)
class BenchmarkResult:
    """Latencies of the requests that were sent (ms), and what they add up to."""

    latencies_ms: list[float] = field(repr=False)
    seconds: float
    concurrency: int
    errors: int

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 99))

    @property
    def throughput(self) -> float:
        """Requests per second over the whole run."""
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.latencies_ms)} requests, {self.concurrency} at a time: p50 "
            f"{self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, {self.throughput:.1f} requests/s"
            + (f", {self.errors} errors" if self.errors else "")
        )


def benchmark_service(
    service: ServiceRecord,
    image: bytes,
    *,
    requests: int = 100,
    concurrency: int = 1,
    outputs: Sequence[str] | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> BenchmarkResult:
    """Send ``requests`` scoring calls with ``concurrency`` clients; time each one.

    ``outputs`` is the output filter each call sends: a detector's four detection outputs
    (1.1 kB a reply) rather than its 28 tensors (1.7 MB), so the benchmark times what a
    user's client asks for.

    Raises
    ------
    AccelError
        For fewer than 1 request or client; a scoring error on the warm-up call propagates
        (it says what is wrong with the service), later errors are counted.
    """
    if requests < 1 or concurrency < 1:
        raise AccelError("requests and concurrency must be at least 1")
    report = as_reporter(progress, cancel)
    clients = [client_from_service(service) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = [0]
    first_error: list[AccelError] = []  # what the first failure said, for the message
    lock = threading.Lock()
    remaining = [requests]
    try:
        for client in clients:
            # connect and warm up; errors here are real errors
            client.score_image(image, outputs=outputs)

        def worker(client) -> None:
            while True:
                with lock:
                    if remaining[0] <= 0 or (cancel is not None and cancel.cancelled):
                        return
                    remaining[0] -= 1
                started = time.perf_counter()
                try:
                    client.score_image(image, outputs=outputs)
                except AccelError as exc:
                    with lock:
                        errors[0] += 1
                        if not first_error:
                            first_error.append(exc)
                    continue
                with lock:
                    latencies.append((time.perf_counter() - started) * 1000.0)

        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            done = requests - remaining[0]
            report("benchmark", done / requests, f"{done}/{requests} requests")
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            client.close()
    report.check()
    if not latencies:
        # Say why in the service's words (gone, stopped, refused), not only how many failed.
        reason = f": {first_error[0]}" if first_error else ""
        raise AccelError(f"none of the {requests} requests was answered{reason}")
    result = BenchmarkResult(latencies, elapsed, concurrency, errors[0])
    report("benchmark", 1.0, result.summary())
    return result
