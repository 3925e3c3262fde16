#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run lint and the whole suite.
#
# Usage: bash scripts/test.sh [--setup-only] [--fresh-machine] [extra pytest arguments]
#   --setup-only     set everything up (environment, test files, chromium, Docker), then stop
#   --fresh-machine  after the suite, run scripts/fresh_machine.sh: a bare Debian 12
#                    container clones this checkout and runs the README's walkthrough command
#                    until JupyterLab answers, then the command-line walk (about 5 minutes)
#
# Python: a virtual environment made from python3 and reused (.venv in the checkout, or
# $ACCEL_WIDGETS_VENV, or the one you activated: scripts/python_env.sh).
# Test files: ../shared/weights and ../shared/data beside the checkout when they are there
# (or $ACCEL_WIDGETS_WEIGHTS_DIR and $ACCEL_WIDGETS_DATA_DIR); otherwise the pinned files are
# downloaded, sha256 checked, into ~/.cache/accel-widgets/ (accel_widgets/engine/
# suite_files.py), and offline the command stops at once naming each file to fetch.
set -euo pipefail
cd "$(dirname "$0")/.."

SETUP_ONLY=""
FRESH_MACHINE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --setup-only) SETUP_ONLY=1 ;;
        --fresh-machine) FRESH_MACHINE=1 ;;
        *) break ;;
    esac
    shift
done

source scripts/prerequisites.sh
# Browser tests drive Debian's chromium (Playwright's own browser download does not work here).
ensure_command chromium chromium

source scripts/python_env.sh
project_env all,test
# The official TF Serving client, for tests/test_tf_serving_client.py. --no-deps: it declares the
# full `tensorflow` wheel, which would replace tensorflow-cpu; the protos it needs come from either.
if ! "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("tensorflow_serving") is None)'; then
    "$PY" -m pip install --quiet --no-deps "tensorflow-serving-api>=2.16"
fi

# The tests score with real pretrained weights and measure accuracy on labelled photos: the
# shared folders beside the checkout, else the user cache, fetched now when online. Offline,
# stop at once saying which files to fetch, rather than after a quarter of an hour of failures.
SHARED="$(cd .. && pwd)/shared"
if [ -z "${ACCEL_WIDGETS_WEIGHTS_DIR:-}" ] && [ -d "$SHARED/weights" ]; then
    export ACCEL_WIDGETS_WEIGHTS_DIR="$SHARED/weights"
fi
if [ -z "${ACCEL_WIDGETS_DATA_DIR:-}" ] && [ -d "$SHARED/data" ]; then
    export ACCEL_WIDGETS_DATA_DIR="$SHARED/data"
fi
if ! "$PY" -m accel_widgets.engine.checks.suite_files; then
    exit 2
fi
# The tests read one folder each: the one the files are in now.
ACCEL_WIDGETS_WEIGHTS_DIR="$("$PY" -c 'from accel_widgets.engine.models.labels import download_dir
print(download_dir())')"
ACCEL_WIDGETS_DATA_DIR="$("$PY" -c 'from accel_widgets.engine.checks.suite_files import data_download_dir
print(data_download_dir())')"
export ACCEL_WIDGETS_WEIGHTS_DIR ACCEL_WIDGETS_DATA_DIR

# Container tests: a Docker engine (started here when none answers, and then stopped on exit),
# Debian's registry binary, and the local base image (scripts/make_base_image.sh, cached).
source scripts/docker_env.sh
docker_up

if [ -n "$SETUP_ONLY" ]; then
    echo "set up; not running the tests (--setup-only)"
    exit 0
fi

echo "== ruff"
ruff check accel_widgets tests bench
ruff format --check accel_widgets tests bench

echo "== pytest"
status=0
"$PY" -m pytest -q --timeout=900 "$@" || status=$?

if [ -n "$FRESH_MACHINE" ]; then
    # After the suite, so that a failure of either still shows the other's result.
    echo "== fresh machine (scripts/fresh_machine.sh)"
    bash scripts/fresh_machine.sh || status=1
fi
exit "$status"
