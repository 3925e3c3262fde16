#!/usr/bin/env bash
# Set up everything on a fresh machine, then walk the whole path on the local target:
# capacity -> catalog -> build + convert + validate + INT8 -> workspace listing.
# The same walk as the notebook, on the command line (scripts/walkthrough.sh opens the notebook).
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[all]"

export ACCEL_WIDGETS_WEIGHTS_DIR="${ACCEL_WIDGETS_WEIGHTS_DIR:-$(cd .. && pwd)/shared/weights}"
WEIGHTS="${ACCEL_WIDGETS_DEMO_WEIGHTS:-random}"  # 'imagenet' when you are online

# quota exits 1 when capacity is short; the walk goes on so you can see the rest.
accel-widgets quota --target local || echo "(continuing the walk anyway)"
accel-widgets models
accel-widgets convert resnet50 --weights "$WEIGHTS" --quantize int8
accel-widgets list

# Deploy the real pretrained SqueezeNet from the shared weights and score a cat photo.
# (With random weights ResNet-50's labels mean nothing; its service works the same way.)
accel-widgets delete service walkthrough >/dev/null 2>&1 || true  # left by an earlier run
accel-widgets register "$ACCEL_WIDGETS_WEIGHTS_DIR/SqueezeNet_fp16.onnx" squeezenet \
    --preprocessing '{"channel_order": "BGR"}'
accel-widgets deploy squeezenet --name walkthrough
accel-widgets score walkthrough --sample chelsea --repeat 50
accel-widgets services
accel-widgets delete service walkthrough
