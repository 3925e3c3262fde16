#!/usr/bin/env bash
# Set up everything on a fresh machine, then walk the whole path on the local target:
# capacity -> catalog -> build + convert + validate + INT8 -> workspace listing -> deploy -> score.
# The same walk as the notebook, on the command line (scripts/walkthrough.sh opens the notebook).
#
# ACCEL_WIDGETS_DEMO_MODEL    the catalog model to convert (default resnet50)
# ACCEL_WIDGETS_DEMO_WEIGHTS  its weights: random (default, works offline) or imagenet
# ACCEL_WIDGETS_SKIP_SETUP=1  install nothing: use the active environment, or the python3 on
#                             PATH, as it is (a machine already set up; the tests)
# Python: a virtual environment made from python3 and reused (.venv in the checkout, or
# $ACCEL_WIDGETS_VENV, or the one you activated: scripts/python_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/prerequisites.sh
source scripts/python_env.sh
project_env all

# The real pretrained sample (SqueezeNet) and the label files: ../shared/weights beside the
# checkout when it is there, else where `accel-widgets sample` downloads them
# (~/.cache/accel-widgets/weights), or the folders named by ACCEL_WIDGETS_WEIGHTS_DIR.
if [ -z "${ACCEL_WIDGETS_WEIGHTS_DIR:-}" ] && [ -d ../shared/weights ]; then
    ACCEL_WIDGETS_WEIGHTS_DIR="$(cd .. && pwd)/shared/weights"
    export ACCEL_WIDGETS_WEIGHTS_DIR
fi
MODEL="${ACCEL_WIDGETS_DEMO_MODEL:-resnet50}"
WEIGHTS="${ACCEL_WIDGETS_DEMO_WEIGHTS:-random}"  # 'imagenet' when you are online

# quota exits 1 when capacity is short; the walk goes on so you can see the rest.
accel-widgets quota --target local || echo "(continuing the walk anyway)"
accel-widgets models
accel-widgets convert "$MODEL" --weights "$WEIGHTS" --quantize int8
accel-widgets list

sample_path() {
    "$PY" -c 'from accel_widgets.engine.walk.choices import sample_model_path as p; print(p() or "")'
}

# Deploy the real pretrained SqueezeNet and score a cat photo; without it, deploy the model
# converted above instead, and say what that leaves out.
accel-widgets delete service walkthrough >/dev/null 2>&1 || true  # left by an earlier run
SAMPLE="$(sample_path)"
if [ -z "$SAMPLE" ] && [ -z "${ACCEL_WIDGETS_OFFLINE:-}" ]; then
    echo "The SqueezeNet sample is not on this machine: fetching it (accel-widgets sample)."
    if accel-widgets sample; then SAMPLE="$(sample_path)"; fi
fi
if [ -n "$SAMPLE" ]; then
    accel-widgets register "$SAMPLE" squeezenet  # recognised: BGR minus the Caffe mean
    accel-widgets deploy squeezenet --name walkthrough
else
    echo
    echo "SKIPPED the real pretrained SqueezeNet sample: SqueezeNet_fp16.onnx is in none of"
    "$PY" -c 'from accel_widgets.engine.models.labels import weights_dirs
print("  " + ", ".join(str(d) for d in weights_dirs()))
from accel_widgets.engine.models.sample_model import how_to_get
print(how_to_get() + ".")'
    echo "Deploying $MODEL ($WEIGHTS weights) instead: the service, gRPC and scoring are real;"
    if [ "$WEIGHTS" = "random" ]; then
        echo "with random weights the classes it answers are meaningless."
    fi
    echo
    accel-widgets deploy "$MODEL" --name walkthrough
fi
accel-widgets score walkthrough --sample chelsea --repeat 50
accel-widgets services
accel-widgets delete service walkthrough
