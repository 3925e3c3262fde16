"""SSD-VGG benchmark: served vs in-process, INT8 vs fp32, and where decoding runs, in one run.

Prints, side by side and measured in one run on this machine (random weights, batch 1, the
chelsea JPEG):

* **served vs in-process**: client-observed p50/p99 of the fp32 and INT8 services (ONNX
  Runtime, asking for the four detection outputs) against ONNX Runtime in this process on
  the same JPEG (decode + preprocessing + model), in alternating blocks with idle gaps
  (docs/FINDINGS.md: ORT's threads spin after a run and slow whatever runs next);
* **INT8 vs fp32**: the ratio of their p50s, their sizes and the detection agreement the
  converter measured (same class, IoU >= 0.5);
* **where decoding runs**: the in-graph decode + NMS alone (a decode-only ONNX model fed the
  12 raw maps), the NumPy reference on the same maps (what decoding in a Python server or
  client would cost), and the served call asking for the 12 raw maps (840 kB, what clients of
  the original service fetched to decode themselves) against the detection outputs.

Usage: ``python bench/bench_ssd.py [--runs 30] [--photos 2]``; everything it makes lives in
a temporary workspace removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout, whatever is installed

_STARTED = time.monotonic()


from bench_runtimes import cpu_description  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def blocks(candidates: dict, runs: int, block: int = 5, gap_s: float = 0.05) -> dict:
    """Each candidate timed in alternating blocks of ``block`` calls, same idle gap before each."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():  # warm up
        fn()
    while min(len(v) for v in samples.values()) < runs:
        for name, fn in candidates.items():
            for _ in range(block):
                time.sleep(gap_s)
                started = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {"p50": statistics.median(v), "p99": percentile(v, 0.99), "n": len(v)}
        for name, v in samples.items()
    }


