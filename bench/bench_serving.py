"""Serving benchmark: what the gRPC service adds to ResNet-50, seen from the client.

Everything is measured side by side in one run on this machine (random weights, one JPEG,
batch 1), so the ratios hold even when the absolute numbers drift with the machine's load:

* **latency**: client-observed p50/p99 through the local gRPC service (``PredictionClient``,
  channel reused, the JPEG bytes sent as they are; the service deployed with ``--runtime``,
  ``auto`` by default, which races the runtimes at start-up) vs the same work in this
  process (``prepare`` + ``run``) with *each* runtime the server could pick (ONNX Runtime
  with the server's own session options, OpenVINO as ``openvino_runtime`` opens it), for
  FP32 and INT8, and vs TensorFlow in this process (the SavedModel's ``serving_default``:
  JPEG bytes in, the original contract). "Best in-process" is the faster runtime's p50.
  The server and this process share the same cores and a runtime's threads may spin after
  a run (docs/FINDINGS.md), so the candidates run in **blocks** (a shuffled order per round,
  ``--block`` calls per visit, the first not counted), once back to back (0 ms gaps) and
  once with ``--gap-ms`` (50) of idle before each call;
* **throughput** (requests/s, p50, p99) at 1, 4 and 16 concurrent clients (threads, each
  with its own ``PredictionClient``, loopback), for INT8 with batching off and on (a second
  service with ``batching={"max_batch_size": 8, ...}``), and FP32 with ``--throughput-fp32``;
* **start-up**: from the ``deploy()`` call to ready (``auto`` measures the runtimes then),
  wall clock measured here and the service's own ``ready_seconds``, for both precisions
  (``--deploys`` each, deleted between);
* **server memory**: RSS of the server process after warm-up and after the load test.

Every service it starts is deleted on the way out, Ctrl-C included.

Usage: ``python bench/bench_serving.py [--quick] [--runs 30] [--throughput-fp32]
[--runtime auto] [--out results.json]``. ``--workspace DIR`` keeps the built and converted
model in DIR for the next run; ``--quick`` checks the bench runs (few rounds, short loads).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "resnet50"
PRECISIONS = ("fp32", "int8")
PHOTO = "chelsea"  # 451x300 JPEG, quality 90

#: Targets from issue 11.
TARGET_SERVED_VS_INPROCESS = 1.10  # served INT8 p50 / best in-process INT8 p50, each gap
TARGET_INT8_VS_TF = 3.5  # in-process TF p50 / served INT8 p50, at least
TARGET_READY_S = 2.0  # deploy() call to ready with runtime auto, at most
TARGET_BATCHING_GAIN = 1.5  # 16-client throughput with batching / 1-client, at least
BATCHING = {"max_batch_size": 8, "max_queue_delay_us": 2000}

_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", flush=True)


class ProgressLines:
    """Engine progress events as plain lines: a new step, every 10 %, or every 2 s."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self._step: str | None = None
        self._fraction: float | None = None
        self._printed = 0.0

    def __call__(self, event: Any) -> None:
        now = time.monotonic()
        new_step = event.step != self._step
        if new_step:
            self._fraction = None
        moved = event.fraction is not None and (
            self._fraction is None
            or event.fraction - self._fraction >= 0.1
            or (event.fraction >= 1.0 > self._fraction)
        )
        if not (new_step or moved or now - self._printed >= self.every_s):
            return
        pct = "   ?" if event.fraction is None else f"{event.fraction * 100:3.0f}%"
        log(f"  {event.step:<9} {pct}  {event.message}")
        self._step, self._printed = event.step, now
        if event.fraction is not None:
            self._fraction = event.fraction


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def rss_mb(pid: int | None) -> float | None:
    import psutil

    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except (psutil.Error, ValueError, TypeError):
        return None


# -- model ---------------------------------------------------------------------------------


