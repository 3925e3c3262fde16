#!/usr/bin/env bash
# Runs inside the bare Debian 12 container of scripts/fresh_machine.sh (read it first): clone,
# the README's walkthrough command until JupyterLab answers, the CLI walk, a clean git status.
# Only python3, git and ca-certificates are installed when it starts; /src is the host's
# checkout, read-only.
set -euo pipefail
START=$SECONDS
say() { echo "[inside +$((SECONDS - START))s] $*"; }
! command -v python >/dev/null 2>&1 || { echo "this machine has a python command" >&2; exit 1; }

git config --global --add safe.directory '*' # /src belongs to the host's user
CLONE="$HOME/accel-widgets" # where `git clone .../accel-widgets` in a home folder puts it
git clone --quiet /src "$CLONE"
cd "$CLONE"
say "cloned $(git rev-parse --short HEAD) into $CLONE (no ../shared beside it)"

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
LAB_LOG="$HOME/walkthrough.log"
# The README's main command, as typed, plus what lets a script reach it (port, token).
setsid bash scripts/walkthrough.sh --no-browser "--port=$PORT" --ServerApp.port_retries=0 \
    "--IdentityProvider.token=$TOKEN" >"$LAB_LOG" 2>&1 &
LAB=$!
stop_lab() {
    kill -TERM -- "-$LAB" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$LAB" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$LAB" 2>/dev/null || true
    wait "$LAB" 2>/dev/null || true
}
trap stop_lab EXIT

# Answering on the walkthrough itself: the notebook page and the user's copy in the contents API.
if ! python3 - "$PORT" "$TOKEN" "$LAB" <<'EOF'; then
import json, os, sys, time, urllib.request
port, token, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
base = f"http://127.0.0.1:{port}"
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("walkthrough.sh exited before JupyterLab answered")
    try:
        with opener.open(f"{base}/lab/tree/walkthrough.ipynb?token={token}", timeout=5) as page:
            if page.status == 200:
                break
    except OSError:
        pass
    time.sleep(0.5)
with opener.open(f"{base}/api/contents/walkthrough.ipynb?token={token}", timeout=10) as reply:
    notebook = json.load(reply)["content"]
code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
with opener.open(f"{base}/api/contents?token={token}", timeout=10) as reply:
    names = sorted(item["name"] for item in json.load(reply)["content"])
print("JupyterLab serves:", ", ".join(names))
EOF
    tail -n 60 "$LAB_LOG" >&2
    exit 1
fi
echo "TIMING clone -> JupyterLab answering on the walkthrough: $((SECONDS - START)) s"
echo "---- what scripts/walkthrough.sh printed (JupyterLab's own log lines left out):"
grep -v '^\[[IWDE] ' "$LAB_LOG" | grep -v '^ *$' || true
echo "----"
stop_lab
trap - EXIT

say "the CLI walk (bash scripts/cli_walk.sh)"
WALK_START=$SECONDS
bash scripts/cli_walk.sh
echo "TIMING CLI walk: $((SECONDS - WALK_START)) s"

dirty="$(git status --porcelain)"
if [ -n "$dirty" ]; then
    echo "the clone is not clean after the walk:" >&2
    echo "$dirty" >&2
    git diff --stat >&2
    exit 1
fi
say "git status is clean after the walk"
