#!/usr/bin/env bash
# The first contact on a bare Debian 12, tested: a container made from Debian packages with
# only python3, git and ca-certificates (mmdebstrap, as scripts/make_base_image.sh makes the
# base image), on the host network, as root. In it, this checkout's committed HEAD is cloned
# to ~/accel-widgets with no ../shared beside it, and then, as a new user would:
#   1. bash scripts/walkthrough.sh (the README's main command) runs until JupyterLab answers
#      on the walkthrough (the time from the clone to that answer is printed);
#   2. bash scripts/cli_walk.sh walks the whole path on the command line;
#   3. git status of the clone must be empty: nothing the walk or the build did changed it.
# Everything the scripts need (python3-venv, Node.js and npm, the Python packages, the npm
# packages) comes from the network, as on a new machine.
#
# Usage: bash scripts/fresh_machine.sh         (run by `bash scripts/test.sh --fresh-machine`)
# Needs a running Docker engine (scripts/docker_env.sh) and mmdebstrap (installed if missing).
#
# ACCEL_WIDGETS_SAMPLE_URL  a mirror of the SqueezeNet sample for the container; by default,
#     when ../shared/weights is beside this checkout, it is served on a loopback port for the
#     length of the run, standing in for its public address (unreachable from CI machines),
#     so the walk deploys the real sample. Set it to "none" to see the offline path.
# ACCEL_WIDGETS_DEMO_MODEL  the catalog model the CLI walk converts (default densenet121,
#     the smallest).
# The host's CA bundle is mounted over the container's: where outgoing HTTPS goes through an
# inspecting proxy (CI machines, company networks) its authority is there; elsewhere it is the
# same Debian bundle.
# Logs: test-artifacts/fresh-machine/ (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd -P)"
IMAGE="local/accel-widgets-fresh:bookworm"
NAME="accel-widgets-fresh-$$-$RANDOM"
LOGS="$REPO/test-artifacts/fresh-machine"
mkdir -p "$LOGS"
START=$SECONDS
say() { echo "[fresh_machine +$((SECONDS - START))s] $*"; }

BASE_IMAGE_PACKAGES="python3,git,ca-certificates" \
    BASE_IMAGE_CHECK="python3 --version && git --version && ! command -v python" \
    bash scripts/make_base_image.sh "$IMAGE"

MIRROR_PID=""
WORK="$(mktemp -d "${TMPDIR:-/tmp}/accel-widgets-fresh.XXXXXX")"
cleanup() {
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    if [ -n "$MIRROR_PID" ]; then
        kill "$MIRROR_PID" 2>/dev/null || true
        wait "$MIRROR_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# What the container clones: this checkout's committed HEAD, as a plain repository (a git
# worktree's .git points outside the checkout, where the container cannot see).
git clone --quiet --no-hardlinks "$REPO" "$WORK/src"

SAMPLE_URL="${ACCEL_WIDGETS_SAMPLE_URL:-}"
if [ -z "$SAMPLE_URL" ] && [ -f ../shared/weights/SqueezeNet_fp16.onnx ]; then
    PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    python3 -m http.server "$PORT" --bind 127.0.0.1 --directory ../shared/weights \
        >"$LOGS/mirror.log" 2>&1 &
    MIRROR_PID=$!
    SAMPLE_URL="http://127.0.0.1:$PORT"
    say "serving ../shared/weights at $SAMPLE_URL as the sample's mirror"
fi
[ "$SAMPLE_URL" = "none" ] && SAMPLE_URL=""

CA_MOUNT=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    CA_MOUNT=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
say "running the first contact in $IMAGE (container $NAME; log: $LOGS/run.log)"
set +e
docker run --rm --name "$NAME" --network host "${CA_MOUNT[@]}" \
    -v "$WORK/src:/src:ro" \
    -e ACCEL_WIDGETS_SAMPLE_URL="$SAMPLE_URL" \
    -e ACCEL_WIDGETS_DEMO_MODEL="${ACCEL_WIDGETS_DEMO_MODEL:-densenet121}" \
    -e HOME=/root -w /root \
    "$IMAGE" bash /src/scripts/fresh_machine_inside.sh 2>&1 | tee "$LOGS/run.log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" != 0 ]; then
    say "FAILED (exit $status); the log: $LOGS/run.log"
    exit 1
fi
say "passed: $(grep -h '^TIMING' "$LOGS/run.log" | tr '\n' ' ')"