def decode_only_onnx(path: Path) -> None:
    """The in-graph decoding and NMS alone, as an ONNX model taking the 12 raw maps."""
    import tensorflow as tf
    import tf2onnx

    from accel_widgets.engine.models.ssd_anchors import FEATURE_MAPS
    from accel_widgets.engine.models.ssd_decode import NUM_CLASSES, detect_tf

    specs = [
        tf.TensorSpec([None, m.grid, m.grid, m.anchors_per_cell, 4], tf.float32, f"{m.block}_loc")
        for m in FEATURE_MAPS
    ] + [
        tf.TensorSpec(
            [None, m.grid, m.grid, m.anchors_per_cell, NUM_CLASSES], tf.float32, f"{m.block}_logits"
        )
        for m in FEATURE_MAPS
    ]

    @tf.function(input_signature=specs)
    def decode(*maps):
        return detect_tf(tf, maps[:6], maps[6:])

    tf2onnx.convert.from_function(decode, input_signature=specs, opset=17, output_path=str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed calls per candidate")
    parser.add_argument("--photos", type=int, default=2, help="validation/calibration photos")
    args = parser.parse_args()

    from accel_widgets.engine.checks.samples import sample_photos
    from accel_widgets.engine.clients.grpc_client import client_from_service
    from accel_widgets.engine.conversion.convert import convert
    from accel_widgets.engine.conversion.ssd_convert import run_onnx
    from accel_widgets.engine.conversion.validate import onnx_session
    from accel_widgets.engine.models.build import build_model
    from accel_widgets.engine.models.ssd import raw_output_names
    from accel_widgets.engine.models.ssd_decode import DETECTION_OUTPUTS, detect_numpy
    from accel_widgets.engine.store.workspace import Workspace
    from accel_widgets.engine.targets import delete_service, deploy
    from accel_widgets.preprocess import Preprocessing, prepare

    cpu = cpu_description()["model"]
    log(f"CPU: {cpu}")
    with tempfile.TemporaryDirectory(prefix="bench-ssd-") as tmp:
        root = Path(tmp)
        folder = root / "photos"
        folder.mkdir()
        for photo in sample_photos()[: args.photos]:
            (folder / f"{photo.name}.jpg").write_bytes(photo.data)
        workspace = Workspace(root / "workspace")
        log("building ssd_vgg (random weights) and converting it to fp32 + INT8")
        build_model("ssd_vgg", weights="random", workspace=workspace)
        started = time.monotonic()
        fp32, int8 = convert(
            "ssd_vgg",
            workspace=workspace,
            quantize="int8",
            validation=folder,
            calibration=folder,
            timing_runs=3,
        )
        log(f"converted in {time.monotonic() - started:.0f} s")
        data = sample_photos(["chelsea"])[0].data
        pre = Preprocessing.from_dict(fp32.report["preprocessing"])
        services = []
        try:
            for artifact in (fp32, int8):
                services.append(
                    deploy(
                        "ssd_vgg",
                        precision=artifact.precision,
                        name=f"ssd-{artifact.precision}",
                        workspace=workspace,
                        ready_timeout=180,
                        runtime="onnxruntime",  # the in-process reference's runtime
                    )
                )
            for service in services:
                log(f"{service.name} runtime: {service.info.get('runtimes', {})}")
            sessions = {a.precision: onnx_session(a.file) for a in (fp32, int8)}
            clients = {s.name: client_from_service(s) for s in services}
            detect = list(DETECTION_OUTPUTS)
            raw = [legacy for _, legacy in raw_output_names()]

            def in_process(precision: str):
                session = sessions[precision]
                return lambda: session.run(None, {"pixels": prepare(data, pre)})

            def served(name: str, outputs: list[str]):
                client = clients[name]
                return lambda: client.score_image(data, outputs=outputs)

            log(f"timing served vs in-process, {args.runs} calls each, alternating blocks")
            latency = blocks(
                {
                    "served fp32": served("ssd-fp32", detect),
                    "in-process fp32": in_process("fp32"),
                    "served int8": served("ssd-int8", detect),
                    "in-process int8": in_process("int8"),
                    "served fp32, 12 raw maps": served("ssd-fp32", raw),
                },
                args.runs,
            )
            log("timing decoding: in the graph (ONNX) vs the NumPy reference")
            outputs = run_onnx(sessions["fp32"], [prepare(data, pre)])[0]
            keys = [key for key, _ in raw_output_names()]
            locations = [outputs[k] for k in keys if k.endswith("_loc")]
            logits = [outputs[k] for k in keys if k.endswith("_logits")]
            decode_path = root / "decode.onnx"
            decode_only_onnx(decode_path)
            decoder = onnx_session(decode_path)
            feed = {i.name: outputs[i.name.split(":")[0]] for i in decoder.get_inputs()}
            decoding = blocks(
                {
                    "decode+NMS in ONNX": lambda: decoder.run(None, feed),
                    "decode+NMS in NumPy": lambda: detect_numpy(locations, logits),
                },
                args.runs,
                gap_s=0.0,
            )
            raw_bytes = sum(outputs[k].nbytes for k in keys)
            det_bytes = sum(outputs[k].nbytes for k in DETECTION_OUTPUTS)
        finally:
            for service in services:
                with contextlib.suppress(Exception):
                    delete_service(service.name, workspace=workspace)

    print()
    print(f"SSD300-VGG, random weights, batch 1, chelsea JPEG; CPU: {cpu}")
    print(f"{'candidate':32} {'p50 ms':>9} {'p99 ms':>9}")
    for name, row in {**latency, **decoding}.items():
        print(f"{name:32} {row['p50']:9.1f} {row['p99']:9.1f}")
    ratio = lambda a, b: latency[a]["p50"] / latency[b]["p50"]  # noqa: E731
    print()
    print(f"served / in-process, fp32      : {ratio('served fp32', 'in-process fp32'):.2f}x")
    print(f"served / in-process, int8      : {ratio('served int8', 'in-process int8'):.2f}x")
    print(f"int8 / fp32, served            : {ratio('served int8', 'served fp32'):.2f}x")
    print(f"int8 / fp32, in-process        : {ratio('in-process int8', 'in-process fp32'):.2f}x")
    print(
        f"sizes                          : fp32 {fp32.size_bytes / 2**20:.1f} MB, "
        f"int8 {int8.size_bytes / 2**20:.1f} MB"
    )
    cmp = int8.report["vs_fp32"]
    print(
        f"int8 vs fp32 detections        : recall {cmp['recall']:.2f}, precision "
        f"{cmp['precision']:.2f} ({cmp['reference_detections']} fp32 boxes, IoU >= 0.5)"
    )
    share = decoding["decode+NMS in ONNX"]["p50"] / latency["in-process fp32"]["p50"]
    print(
        f"decoding in the graph          : {decoding['decode+NMS in ONNX']['p50']:.2f} ms "
        f"({share:.1%} of the fp32 model); NumPy: "
        f"{decoding['decode+NMS in NumPy']['p50']:.1f} ms"
    )
    print(
        f"raw maps vs detections, served : "
        f"{ratio('served fp32, 12 raw maps', 'served fp32'):.2f}x "
        f"({raw_bytes / 1024:.0f} kB vs {det_bytes / 1024:.1f} kB per image)"
    )


if __name__ == "__main__":
    main()
