"""The race's child process: ``python -m accel_widgets.serving.race_child``.

It opens every runtime a model can use, races them on the warm-up tensor and prints the
verdict (:mod:`~accel_widgets.serving.runtime_race` starts it, caches the verdict and reads
it back). The child side lives apart from the parent's so that the parent's module, which the
model loader imports, never imports the loader back.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from accel_widgets.serving import runtime_choice
from accel_widgets.serving.config import ServerConfig
from accel_widgets.serving.model import LoadedModel
from accel_widgets.serving.runtime_race import Verdict


def race_here(request: dict[str, Any]) -> Verdict:
    """The child's work: open every runtime, race them on the warm-up tensor, report."""
    settings = request["settings"]
    config = ServerConfig.from_dict({"models": [request["model"]]}).models[0]
    candidates, notes = runtime_choice.open_candidates(
        config,
        asked="auto",
        device=settings["device"],
        threads=settings["threads"],
        spinning=settings["spinning"],
        dynamic_batch=settings["dynamic_batch"],
    )
    measured: dict[str, float] = {}
    winner = candidates[0]
    if len(candidates) > 1:
        model = LoadedModel(
            config,
            candidates[0].session,
            max_pixels=settings["max_pixels"],
            max_batch=settings["max_batch"],
        )
        batch = model.warm_up_batch()
        names = list(dict.fromkeys(b.config.onnx_output for b in model.outputs))
        winner, measured = runtime_choice.race(
            candidates,
            lambda session: session.run(names, {model.onnx_input: batch}),
            notes=notes,
        )
    return Verdict(winner.runtime, measured, notes, measured_at=time.time())


def main() -> int:
    """Entry point of the child: the request as JSON on stdin, ``VERDICT {...}`` on stdout."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        verdict = race_here(json.loads(sys.stdin.read()))
    except Exception as exc:  # the parent reports it and races in its own process
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("VERDICT " + json.dumps(verdict.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
