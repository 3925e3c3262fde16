"""A workshop room on one machine: N participants walk the same steps at the same minute.

Each participant is its own Python process with its own workspace (as twenty kernels on one
JupyterHub would be) and runs, at once with the others: register the SqueezeNet sample ->
deploy it as a local service -> score the cat photo 20 times -> a 50-request benchmark ->
delete the service. Reported: the wall time of the whole room, the score latency p50/p99
over every participant's 20 calls, the peak RSS of all participants and servers together
(sampled every 0.25 s), the errors (goal 0), and how many such services this machine's
memory would hold beside what it holds now.

    PYTHONPATH=$PWD python bench/bench_workshop.py --participants 20 [--weights DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

PARTICIPANT = r"""
import json, sys, time, traceback
from pathlib import Path
from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.engine.models.register import register_onnx
from accel_widgets.engine.models.known_files import SAMPLE_PREPROCESSING
from accel_widgets.engine.targets import deploy, delete_service
from accel_widgets.engine.clients.grpc_client import client_from_service
from accel_widgets.engine.clients.benchmark import benchmark_service
from accel_widgets.engine.checks.samples import sample_photos

root, weights, go = sys.argv[1], sys.argv[2], float(sys.argv[3])
result = {"errors": [], "scores_ms": []}
while time.time() < go:  # everyone starts at the same moment
    time.sleep(0.01)
started = time.perf_counter()
try:
    ws = Workspace(root)
    register_onnx(Path(weights) / "SqueezeNet_fp16.onnx", "squeezenet",
                  preprocessing=SAMPLE_PREPROCESSING, workspace=ws)
    service = deploy("squeezenet", workspace=ws, ready_timeout=600)
    photo = sample_photos(["chelsea"])[0].data
    with client_from_service(service, timeout=60) as client:
        for _ in range(20):
            t = time.perf_counter()
            client.score_image(photo)
            result["scores_ms"].append((time.perf_counter() - t) * 1000)
    bench = benchmark_service(service, photo, requests=50)
    result["benchmark_p50_ms"] = bench.p50_ms
    delete_service("squeezenet", workspace=ws)
except Exception as exc:
    result["errors"].append(f"{type(exc).__name__}: {exc}")
    traceback.print_exc()
result["seconds"] = time.perf_counter() - started
print("RESULT " + json.dumps(result), flush=True)
"""


class PeakRss(threading.Thread):
    """Samples the RSS of the participants and every accel-widgets server, keeps the peak."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak_mb, self.peak_servers = pids, 0.0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.wait(0.25):
            total, servers = 0, 0
            for process in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmdline = " ".join(process.info["cmdline"] or [])
                memory = process.info["memory_info"]
                if memory is None:
                    continue
                if process.info["pid"] in self.pids:
                    total += memory.rss
                elif "accel_widgets.serving" in cmdline:
                    total += memory.rss
                    servers += 1
            if total / 2**20 > self.peak_mb:
                self.peak_mb, self.peak_servers = total / 2**20, servers


def main() -> None:
    import psutil
    from bench_runtimes import cpu_description

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=8)
    parser.add_argument("--weights", type=Path, default=ROOT.parent / "shared" / "weights")
    args = parser.parse_args()
    if not 1 <= args.participants <= 40:
        raise SystemExit("--participants: give 1 to 40")

    print(f"CPU: {cpu_description()}")
    print(f"memory available before: {psutil.virtual_memory().available / 2**30:.1f} GiB")
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        go = time.time() + 5 + 0.3 * args.participants  # after every interpreter is up
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", PARTICIPANT, f"{scratch}/p{i}", str(args.weights), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for i in range(args.participants)
        ]
        monitor = PeakRss([p.pid for p in processes])
        monitor.start()
        results = []
        for process in processes:
            out, err = process.communicate(timeout=1800)
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            if lines:
                results.append(json.loads(lines[-1].removeprefix("RESULT ")))
            else:
                results.append({"errors": [f"exit {process.returncode}: {err[-300:]}"]})
        wall = time.time() - go
        monitor.stop.set()
        monitor.join()

    scores = sorted(ms for r in results for ms in r.get("scores_ms", []))
    errors = [e for r in results for e in r["errors"]]
    ok = sum(1 for r in results if not r["errors"])
    p99 = scores[min(len(scores) - 1, int(0.99 * len(scores)))] if scores else float("nan")
    print(f"participants        {args.participants} ({ok} finished without an error)")
    print(f"wall time           {wall:.1f} s (slowest participant)")
    if scores:
        print(f"score latency       p50 {statistics.median(scores):.1f} ms, p99 {p99:.1f} ms")
    print(f"peak RSS, all       {monitor.peak_mb:.0f} MB ({monitor.peak_servers} servers up)")
    print(f"errors              {len(errors)}")
    for error in errors[:10]:
        print(f"  {error}")
    per_service = 150.0  # the served sample's goal and measured ceiling (MEASUREMENTS.md)
    room = psutil.virtual_memory().available / 2**20
    print(
        f"this machine holds  about {int(room // per_service)} more sample services "
        f"({room / 1024:.1f} GiB available / {per_service:.0f} MB each)"
    )


if __name__ == "__main__":
    main()