def prepare_models(workspace: Any) -> dict[str, Any]:
    """Build ResNet-50 (random weights) and convert it to FP32 + INT8, unless already there."""
    from accel_widgets.engine.conversion.convert import convert
    from accel_widgets.engine.models.build import build_model

    progress = ProgressLines()
    out: dict[str, Any] = {}
    model = workspace.find_model(MODEL)
    if model is None:
        started = time.monotonic()
        model = build_model(MODEL, weights="random", workspace=workspace, progress=progress)
        out["build_s"] = round(time.monotonic() - started, 1)
    else:
        log(f"  using {model.ref} already in the workspace")
    have = {a.precision for a in workspace.list_artifacts(model)}
    if not set(PRECISIONS) <= have:
        started = time.monotonic()
        convert(model.name, quantize="int8", workspace=workspace, progress=progress)
        out["convert_s"] = round(time.monotonic() - started, 1)
    for precision in PRECISIONS:
        artifact = workspace.get_artifact(MODEL, precision=precision)
        out[f"{precision}_onnx_mb"] = round(artifact.file.stat().st_size / 2**20, 1)
    return out


# -- services ------------------------------------------------------------------------------


class Services:
    """Deploys and deletes services, and remembers which are still up for the clean-up."""

    def __init__(self, workspace: Any, runtime: str = "auto") -> None:
        self.workspace = workspace
        self.runtime = runtime
        self.names: set[str] = set()

    def deploy(self, precision: str, name: str, **settings: Any) -> tuple[Any, float]:
        """The service record and the wall-clock seconds of the ``deploy()`` call."""
        from accel_widgets.engine.targets import deploy

        self.names.add(name)
        started = time.perf_counter()
        service = deploy(
            MODEL,
            precision=precision,
            name=name,
            workspace=self.workspace,
            runtime=self.runtime,
            **settings,
        )
        return service, time.perf_counter() - started

    def delete(self, name: str) -> float:
        from accel_widgets.engine.targets import delete_service

        started = time.perf_counter()
        try:
            delete_service(name, workspace=self.workspace)
        finally:
            self.names.discard(name)
        return time.perf_counter() - started

    def delete_all(self) -> None:
        for name in sorted(self.names):
            try:
                self.delete(name)
                log(f"  deleted service {name}")
            except Exception as exc:  # keep deleting the others
                log(f"  could not delete service {name}: {exc}")


def ready_times(services: Services, deploys: int) -> dict[str, Any]:
    """Deploy each precision ``deploys`` times (alternating, deleted between)."""
    rows: dict[str, list[dict[str, Any]]] = {p: [] for p in PRECISIONS}
    for attempt in range(1, deploys + 1):
        for precision in PRECISIONS:
            name = f"bench-ready-{precision}"
            service, wall = services.deploy(precision, name)
            ready = service.info.get("ready_seconds")
            chosen = service.info.get("runtimes", {}).get(MODEL, {})
            rss = rss_mb(service.pid)
            deleted = services.delete(name)
            rows[precision].append(
                {
                    "wall_s": round(wall, 3),
                    "ready_seconds": ready,
                    "rss_mb_at_ready": rss,
                    "delete_s": round(deleted, 3),
                    "runtime": chosen.get("runtime"),
                    "measured_ms": chosen.get("measured_ms"),
                }
            )
            log(
                f"  {precision} deploy {attempt}/{deploys}: {wall:.2f} s wall, "
                f"ready_seconds {ready}, RSS {rss} MB; delete {deleted:.2f} s; "
                f"serves with {chosen.get('runtime')} {chosen.get('measured_ms') or ''}"
            )
            time.sleep(0.5)
    out: dict[str, Any] = {}
    for precision, found in rows.items():
        walls = [r["wall_s"] for r in found]
        readies = [r["ready_seconds"] for r in found if r["ready_seconds"] is not None]
        out[precision] = {
            "deploys": found,
            "wall_median_s": round(statistics.median(walls), 3),
            "wall_max_s": round(max(walls), 3),
            "ready_seconds_median": round(statistics.median(readies), 3) if readies else None,
            "ready_seconds_max": max(readies) if readies else None,
        }
    return out


