"""Plant each bug of issue 26 in a copy of the code and check that a pinned test fails.

The issue lists bugs that passed the whole relevant suite unnoticed. tests/test_pinned_*.py
were written to catch them; this script proves it, one bug at a time: it copies
``accel_widgets/`` and ``tests/`` to a scratch folder, makes the one-line change, runs the
test that should catch it on the copy, and prints CAUGHT or MISSED. It changes nothing in
the working tree. The Docker test (the workspace label) takes about a minute; ``--skip-docker``
leaves it out.

Usage: ``python bench/planted_bugs.py [--skip-docker] [NAME ...]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    what: str
    file: str
    old: str
    new: str
    test: str
    docker: bool = False


BUGS = {
    "ratio-upside-down": Bug(
        "the INT8 report's latency ratio computed upside down",
        "accel_widgets/engine/conversion/convert_worker.py",
        'timings["int8"]["p50_ms"] / timings["fp32"]["p50_ms"]',
        'timings["fp32"]["p50_ms"] / timings["int8"]["p50_ms"]',
        "tests/test_pinned_reports.py::test_the_int8_latency_ratio_is_int8_p50_over_fp32_p50",
    ),
    "batch-limit-refuses-n": Bug(
        "a request of exactly the batch limit refused (v2 BYTES)",
        "accel_widgets/serving/v2.py",
        "if spec.elements > limit:",
        "if spec.elements >= limit:",
        "tests/test_pinned_serving.py::test_v2_rest_bytes_input_of_exactly_max_batch_images_is_served_and_one_more_refused",
    ),
    "batch-limit-takes-n-plus-1": Bug(
        "a request of one more than the batch limit served (v2 BYTES)",
        "accel_widgets/serving/v2.py",
        "if spec.elements > limit:",
        "if spec.elements > limit + 1:",
        "tests/test_pinned_serving.py::test_v2_grpc_bytes_input_of_exactly_max_batch_images_is_served_and_one_more_refused",
    ),
    "ready-route-without-key": Bug(
        "/v2/models/NAME/ready answered without a key when auth is on",
        "accel_widgets/serving/rest.py",
        "public = path in _PUBLIC_V2\n",
        'public = path in _PUBLIC_V2 or path.endswith("/ready")\n',
        "tests/test_pinned_serving.py::test_every_http_route_needs_the_key_unless_it_is_a_probe",
    ),
    "model-ready-rpc-without-key": Bug(
        "ModelReady answered without a key when auth is on",
        "accel_widgets/serving/pipeline.py",
        'for name in ("ServerLive", "ServerReady")',
        'for name in ("ServerLive", "ServerReady", "ModelReady")',
        "tests/test_pinned_serving.py::test_every_grpc_method_needs_the_key_unless_it_is_a_probe",
    ),
    "false-is-true": Bug(
        'the string "false" for a bool target setting read as True',
        "accel_widgets/engine/targets/base.py",
        'value = lowered in ("true", "yes", "1", "on")',
        "value = bool(lowered)",
        "tests/test_pinned_settings.py",
    ),
    "workspace-label-dropped": Bug(
        "the workspace label dropped from a packaged image",
        "accel_widgets/engine/packaging/package_context.py",
        'f"{LABEL}.workspace": workspace_label(workspace),',
        "",
        "tests/test_pinned_package.py",
        docker=True,
    ),
    "nms-iou-changed": Bug(
        "the SSD NMS IoU threshold changed",
        "accel_widgets/engine/models/ssd_decode.py",
        "NMS_IOU = 0.45",
        "NMS_IOU = 0.5",
        "tests/test_pinned_ssd.py",
    ),
    "resource-exhausted-retried": Bug(
        "RESOURCE_EXHAUSTED added to the client's retried codes",
        "accel_widgets/engine/clients/grpc_client.py",
        '"retryableStatusCodes": ["UNAVAILABLE"]',
        '"retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]',
        "tests/test_pinned_client.py",
    ),
    "long-tensor-content-accepted": Bug(
        "a tensor_content longer than the shape needs accepted by the size check",
        "accel_widgets/serving/tensors.py",
        "if len(content) != expected:",
        "if len(content) < expected:",
        "tests/test_pinned_serving.py::test_tensor_content_must_hold_exactly_the_bytes_the_shape_needs",
    ),
}


def plant(bug: Bug, folder: Path) -> None:
    shutil.copytree(
        ROOT / "accel_widgets",
        folder / "accel_widgets",
        ignore=shutil.ignore_patterns("__pycache__", "labextension"),
    )
    shutil.copytree(ROOT / "tests", folder / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", folder / "pyproject.toml")
    target = folder / bug.file
    text = target.read_text()
    if text.count(bug.old) != 1:
        raise SystemExit(f"{bug.file}: expected one {bug.old!r}, found {text.count(bug.old)}")
    target.write_text(text.replace(bug.old, bug.new))


def caught(bug: Bug) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="planted-") as scratch:
        folder = Path(scratch)
        plant(bug, folder)
        env = {**os.environ, "PYTHONPATH": str(folder)}
        env.setdefault("ACCEL_WIDGETS_WEIGHTS_DIR", str(ROOT.parent / "shared" / "weights"))
        env.setdefault("ACCEL_WIDGETS_DATA_DIR", str(ROOT.parent / "shared" / "data"))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", bug.test],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        return result.returncode == 1, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BUGS)} (default: all)")
    parser.add_argument("--skip-docker", action="store_true")
    args = parser.parse_args()
    missed = 0
    for name in args.names or list(BUGS):
        bug = BUGS[name]
        if bug.docker and args.skip_docker:
            print(f"SKIPPED {name}: {bug.what} (needs Docker)")
            continue
        ok, last = caught(bug)
        missed += not ok
        print(f"{'CAUGHT' if ok else 'MISSED'} {name}: {bug.what}\n    {bug.test}: {last}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
