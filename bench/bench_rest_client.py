"""REST client benchmark: our urllib client against the same calls on azure-core's pipeline.

Issue 23 asked for one retry helper for the HTTP clients. The Azure clients (quota, Azure ML)
run on azure-core's pipeline, whose RetryPolicy honours Retry-After; this bench decides
whether the REST *scoring* client (``engine/clients/rest_client.py``, a loop of its own over
``urllib``) should move onto the same pipeline too. Scoring is the latency path, so the
question is what each call costs the user, measured side by side in one run:

* ``ours``: :class:`~accel_widgets.engine.clients.rest_client.RestPredictionClient`
  ``score_image`` (urllib, one connection per call, its own retry loop);
* ``azure_core``: the same POST (TF Serving's ``:predict`` body, the JPEG in base64 JSON)
  through ``azure.core.PipelineClient`` with a ``RetryPolicy`` (429/503, Retry-After) and
  the requests transport (a pooled keep-alive connection), answers parsed the same way;
* ``azure_core_new``: the same pipeline, a new client per call (what a one-shot
  ``accel-widgets score --rest`` pays).

One server process serves the real SqueezeNet 1.1 from the shared weights; every candidate's
scores are checked to agree before timing. Candidates run in blocks in a shuffled order per
round (bench_protocols.measure). Also printed: each client's import time in a fresh
interpreter, and with azure-core's pipeline added (what the first score of a notebook or
CLI would pay on top).

Usage: ``python bench/bench_rest_client.py [--quick] [--rounds 20] [--block 10]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_protocols import MODEL, jpeg, measure, start_server  # noqa: E402
from bench_runtimes import cpu_description  # noqa: E402

from accel_widgets.engine.clients.rest_client import RestPredictionClient  # noqa: E402


def import_ms(statement: str, repeats: int = 5) -> float:
    """Median wall time of ``python -c statement`` minus a bare interpreter's."""

    def run(code: str) -> float:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import time; t = time.perf_counter(); {code}; "
                "print((time.perf_counter() - t) * 1000)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout.strip())

    return float(np.median([run(statement) for _ in range(repeats)]))


def pipeline_client(base: str):  # type: ignore[no-untyped-def]
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import HeadersPolicy, RetryPolicy
    from azure.core.pipeline.transport import RequestsTransport

    return PipelineClient(
        base,
        policies=[
            HeadersPolicy({"User-Agent": "bench"}),
            RetryPolicy(retry_total=4, retry_backoff_factor=0.2, retry_backoff_max=3),
        ],
        transport=RequestsTransport(),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few rounds: check it runs")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=10)
    args = parser.parse_args()
    rounds, block = (3, 3) if args.quick else (args.rounds, args.block)
    from azure.core.rest import HttpRequest

    image = jpeg()
    body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        process, info = start_server(Path(tmp))
        try:
            base = f"http://127.0.0.1:{info['rest_port']}"
            route = f"/v1/models/{MODEL}:predict"
            ours = RestPredictionClient(base, model_name=MODEL)
            pooled = pipeline_client(base)

            def via(client) -> np.ndarray:  # type: ignore[no-untyped-def]
                request = HttpRequest(
                    "POST", base + route, content=body, headers={"Content-Type": "application/json"}
                )
                response = client.send_request(request)
                response.raise_for_status()
                return np.asarray(json.loads(response.read())["predictions"][0], np.float32)

            def fresh() -> np.ndarray:
                with pipeline_client(base) as client:
                    return via(client)

            calls = {
                "ours": lambda: np.asarray(ours.score_image(image), np.float32),
                "azure_core": lambda: via(pooled),
                "azure_core_new": fresh,
            }
            reference = calls["ours"]()
            for name, call in calls.items():
                if not np.allclose(call(), reference, atol=1e-6):
                    sys.exit(f"{name} disagrees with ours")
            samples, per_round = measure(calls, rounds, block)
        finally:
            process.terminate()
            process.wait(10)
    p50 = {name: float(np.median(v)) for name, v in samples.items()}
    p99 = {name: float(np.percentile(v, 99)) for name, v in samples.items()}
    paired = {
        name: float(np.median([r[name] - r["ours"] for r in per_round]))
        for name in calls
        if name != "ours"
    }
    imports = {
        "ours": import_ms("import accel_widgets.engine.clients.rest_client"),
        "ours + azure_core": import_ms(
            "import accel_widgets.engine.clients.rest_client, azure.core, "
            "azure.core.pipeline.policies, azure.core.pipeline.transport._requests_basic"
        ),
    }
    print(f"CPU: {cpu_description()}")
    print(f"{'client':16} {'p50 ms':>8} {'p99 ms':>8} {'p50 - ours (paired)':>20}")
    for name in calls:
        extra = f"{paired[name]:+.2f}" if name in paired else "-"
        print(f"{name:16} {p50[name]:8.2f} {p99[name]:8.2f} {extra:>20}")
    print(f"ratio azure_core/ours p50: {p50['azure_core'] / p50['ours']:.2f}")
    print(f"ratio azure_core_new/ours p50: {p50['azure_core_new'] / p50['ours']:.2f}")
    print(
        "import ms (fresh interpreter): "
        + ", ".join(f"{name} {ms:.0f}" for name, ms in imports.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
