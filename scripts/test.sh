#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run lint and the whole suite.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

export ACCEL_WIDGETS_WEIGHTS_DIR="${ACCEL_WIDGETS_WEIGHTS_DIR:-$(cd .. && pwd)/shared/weights}"
# The tests score with real pretrained weights: stop at once, saying where they go, rather than
# after a quarter of an hour of failures.
for file in SqueezeNet_fp16.onnx imagenet_classes.txt mobilenetv2-12-int8.onnx; do
    if [ ! -f "$ACCEL_WIDGETS_WEIGHTS_DIR/$file" ]; then
        echo "error: $file is not in $ACCEL_WIDGETS_WEIGHTS_DIR. The tests need the shared" >&2
        echo "weights folder beside the checkout (../shared/weights), or set" >&2
        echo "ACCEL_WIDGETS_WEIGHTS_DIR to a folder holding SqueezeNet_fp16.onnx and" >&2
        echo "imagenet_classes.txt (\`accel-widgets sample --folder DIR\` downloads both) and" >&2
        echo "mobilenetv2-12-int8.onnx (ONNX Model Zoo, validated/vision/classification/mobilenet)." >&2
        exit 2
    fi
done

source scripts/prerequisites.sh
# Browser tests drive Debian's chromium (Playwright's own browser download does not work here).
ensure_command chromium chromium

python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[all,test]"
# The official TF Serving client, for tests/test_tf_serving_client.py. --no-deps: it declares the
# full `tensorflow` wheel, which would replace tensorflow-cpu; the protos it needs come from either.
python -m pip install --quiet --no-deps "tensorflow-serving-api>=2.16"

# Container tests: a Docker engine (started here when none answers, and then stopped on exit),
# Debian's registry binary, and the local base image (scripts/make_base_image.sh, cached).
source scripts/docker_env.sh
docker_up

echo "== ruff"
ruff check accel_widgets tests bench
ruff format --check accel_widgets tests bench

echo "== pytest"
python -m pytest -q --timeout=900 "$@"