def server_time(service: Any) -> tuple[float, int] | None:
    """(sum of seconds, count) of the server's own request-duration histogram (/metrics).

    The server times each Predict from the handler's first line to the serialized response,
    so client time minus server time is gRPC transport plus the client's own work.
    """
    import urllib.request

    port = service.info.get("rest_port")
    if not port:
        return None
    try:
        with urllib.request.urlopen(f"http://{service.address}:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total, count = 0.0, 0
    for line in text.splitlines():
        if line.startswith("accel_widgets_request_duration_seconds_sum{"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("accel_widgets_request_duration_seconds_count{"):
            count += int(float(line.rsplit(" ", 1)[1]))
    return total, count


# -- latency -------------------------------------------------------------------------------


def interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    runs: int,
    warmup: int,
    gap_s: float,
    seed: int = 0,
    after_warmup: Callable[[], object] | None = None,
    block: int = 1,
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Warm each candidate up, then time them in shuffled blocks (``in_blocks``, shared by
    the benches), logging running p50s; the percentiles and the raw samples (ms)."""
    from bench_runtimes import in_blocks, timed

    from accel_widgets.engine.clients.timing import percentiles

    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    if after_warmup is not None:
        after_warmup()

    def progress(index: int, samples: dict[str, list[float]]) -> None:
        if (index + 1) % max(1, runs // 4) == 0 or index + 1 == runs:
            p50 = {k: round(float(np.median(v)), 1) for k, v in samples.items()}
            log(f"  round {index + 1}/{runs}: running p50 ms {p50}")

    samples = in_blocks(
        {name: timed(fn) for name, fn in candidates.items()},
        rounds=runs,
        block=block,
        gap_s=gap_s,
        seed=seed,
        after_round=progress,
    )
    return {name: percentiles(values) for name, values in samples.items()}, samples


def inprocess_runtimes(config: Any, model: Any) -> dict[str, Any]:
    """Every runtime the server could pick, opened as the server opens it (same options)."""
    from accel_widgets.serving import runtime_choice

    sessions = {}
    for name in ("onnxruntime", "openvino"):
        try:
            candidates, _ = runtime_choice.open_candidates(
                model, asked=name, device="cpu", threads=config.threads, spinning=config.spinning
            )
        except Exception as exc:  # OpenVINO missing, or unable to read this model
            log(f"  in-process {name}: not available ({exc})")
            continue
        sessions[name] = candidates[0].session
    return sessions


def latency(
    services: Mapping[str, Any],
    jpeg: bytes,
    saved_model: Path,
    *,
    runs: int,
    warmup: int,
    gaps_s: tuple[float, ...],
    block: int,
) -> dict[str, Any]:
    """Served vs in-process (each runtime) vs in-process TF, in blocks, at each idle gap."""
    import tensorflow as tf

    from accel_widgets.engine.clients.grpc_client import client_from_service
    from accel_widgets.preprocess import prepare
    from accel_widgets.serving.config import ServerConfig
    from accel_widgets.serving.runtime import session_options

    candidates: dict[str, Callable[[], object]] = {}
    setup: dict[str, Any] = {}
    clients = []
    outputs: dict[str, np.ndarray] = {}
    try:
        for precision, service in services.items():
            # The server's own config: same file, preprocessing, threads and spinning.
            config = ServerConfig.load(service.info["config"])
            model = config.models[0]
            options = session_options(config.threads, config.spinning)
            output_names = [o.onnx_output for o in model.outputs] or None
            client = client_from_service(service)
            clients.append(client)

            def served(c: Any = client) -> np.ndarray:
                return c.score_image(jpeg, outputs="output_alias")

            candidates[f"served_{precision}"] = served
            outputs[f"served_{precision}"] = np.asarray(served(), np.float32).reshape(-1)
            for runtime_name, session in inprocess_runtimes(config, model).items():

                def in_process(
                    s: Any = session,
                    pre: Any = model.preprocessing,
                    name: str = session.get_inputs()[0].name,
                    wanted: Any = output_names,
                    limit: int = config.max_pixels,
                ) -> np.ndarray:
                    return s.run(wanted, {name: prepare(jpeg, pre, max_pixels=limit)})[0]

                key = f"inprocess_{precision}_{runtime_name}"
                candidates[key] = in_process
                outputs[key] = np.asarray(in_process(), np.float32).reshape(-1)
            setup[precision] = {
                "onnx": str(model.onnx),
                "served_by": service.info.get("runtimes", {}).get(MODEL),
                "intra_op_threads": options.intra_op_num_threads,
                "spinning": options.get_session_config_entry("session.intra_op.allow_spinning"),
                "preprocessing": model.preprocessing.to_dict(),
            }
        loaded = tf.saved_model.load(str(saved_model))
        serving_default = loaded.signatures["serving_default"]
        images = tf.constant([jpeg])

        def tensorflow() -> np.ndarray:
            return serving_default(images=images)["output_alias"].numpy()

        candidates["tensorflow_savedmodel"] = tensorflow
        outputs["tensorflow_savedmodel"] = tensorflow().reshape(-1)
        by_gap: dict[str, Any] = {}
        for gap_s in gaps_s:
            log(
                f"  {len(candidates)} candidates, {runs} rounds of blocks of {block}, "
                f"{gap_s * 1000:.0f} ms idle gaps"
            )
            before: dict[str, tuple[float, int] | None] = {}

            def snapshot(into: dict[str, Any] = before) -> None:
                into.update({p: server_time(service) for p, service in services.items()})

            timings, samples = interleaved(
                candidates,
                runs=runs,
                warmup=warmup,
                gap_s=gap_s,
                after_warmup=snapshot,
                block=block,
            )
            after = {p: server_time(service) for p, service in services.items()}
            by_gap[f"{gap_s * 1000:g}"] = per_precision(
                services, timings, samples, outputs, before, after
            )
            by_gap[f"{gap_s * 1000:g}"]["timings"] = timings
    finally:
        for client in clients:
            client.close()
    return {"setup": setup, "by_gap_ms": by_gap}


def per_precision(
    services: Mapping[str, Any],
    timings: dict[str, dict[str, float]],
    samples: dict[str, list[float]],
    outputs: dict[str, np.ndarray],
    before: dict[str, Any],
    after: dict[str, Any],
) -> dict[str, Any]:
    """Served vs the best in-process runtime, the server's own handler time, TF's ratio."""
    result: dict[str, Any] = {}
    tf_p50 = timings["tensorflow_savedmodel"]["p50_ms"]
    for precision in services:
        inprocess = {
            k.rsplit("_", 1)[1]: timings[k]
            for k in timings
            if k.startswith(f"inprocess_{precision}_")
        }
        best = min(inprocess, key=lambda k: inprocess[k]["p50_ms"])
        best_key = f"inprocess_{precision}_{best}"
        served = timings[f"served_{precision}"]["p50_ms"]
        local = inprocess[best]["p50_ms"]
        paired = [
            a / b for a, b in zip(samples[f"served_{precision}"], samples[best_key], strict=True)
        ]
        server_mean = None
        start, end = before.get(precision), after.get(precision)
        if start and end and end[1] > start[1]:
            server_mean = round((end[0] - start[0]) / (end[1] - start[1]) * 1000.0, 3)
        client_mean = timings[f"served_{precision}"]["mean_ms"]
        local_mean = inprocess[best]["mean_ms"]
        result[precision] = {
            "served_runtime": (services[precision].info.get("runtimes", {}).get(MODEL) or {}).get(
                "runtime"
            ),
            "inprocess_p50_ms_by_runtime": {k: v["p50_ms"] for k, v in inprocess.items()},
            "best_inprocess_runtime": best,
            "served_mean_ms": client_mean,
            "server_handler_mean_ms": server_mean,
            "inprocess_mean_ms": local_mean,
            "handler_minus_inprocess_mean_ms": (
                None if server_mean is None else round(server_mean - local_mean, 3)
            ),
            "client_minus_handler_mean_ms": (
                None if server_mean is None else round(client_mean - server_mean, 3)
            ),
            "served_p50_ms": served,
            "served_p99_ms": timings[f"served_{precision}"]["p99_ms"],
            "inprocess_p50_ms": local,
            "inprocess_p99_ms": inprocess[best]["p99_ms"],
            "served_over_inprocess": round(served / local, 3),
            "median_paired_ratio": round(statistics.median(paired), 3),
            "overhead_ms": round(served - local, 3),
            "tf_p50_over_served_p50": round(tf_p50 / served, 2),
            "max_abs_diff_served_vs_inprocess": float(
                np.max(np.abs(outputs[f"served_{precision}"] - outputs[best_key]))
            ),
            "max_abs_diff_served_vs_tf": float(
                np.max(np.abs(outputs[f"served_{precision}"] - outputs["tensorflow_savedmodel"]))
            ),
        }
    return result


# -- throughput ----------------------------------------------------------------------------


def load_level(service: Any, jpeg: bytes, concurrency: int, duration_s: float) -> dict[str, Any]:
    """``concurrency`` threads, each with its own client, scoring for ``duration_s``."""
    from accel_widgets.engine.clients.grpc_client import client_from_service
    from accel_widgets.errors import ScoringError

    clients = [client_from_service(service, timeout=30.0) for _ in range(concurrency)]
    stop = threading.Event()
    gate = threading.Barrier(concurrency + 1)
    done: list[list[tuple[float, float]]] = [[] for _ in clients]  # (start, end) per call
    errors: list[list[str]] = [[] for _ in clients]

    def worker(index: int) -> None:
        client = clients[index]
        try:
            client.score_image(jpeg)  # connect and warm up, untimed
        except ScoringError as exc:
            errors[index].append(exc.code or str(exc))
        try:
            gate.wait(timeout=120)
        except threading.BrokenBarrierError:
            return
        while not stop.is_set():
            start = time.perf_counter()
            try:
                client.score_image(jpeg)
            except ScoringError as exc:
                errors[index].append(exc.code or str(exc))
                continue
            done[index].append((start, time.perf_counter()))

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"bench-client-{i}", daemon=True)
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    try:
        gate.wait(timeout=120)
        t0 = time.perf_counter()
        deadline = t0 + duration_s
        while (left := deadline - time.perf_counter()) > 0:
            time.sleep(min(0.2, left))
    finally:
        stop.set()
        gate.abort()
        for thread in threads:
            thread.join(timeout=35)
        for client in clients:
            client.close()
    calls = [(s, e) for rows in done for s, e in rows if e <= deadline]
    latencies = [(e - s) * 1000.0 for s, e in calls if s >= t0]
    all_errors = [e for rows in errors for e in rows]
    row = {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "completed": len(calls),
        "requests_per_s": round(len(calls) / duration_s, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 2) if latencies else None,
        "errors": len(all_errors),
    }
    if all_errors:
        row["error_codes"] = sorted(set(all_errors))
    return row


def throughput(service: Any, jpeg: bytes, levels: list[int], duration_s: float) -> list[dict]:
    rows = []
    for concurrency in levels:
        time.sleep(1.0)  # let the previous level's threads settle
        row = load_level(service, jpeg, concurrency, duration_s)
        log(
            f"  c={concurrency:<3} {row['requests_per_s']:7.1f} req/s  p50 {row['p50_ms']} ms  "
            f"p99 {row['p99_ms']} ms  errors {row['errors']}"
        )
        rows.append(row)
    return rows


# -- summary -------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def summarize(results: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    by_gap = results["latency"]["by_gap_ms"]
    ready = results["ready"]
    memory = results["memory_mb"]
    gaps = list(by_gap)
    worst_ready = max(ready[p]["wall_max_s"] for p in PRECISIONS)
    checks: dict[str, Any] = {}
    for gap in gaps:
        ratio = by_gap[gap]["int8"]["served_over_inprocess"]
        checks[f"served_vs_best_inprocess_int8_gap_{gap}ms"] = {
            "value": ratio,
            "target": f"<= {TARGET_SERVED_VS_INPROCESS}",
            "pass": ratio <= TARGET_SERVED_VS_INPROCESS,
        }
    speedup = by_gap[gaps[-1]]["int8"]["tf_p50_over_served_p50"]
    checks["int8_speedup_vs_tf"] = {
        "value": speedup,
        "target": f">= {TARGET_INT8_VS_TF}",
        "pass": speedup >= TARGET_INT8_VS_TF,
    }
    checks["ready_s_worst"] = {
        "value": worst_ready,
        "target": f"<= {TARGET_READY_S}",
        "pass": worst_ready <= TARGET_READY_S,
    }
    batched = results["throughput"].get("int8 batching")
    if batched:
        # Against the 1-client throughput without batching: what a user had before.
        plain = results["throughput"]["int8"]
        one = min(plain, key=lambda r: r["concurrency"])
        most = max(batched, key=lambda r: r["concurrency"])
        gain = round(most["requests_per_s"] / one["requests_per_s"], 2)
        checks["batching_gain"] = {
            "value": gain,
            "target": f">= {TARGET_BATCHING_GAIN} ({most['concurrency']} clients batched vs "
            f"{one['concurrency']} without)",
            "pass": gain >= TARGET_BATCHING_GAIN,
        }
    cpu = results["machine"]["cpu"]
    lines = [
        "",
        "SUMMARY",
        f"CPU: {cpu['model']} ({cpu['cpus']} CPUs; flags: {' '.join(cpu['flags']) or '-'})",
        f"ResNet-50, random weights, batch 1, {PHOTO} JPEG ({results['jpeg_bytes']:,} bytes); "
        f"runtime asked: {results['args']['runtime']}; load average before/after "
        f"{results['load_before']} / {results['load_after']}",
    ]
    for gap in gaps:
        lat = by_gap[gap]
        timings = lat["timings"]
        lines += [
            "",
            f"{'latency, ms, ' + gap + ' ms idle gaps':<38} {'fp32':>18} {'int8':>18}",
        ]

        def row(label: str, fmt: Callable[[dict[str, Any]], str], lat: Any = lat) -> str:
            return f"{label:<38} {fmt(lat['fp32']):>18} {fmt(lat['int8']):>18}"

        lines += [
            row("served by", lambda r: str(r["served_runtime"])),
            row(
                "served p50 / p99 (gRPC, client)",
                lambda r: f"{r['served_p50_ms']:.1f} / {r['served_p99_ms']:.1f}",
            ),
            row(
                "in-process p50: onnxruntime",
                lambda r: (
                    f"{r['inprocess_p50_ms_by_runtime'].get('onnxruntime', float('nan')):.1f}"
                ),
            ),
            row(
                "in-process p50: openvino",
                lambda r: f"{r['inprocess_p50_ms_by_runtime'].get('openvino', float('nan')):.1f}",
            ),
            row("best in-process", lambda r: r["best_inprocess_runtime"]),
            row("served / best in-process (p50s)", lambda r: f"{r['served_over_inprocess']:.3f}"),
            row("  median of paired ratios", lambda r: f"{r['median_paired_ratio']:.3f}"),
            row("  overhead p50 - p50", lambda r: f"{r['overhead_ms']:+.2f} ms"),
            row(
                "  handler - in-process (means)",
                lambda r: f"{r['handler_minus_inprocess_mean_ms'] or 0:+.2f} ms",
            ),
            row(
                "  client - handler (gRPC+client)",
                lambda r: f"{r['client_minus_handler_mean_ms'] or 0:+.2f} ms",
            ),
            row("TF SavedModel p50 / served p50", lambda r: f"{r['tf_p50_over_served_p50']:.2f}x"),
            row(
                "max |served - in-process|",
                lambda r: f"{r['max_abs_diff_served_vs_inprocess']:.1e}",
            ),
            f"{'in-process TF SavedModel p50 / p99':<38} "
            f"{timings['tensorflow_savedmodel']['p50_ms']:.1f} / "
            f"{timings['tensorflow_savedmodel']['p99_ms']:.1f} (JPEG in, serving_default)",
        ]
    lines += [
        "",
        f"{'throughput (loopback)':<22} {'clients':>7} {'req/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6}",
    ]
    for label, rows in results["throughput"].items():
        for r in rows:
            lines.append(
                f"{label:<22} {r['concurrency']:>7} {r['requests_per_s']:>8.1f} "
                f"{r['p50_ms'] or float('nan'):>8.1f} {r['p99_ms'] or float('nan'):>8.1f} "
                f"{r['errors']:>6}"
            )
    lines += [
        "",
        f"{'deploy() -> ready, s':<22} {'wall median':>11} {'wall max':>9} {'ready_seconds':>14}"
        "  runtime (auto's figures, ms)",
    ]
    for precision in PRECISIONS:
        r = ready[precision]
        own = ", ".join(str(d["ready_seconds"]) for d in r["deploys"])
        chosen = r["deploys"][-1]
        lines.append(
            f"{precision:<22} {r['wall_median_s']:>11.2f} {r['wall_max_s']:>9.2f} {own:>14}"
            f"  {chosen.get('runtime')} {chosen.get('measured_ms') or ''}"
        )
    lines += [
        "",
        f"{'server RSS, MB':<22} {'after warm-up':>13} {'after latency':>13} "
        f"{'after load test':>15}",
    ]
    for precision in PRECISIONS:
        m = memory.get(precision, {})
        loaded = m.get("after_load")
        lines.append(
            f"{precision:<22} {m.get('after_warmup')!s:>13} {m.get('after_latency')!s:>13} "
            f"{'-' if loaded is None else loaded:>15}"
        )
    lines += ["", "targets:"]
    for name, check in checks.items():
        lines.append(
            f"  {name}: {check['value']} (target {check['target']})  {verdict(check['pass'])}"
        )
    lines.append(f"runtime {results['runtime_s']:.0f} s")
    return lines, checks


# -- main ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, workspace: Any, results: dict[str, Any]) -> None:
    from accel_widgets.engine.checks.samples import sample_photos

    services = Services(workspace, args.runtime)
    try:
        log("== build + convert ResNet-50 (random weights) into the workspace")
        results["model"] = prepare_models(workspace)
        jpeg = sample_photos([PHOTO])[0].data
        results["jpeg_bytes"] = len(jpeg)

        log(f"== deploy() -> ready, {args.deploys} deploys per precision")
        results["ready"] = ready_times(services, args.deploys)

        log("== deploying the services under test")
        deployed: dict[str, Any] = {}
        memory: dict[str, dict[str, Any]] = {}
        from accel_widgets.engine.clients.grpc_client import client_from_service

        for precision in PRECISIONS:
            service, wall = services.deploy(precision, f"bench-{precision}")
            deployed[precision] = service
            with client_from_service(service) as client:
                for _ in range(5):
                    client.score_image(jpeg)
            memory[precision] = {"pid": service.pid, "after_warmup": rss_mb(service.pid)}
            log(
                f"  {precision} on {service.address}:{service.port} (pid {service.pid}) "
                f"ready in {wall:.2f} s; RSS after warm-up {memory[precision]['after_warmup']} MB"
            )
        results["memory_mb"] = memory

        results["load_before"] = load_average()
        log(f"== batch-1 latency, interleaved (load average {results['load_before']})")
        saved_model = workspace.get_model(MODEL).path / "saved_model"
        results["latency"] = latency(
            deployed,
            jpeg,
            saved_model,
            runs=args.runs,
            warmup=args.warmup,
            gaps_s=(0.0, args.gap_ms / 1e3),
            block=args.block,
        )
        for gap, per in results["latency"]["by_gap_ms"].items():
            for precision in PRECISIONS:
                r = per[precision]
                log(
                    f"  gap {gap} ms, {precision}: served ({r['served_runtime']}) "
                    f"{r['served_p50_ms']} ms, best in-process ({r['best_inprocess_runtime']}) "
                    f"{r['inprocess_p50_ms']} ms, ratio {r['served_over_inprocess']}, "
                    f"TF/served {r['tf_p50_over_served_p50']}x"
                )
        for precision in PRECISIONS:
            memory[precision]["after_latency"] = rss_mb(deployed[precision].pid)
        gc.collect()  # drop the in-process sessions before the load test

        results["throughput"] = {}
        levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
        for precision in ("int8", "fp32") if args.throughput_fp32 else ("int8",):
            log(f"== throughput {precision}: {levels} clients, {args.duration:g} s each")
            results["throughput"][precision] = throughput(
                deployed[precision], jpeg, levels, args.duration
            )
            memory[precision]["after_load"] = rss_mb(deployed[precision].pid)
        # Batching on: a second INT8 service (the first one stays idle meanwhile).
        batched, wall = services.deploy("int8", "bench-int8-batching", batching=BATCHING)
        log(f"== throughput int8 with batching {BATCHING} (ready in {wall:.2f} s)")
        results["throughput"]["int8 batching"] = throughput(batched, jpeg, levels, args.duration)
        services.delete("bench-int8-batching")
        for precision in PRECISIONS:
            memory[precision].setdefault("after_load", None)  # None: no load test
        results["load_after"] = load_average()
    finally:
        # A second Ctrl-C must not leave servers behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if services.names:
                log("== deleting the services")
            services.delete_all()
        finally:
            signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="rounds of blocks per idle gap")
    parser.add_argument("--block", type=int, default=4, help="calls per visit (first dropped)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per candidate")
    parser.add_argument(
        "--gap-ms", type=float, default=50.0, help="idle gap before each call (and 0)"
    )
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=("auto", "onnxruntime", "openvino"),
        help="the services' runtime (auto races them at start-up)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run that checks the bench works"
    )
    parser.add_argument("--concurrency", default="1,4,16", help="client counts for throughput")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per client count")
    parser.add_argument(
        "--throughput-fp32", action="store_true", help="also load-test the FP32 service"
    )
    parser.add_argument("--deploys", type=int, default=3, help="deploys per precision")
    parser.add_argument(
        "--workspace", type=Path, help="reuse/keep the model here instead of a temp folder"
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.block, args.warmup = min(args.runs, 3), min(args.block, 3), 2
        args.duration, args.deploys = min(args.duration, 2.0), 1

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench_runtimes import cpu_description

    from accel_widgets.engine.store.workspace import Workspace

    results: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "cpu": cpu_description(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "deploys": args.deploys,
    }
    try:
        with contextlib.ExitStack() as stack:
            if args.workspace:
                folder = args.workspace
            else:
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="accel-serving-"))
            run(args, Workspace(folder), results)
    except KeyboardInterrupt:
        log("interrupted; services deleted")
        return 130
    results["runtime_s"] = round(time.monotonic() - _STARTED, 1)
    lines, checks = summarize(results)
    results["targets"] = checks
    print("\n".join(lines), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
        print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
