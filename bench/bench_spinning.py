"""ONNX Runtime spinning on vs off in the server, side by side in one run.

ResNet-50 INT8 (random weights) with a JPEG at batch 1: two servers that differ only in the
config's ``spinning``, and the same session settings in this process; the four candidates
are called in a shuffled order each round with an idle gap before each call (requests that
arrive now and then, as a demo or a light service sees them). Then throughput from 1, 4 and
16 client threads against each server. The decision and the figures are in
``accel_widgets/serving/runtime.py``.

Usage: ``python bench/bench_spinning.py [--workspace DIR] [--rounds 80] [--gap-ms 30]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def start_server(config, folder: Path) -> tuple[subprocess.Popen, int]:
    config.write(folder / "config.json")
    ready = folder / "ready.json"
    command = [sys.executable, "-m", "accel_widgets.serving", "--config", "config.json"]
    command += ["--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready), "--no-rest"]
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server in {folder} did not start")
        time.sleep(0.05)
    return process, int(json.loads(ready.read_text())["port"])


def load(client_factory, jpeg: bytes, clients: int, seconds: float) -> tuple[float, float]:
    """Requests per second and p50 ms with ``clients`` threads for ``seconds``."""
    pool = [client_factory() for _ in range(clients)]
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work(client) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            client.score_image(jpeg)
            with lock:
                latencies.append((time.perf_counter() - started) * 1e3)

    threads = [threading.Thread(target=work, args=(c,)) for c in pool]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for client in pool:
        client.close()
    return len(latencies) / elapsed, statistics.median(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="reuse/keep the model here")
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--gap-ms", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=6.0, help="per load level")
    args = parser.parse_args()

    from accel_widgets.engine.checks.samples import sample_photos
    from accel_widgets.engine.clients.grpc_client import PredictionClient
    from accel_widgets.engine.packaging.service_config import server_config_for
    from accel_widgets.engine.store.workspace import Workspace
    from accel_widgets.engine.walk.prepare import prepare_model
    from accel_widgets.preprocess import prepare
    from accel_widgets.serving.runtime import create_session

    workspace = Workspace(args.workspace or Path(tempfile.mkdtemp()) / "workspace")
    model, _, _ = prepare_model("resnet50", weights="random", quantize="int8", workspace=workspace)
    artifact = workspace.get_artifact(model.name, model.version, "int8")
    base = server_config_for(workspace, artifact, "bench-spinning")
    spec = base.models[0]
    jpeg = sample_photos(["chelsea"])[0].data
    servers = {}
    try:
        for spinning in (False, True):
            folder = Path(tempfile.mkdtemp(prefix=f"spinning-{int(spinning)}-"))
            servers[spinning] = start_server(dataclasses.replace(base, spinning=spinning), folder)
        candidates = {}
        for spinning, (_, port) in servers.items():
            client = PredictionClient("127.0.0.1", port)
            session = create_session(spec.onnx, "int8", None, spinning)
            name = session.get_inputs()[0].name
            candidates[f"served     spinning={spinning!s:5}"] = lambda c=client: c.score_image(jpeg)
            candidates[f"in-process spinning={spinning!s:5}"] = lambda s=session, n=name: s.run(
                None, {n: prepare(jpeg, spec.preprocessing)}
            )
        for call in candidates.values():
            for _ in range(5):
                call()
        timings: dict[str, list[float]] = {key: [] for key in candidates}
        for _ in range(args.rounds):
            order = list(candidates)
            random.shuffle(order)
            for key in order:
                time.sleep(args.gap_ms / 1e3)
                started = time.perf_counter()
                candidates[key]()
                timings[key].append((time.perf_counter() - started) * 1e3)
        p50 = {key: statistics.median(values) for key, values in timings.items()}
        print(f"batch-1 p50, {args.gap_ms:g} ms idle before each call, {args.rounds} rounds:")
        for key, value in p50.items():
            print(f"  {key}  {value:6.1f} ms")
        for spinning in (False, True):
            served = p50[f"served     spinning={spinning!s:5}"]
            local = p50[f"in-process spinning={spinning!s:5}"]
            print(f"  spinning={spinning!s:5}: served / in-process {served / local:.3f}")
        print(f"throughput, {args.seconds:g} s per level:")
        for clients in (1, 4, 16):
            for spinning, (_, port) in servers.items():
                rps, median = load(
                    lambda p=port: PredictionClient("127.0.0.1", p), jpeg, clients, args.seconds
                )
                print(
                    f"  {clients:2d} clients spinning={spinning!s:5}: {rps:5.1f} req/s, "
                    f"p50 {median:6.1f} ms"
                )
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
