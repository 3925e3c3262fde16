#!/usr/bin/env bash
# Set up everything on a fresh machine, then open JupyterLab on the walkthrough notebook.
# The walk deploys to this machine (the local target): no cloud account is needed.
# Usage: bash scripts/walkthrough.sh [extra jupyter lab arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/prerequisites.sh

python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[all]"

# The real pretrained sample model (SqueezeNet) and the label files live beside the project.
export ACCEL_WIDGETS_WEIGHTS_DIR="${ACCEL_WIDGETS_WEIGHTS_DIR:-$(cd .. && pwd)/shared/weights}"

args=(--ip=127.0.0.1)
if [ "$(id -u)" = "0" ]; then
    args+=(--allow-root)  # JupyterLab refuses to run as root without it (containers, CI boxes)
fi
echo "Opening JupyterLab on notebooks/walkthrough.ipynb (Ctrl+C twice to stop)."
echo "For a demo app without code cells: voila notebooks/walkthrough.ipynb"
exec python -m jupyter lab "${args[@]}" "$@" notebooks/walkthrough.ipynb
