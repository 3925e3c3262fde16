# Sourced by test.sh (after prerequisites.sh, whose ensure_command it uses): a Docker engine,
# Debian's registry binary and the local base image for the container tests.
#
#     source scripts/prerequisites.sh
#     source scripts/docker_env.sh
#     docker_up
#
# docker_up installs docker.io and docker-registry with apt-get when missing. When no engine
# answers `docker info`, it starts dockerd in the background (no iptables, no default bridge:
# containers use --network host), logging to test-artifacts/dockerd.log, waits for it, and
# installs an EXIT trap that stops that daemon, and only that one, by its pid (SIGTERM, a wait,
# then SIGKILL), keeping any EXIT trap already set. An engine that already answers is left
# alone. Then it runs scripts/make_base_image.sh (cached: a second or so when up to date).
# Works under `set -euo pipefail`, as root, or as a user with sudo.

DOCKER_ENV_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERD_STARTED_PID=""
DOCKERD_LAUNCHER_PID=""
DOCKERD_LOG="${DOCKERD_LOG:-$DOCKER_ENV_REPO/test-artifacts/dockerd.log}"

_docker_env_sudo() {
    if [ "$(id -u)" != "0" ]; then echo "sudo"; fi
}

# True while PID runs (a zombie, exited but not yet reaped, counts as stopped).
_docker_env_alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat%% *}" != "Z" ]
}

# The pids whose parent is PID (dockerd's own containerd, which SIGTERM would have stopped).
_docker_env_children() {
    local stat_file stat
    for stat_file in /proc/[0-9]*/stat; do
        stat="$(cat "$stat_file" 2>/dev/null)" || continue
        stat="${stat##*) }"
        stat="${stat#* }"
        if [ "${stat%% *}" = "$1" ]; then
            stat_file="${stat_file#/proc/}"
            echo "${stat_file%/stat}"
        fi
    done
}

_docker_env_answers() {
    timeout 20 docker info >/dev/null 2>&1
}

# Wait up to SECONDS for PID to end (it may not be this shell's child); false if it still runs.
_docker_env_wait_gone() {
    local _
    for _ in $(seq 1 $(($2 * 5))); do
        _docker_env_alive "$1" || return 0
        sleep 0.2
    done
    ! _docker_env_alive "$1"
}

# Stop the daemon docker_up started (nothing else). Run from the EXIT trap.
docker_down() {
    local pid="$DOCKERD_STARTED_PID" launcher="$DOCKERD_LAUNCHER_PID" sudo children child
    [ -n "$pid" ] || return 0
    DOCKERD_STARTED_PID=""
    DOCKERD_LAUNCHER_PID=""
    sudo="$(_docker_env_sudo)"
    if _docker_env_alive "$pid"; then
        echo "stopping dockerd (pid $pid)"
        $sudo kill -TERM "$pid" 2>/dev/null || true
        if ! _docker_env_wait_gone "$pid" 20; then
            echo "dockerd (pid $pid) still runs after 20 s; killing it and its containerd"
            children="$(_docker_env_children "$pid")"
            # shellcheck disable=SC2086 # a list of pids
            $sudo kill -KILL "$pid" $children 2>/dev/null || true
            _docker_env_wait_gone "$pid" 5 || echo "dockerd (pid $pid) survived SIGKILL" >&2
            # Until init reaps the killed containerd, its pid file makes the next dockerd wait
            # for it in vain ("timeout waiting for containerd to start"): wait for that.
            for child in $children; do
                for _ in $(seq 1 50); do
                    [ -e "/proc/$child" ] || break
                    sleep 0.2
                done
            done
        fi
    fi
    # Reap what is this shell's child: dockerd (as root) or sudo. sudo stops itself when its
    # command is stopped: wake it, and never wait on a process that still runs.
    if [ -n "$launcher" ] && ! _docker_env_wait_gone "$launcher" 2; then
        kill -CONT "$launcher" 2>/dev/null || true
        _docker_env_wait_gone "$launcher" 5 || true
    fi
    # shellcheck disable=SC2086 # launcher: a pid or nothing
    for child in "$pid" $launcher; do
        if ! _docker_env_alive "$child"; then wait "$child" 2>/dev/null || true; fi
    done
    return 0
}

_docker_env_return() { return "$1"; }

