#!/usr/bin/env bash
# Set up everything on a fresh machine, then open JupyterLab on the walkthrough notebook.
# The walk deploys to this machine (the local target): no cloud account is needed.
# Usage: bash scripts/walkthrough.sh [extra jupyter lab arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/prerequisites.sh

python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[all]"

# The real pretrained sample model (SqueezeNet) and the label files: ../shared/weights beside
# the checkout when it is there, else where `accel-widgets sample` downloads them
# (~/.cache/accel-widgets/weights). Without them the walk preselects a catalog model and says why.
if [ -z "${ACCEL_WIDGETS_WEIGHTS_DIR:-}" ] && [ -d ../shared/weights ]; then
    ACCEL_WIDGETS_WEIGHTS_DIR="$(cd .. && pwd)/shared/weights"
    export ACCEL_WIDGETS_WEIGHTS_DIR
fi
if ! python -c 'from accel_widgets.engine.choices import sample_model_path as p; assert p()' \
    2>/dev/null; then
    echo "The SqueezeNet sample is not on this machine; get it with: accel-widgets sample"
fi

# JupyterLab prints (and opens) its default URL with the token: make that the walkthrough
# itself rather than the Launcher (a notebook passed as an argument opens only in the browser
# it starts, and --no-browser prints the Launcher's address).
NOTEBOOK=notebooks/walkthrough.ipynb
args=(--ip=127.0.0.1 --ServerApp.root_dir=. "--LabApp.default_url=/lab/tree/$NOTEBOOK")
if [ "$(id -u)" = "0" ]; then
    args+=(--allow-root)  # JupyterLab refuses to run as root without it (containers, CI boxes)
fi
echo "Opening JupyterLab on $NOTEBOOK: open the http://127.0.0.1:.../lab/tree/$NOTEBOOK?token=..."
echo "address it prints below (Ctrl+C twice to stop)."
echo "For a demo app without code cells: voila $NOTEBOOK"
exec python -m jupyter lab "${args[@]}" "$@"
