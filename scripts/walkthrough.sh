#!/usr/bin/env bash
# Set up everything on a fresh machine, then open JupyterLab on your copy of the walkthrough.
# The walk deploys to this machine (the local target): no cloud account is needed.
#
# Usage: bash scripts/walkthrough.sh [extra jupyter lab arguments]
#
# Python: a virtual environment made from python3 and reused (.venv in the checkout, or
# $ACCEL_WIDGETS_VENV, or the one you activated: scripts/python_env.sh).
# ACCEL_WIDGETS_NOTEBOOK_DIR  where your notebooks go (default ~/accel-widgets-notebooks):
#     clean copies of the walkthrough and its companion notebooks, made once and never
#     overwritten. JupyterLab serves that folder, so nothing the walk saves lands in the
#     repository (a folder inside the checkout is refused for that reason).
# ACCEL_WIDGETS_OFFLINE=1     do not try to download the SqueezeNet sample.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/prerequisites.sh
source scripts/python_env.sh
project_env all

# The real pretrained sample model (SqueezeNet) and the label files: ../shared/weights beside
# the checkout when it is there, else where `accel-widgets sample` downloads them
# (~/.cache/accel-widgets/weights). Without them the walk preselects a catalog model and says why.
if [ -z "${ACCEL_WIDGETS_WEIGHTS_DIR:-}" ] && [ -d ../shared/weights ]; then
    ACCEL_WIDGETS_WEIGHTS_DIR="$(cd .. && pwd)/shared/weights"
    export ACCEL_WIDGETS_WEIGHTS_DIR
fi
if ! "$PY" -c 'import sys; from accel_widgets.engine.models.sample_model import missing_files as m
sys.exit(bool(m()))' 2>/dev/null; then
    if [ -n "${ACCEL_WIDGETS_OFFLINE:-}" ] || ! accel-widgets sample; then
        echo "The SqueezeNet sample is not on this machine: the walk starts with a catalog" \
            "model and says why (get the sample later with: accel-widgets sample)."
    fi
fi

# Your own copies of the notebooks: the tracked ones in notebooks/ are templates. Not in the
# checkout (a clone is often ~/accel-widgets itself): what JupyterLab saves would dirty it.
NOTEBOOK_DIR="$(realpath -m "${ACCEL_WIDGETS_NOTEBOOK_DIR:-$HOME/accel-widgets-notebooks}")"
case "$NOTEBOOK_DIR/" in
    "$PROJECT_ROOT"/*)
        echo "error: ACCEL_WIDGETS_NOTEBOOK_DIR=$NOTEBOOK_DIR is inside the checkout" \
            "($PROJECT_ROOT); choose a folder outside it, where your notebooks can change" >&2
        exit 1
        ;;
esac
"$PY" -m accel_widgets.engine.walk.notebooks "$NOTEBOOK_DIR"

# JupyterLab prints (and opens) its default URL with the token: make that the walkthrough
# itself rather than the Launcher (a notebook passed as an argument opens only in the browser
# it starts, and --no-browser prints the Launcher's address).
NOTEBOOK=walkthrough.ipynb
args=(--ip=127.0.0.1 "--ServerApp.root_dir=$NOTEBOOK_DIR" "--LabApp.default_url=/lab/tree/$NOTEBOOK")
if [ "$(id -u)" = "0" ]; then
    args+=(--allow-root) # JupyterLab refuses to run as root without it (containers, CI boxes)
fi
echo
echo "Opening JupyterLab on $NOTEBOOK_DIR/$NOTEBOOK: open the"
echo "http://127.0.0.1:.../lab/tree/$NOTEBOOK?token=... address it prints below (Ctrl+C twice to stop)."
echo "For a demo app without code cells: voila $NOTEBOOK_DIR/$NOTEBOOK"
project_env_summary
exec "$PY" -m jupyter lab "${args[@]}" "$@"