# Run COMMAND (an earlier EXIT trap) with $? set to STATUS, as it would have run without ours.
_docker_env_run_with_status() {
    local status="$1" command="$2"
    if [ "$status" = 0 ]; then
        eval "$command"
    else
        _docker_env_return "$status" || eval "$command"
    fi
}

# Run docker_down on exit, then whatever EXIT trap the caller already has.
_docker_env_chain_exit_trap() {
    local previous parts=()
    previous="$(trap -p EXIT)"
    if [ -z "$previous" ]; then
        trap docker_down EXIT
        return 0
    fi
    eval "parts=($previous)" # trap -- 'COMMAND' EXIT
    # shellcheck disable=SC2016 # $? and $_docker_env_status are for the trap to expand
    local command='_docker_env_status=$?; docker_down; '
    # shellcheck disable=SC2016
    command+='_docker_env_run_with_status "$_docker_env_status" '
    command+="$(printf '%q' "${parts[2]}")"
    # shellcheck disable=SC2064 # the earlier command, quoted by printf %q, is fixed now
    trap "$command" EXIT
}

_docker_env_start_daemon() {
    local sudo dockerd
    sudo="$(_docker_env_sudo)"
    dockerd="$(command -v dockerd || echo /usr/sbin/dockerd)"
    local args=(--iptables=false --ip6tables=false --bridge=none)
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    if [ -z "$sudo" ]; then
        echo "starting dockerd ${args[*]} (log: $DOCKERD_LOG)"
        "$dockerd" "${args[@]}" >"$DOCKERD_LOG" 2>&1 </dev/null &
        DOCKERD_STARTED_PID=$!
    else
        # Let the calling user reach the socket without joining the docker group.
        args+=(--group "$(id -gn)")
        echo "starting sudo dockerd ${args[*]} (log: $DOCKERD_LOG)"
        sudo -v # ask for the password now, not in the background
        local pid_file="$DOCKERD_LOG.pid"
        rm -f "$pid_file"
        # The shell records its pid, then becomes dockerd: the pid to signal is dockerd's own,
        # not sudo's (a SIGKILL to sudo would not reach dockerd).
        # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
        $sudo sh -c 'echo "$$" >"$0"; exec "$@"' "$pid_file" "$dockerd" "${args[@]}" \
            >"$DOCKERD_LOG" 2>&1 </dev/null &
        DOCKERD_LAUNCHER_PID=$!
        for _ in $(seq 1 100); do
            if [ -s "$pid_file" ]; then break; fi
            sleep 0.1
        done
        DOCKERD_STARTED_PID="$(cat "$pid_file" 2>/dev/null || true)"
        if [ -z "$DOCKERD_STARTED_PID" ]; then
            echo "sudo dockerd did not start; the end of $DOCKERD_LOG:" >&2
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            return 1
        fi
    fi
    _docker_env_chain_exit_trap

    local started=$SECONDS
    for _ in $(seq 1 60); do
        if _docker_env_answers; then
            echo "dockerd answers (pid $DOCKERD_STARTED_PID, after $((SECONDS - started)) s)"
            return 0
        fi
        if ! _docker_env_alive "$DOCKERD_STARTED_PID"; then
            echo "dockerd exited; the end of $DOCKERD_LOG:" >&2
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            DOCKERD_STARTED_PID=""
            return 1
        fi
        sleep 0.5
    done
    echo "dockerd did not answer within 30 s; the end of $DOCKERD_LOG:" >&2
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    docker_down
    return 1
}

docker_up() {
    # Debian's docker.io has both the client and the engine (dockerd in /usr/sbin, which a
    # user's PATH may lack); the engine is only needed when none answers.
    if ! command -v docker >/dev/null 2>&1; then
        ensure_command docker docker.io
    elif ! _docker_env_answers && [ ! -x /usr/sbin/dockerd ]; then
        ensure_command dockerd docker.io
    fi
    ensure_command docker-registry docker-registry

    if _docker_env_answers; then
        echo "a Docker engine already answers; using it"
    else
        local problem
        problem="$(timeout 20 docker info 2>&1 >/dev/null || true)"
        if [[ "$problem" == *"permission denied"* ]]; then
            echo "a Docker engine runs, but $(id -un) may not use its socket: join the" \
                "docker group (and log in again). docker info says: $problem" >&2
            return 1
        fi
        _docker_env_start_daemon
    fi
    bash "$DOCKER_ENV_REPO/scripts/make_base_image.sh"
}
