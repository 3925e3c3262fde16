# Sourced by walkthrough.sh, test.sh and cli_walk.sh (after prerequisites.sh, whose
# ensure_packages it uses): the project's own Python environment, made from python3 once and
# reused, with the project installed in it.
#
#     source scripts/prerequisites.sh
#     source scripts/python_env.sh
#     project_env all,test        # the extras to install
#
# Which environment (the first that applies):
#   $ACCEL_WIDGETS_VENV   a virtual environment of your choosing (made there when missing)
#   $VIRTUAL_ENV          the virtual environment you activated
#   $CONDA_PREFIX         the conda environment you activated
#   .venv                 in the checkout, made with `python3 -m venv` when missing
# Never `python` (Debian and Ubuntu have none) and never the system Python itself (PEP 668:
# Debian refuses `pip install` there). Where `python3 -m venv` fails for want of Debian's
# python3-venv package, it is installed with apt-get; elsewhere the error says what to do.
#
# The project is installed (editable, with the extras) unless the environment already holds
# this very install: a stamp in the environment records a hash of pyproject.toml, the
# extension's sources and lockfile, the extras and the checkout's path, so a second run
# starts JupyterLab at once. ACCEL_WIDGETS_SKIP_SETUP=1 installs nothing and uses
# $ACCEL_WIDGETS_VENV, the active environment, or else the python3 on PATH as it is (the
# tests run the scripts so).
#
# Installs go through uv when it can be had (installed with pip into the project's own
# environment; one already on PATH serves an active environment): a fresh install of
# .[all,test] took 43 s with uv and 107 s with pip on a 2-core AMD EPYC (docs/MEASUREMENTS.md,
# "First contact"). Where uv fails (an index only pip's configuration knows, say) pip does
# the install; ACCEL_WIDGETS_INSTALLER=pip skips uv altogether.
#
# Afterwards: PY is the environment's python, its bin/ leads PATH (so `accel-widgets` and
# `jupyter` are the environment's), VIRTUAL_ENV names a venv, and PROJECT_ENV_HINT says how
# to use it later.

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PY=""
PROJECT_ENV=""
PROJECT_ENV_KIND=""
PROJECT_ENV_HINT=""

_env_fail() {
    echo "error: $*" >&2
    exit 1
}

# The python3 that makes the project's venv: 3.10 or newer.
_env_python3() {
    if ! command -v python3 >/dev/null 2>&1; then
        ensure_packages python3 python3-venv ||
            _env_fail "python3 is missing: install Python 3.10 or newer (python3), then run this again"
    fi
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        _env_fail "$(command -v python3) is Python $(python3 -c 'import platform; print(platform.python_version())'); accel-widgets needs 3.10 or newer (set ACCEL_WIDGETS_VENV to an environment made with one)"
    fi
}

# python3 -m venv DIR; on Debian/Ubuntu, install python3-venv when that is what it lacks.
_env_make_venv() {
    local dir="$1" log version package
    log="$(mktemp)"
    echo "making the Python environment $dir (python3 -m venv, $(python3 --version 2>&1))"
    if python3 -m venv "$dir" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    rm -rf "$dir" # a venv without pip (ensurepip missing) is worse than none
    version="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if command -v apt-get >/dev/null 2>&1 && grep -q "ensurepip\|venv" "$log"; then
        echo "python3 -m venv needs Debian's venv package for Python $version"
        # python3-venv follows the system's python3; python3.X-venv covers another python3.
        for package in python3-venv "python$version-venv"; do
            ensure_packages "$package" || continue
            if python3 -m venv "$dir" >"$log" 2>&1; then
                rm -f "$log"
                return 0
            fi
            rm -rf "$dir"
        done
    fi
    cat "$log" >&2
    rm -f "$log"
    _env_fail "could not make a virtual environment with python3 -m venv (above). Install your \
system's venv support for Python $version (Debian/Ubuntu: python3-venv), or make an \
environment yourself and set ACCEL_WIDGETS_VENV to it (or activate it), then run this again"
}

# A hash of what the install depends on: a change to any of it means installing again.
_env_stamp() {
    local extras="$1"
    (
        cd "$PROJECT_ROOT" || exit 1
        echo "extras=$extras root=$PROJECT_ROOT"
        for path in pyproject.toml labextension/package.json labextension/package-lock.json \
            labextension/tsconfig.json labextension/src labextension/style; do
            if [ -e "$path" ]; then find "$path" -type f; fi
        done | LC_ALL=C sort | xargs -r sha256sum
    ) | sha256sum | cut -d' ' -f1
}

_env_install_with_uv() {
    local spec="$1" uv=""
    [ "${ACCEL_WIDGETS_INSTALLER:-uv}" = "pip" ] && return 1
    if [ "$PROJECT_ENV_KIND" = "project" ]; then
        if [ ! -x "$PROJECT_ENV/bin/uv" ]; then
            "$PY" -m pip install --quiet "uv>=0.9" >/dev/null 2>&1 || return 1
        fi
        uv="$PROJECT_ENV/bin/uv"
    else
        uv="$(command -v uv || true)" # the user's own uv, not a new package in their env
    fi
    [ -n "$uv" ] || return 1
    echo "installing accel-widgets[$2] with uv into $PROJECT_ENV"
    # The system's certificate store (a company proxy's authority is there, not in uv's own).
    UV_SYSTEM_CERTS=1 UV_NATIVE_TLS=1 "$uv" pip install --quiet --python "$PY" -e "$spec"
}

_env_install() {
    local extras="$1" stamp_file want spec
    stamp_file="$PROJECT_ENV/.accel-widgets-install"
    want="$(_env_stamp "$extras")"
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want" ] &&
        "$PY" -c 'import accel_widgets' >/dev/null 2>&1; then
        echo "accel-widgets[$extras] is installed in $PROJECT_ENV already (delete" \
            "$stamp_file to install again)"
        return 0
    fi
    spec="$PROJECT_ROOT[$extras]"
    local started=$SECONDS
    if ! _env_install_with_uv "$spec" "$extras"; then
        echo "installing accel-widgets[$extras] with pip into $PROJECT_ENV"
        "$PY" -m pip install --quiet --upgrade pip
        "$PY" -m pip install --quiet -e "$spec"
    fi
    echo "installed in $((SECONDS - started)) s"
    echo "$want" >"$stamp_file"
}

# project_env EXTRAS: pick or make the environment, install the project, export PY and PATH.
project_env() {
    local extras="$1"
    # The extension's build (here, or a wheel built later by the tests) runs npm on Node.js
    # from PyPI, which trusts only its own list of certificate authorities: add the system's,
    # where a company's (or a CI machine's) inspecting proxy has its authority installed.
    # uv is told the same (UV_SYSTEM_CERTS).
    if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
    fi
    if [ -n "${ACCEL_WIDGETS_VENV:-}" ]; then
        PROJECT_ENV="$ACCEL_WIDGETS_VENV"
        PROJECT_ENV_KIND="project"
    elif [ -n "${VIRTUAL_ENV:-}" ]; then
        PROJECT_ENV="$VIRTUAL_ENV"
        PROJECT_ENV_KIND="active"
    elif [ -n "${CONDA_PREFIX:-}" ]; then
        PROJECT_ENV="$CONDA_PREFIX"
        PROJECT_ENV_KIND="conda"
    elif [ -n "${ACCEL_WIDGETS_SKIP_SETUP:-}" ]; then
        command -v python3 >/dev/null 2>&1 || _env_fail "ACCEL_WIDGETS_SKIP_SETUP: no python3"
        PY="$(command -v python3)"
        PROJECT_ENV_KIND="as-is"
        echo "ACCEL_WIDGETS_SKIP_SETUP: using $PY as it is"
        return 0
    else
        PROJECT_ENV="$PROJECT_ROOT/.venv"
        PROJECT_ENV_KIND="project"
    fi
    case "$PROJECT_ENV" in
        /*) ;;
        *) PROJECT_ENV="$PROJECT_ROOT/$PROJECT_ENV" ;; # relative: to the checkout
    esac
    if [ ! -x "$PROJECT_ENV/bin/python" ]; then
        [ -n "${ACCEL_WIDGETS_SKIP_SETUP:-}" ] &&
            _env_fail "ACCEL_WIDGETS_SKIP_SETUP: $PROJECT_ENV has no bin/python"
        [ "$PROJECT_ENV_KIND" = "project" ] ||
            _env_fail "the active environment $PROJECT_ENV has no bin/python"
        _env_python3
        mkdir -p "$(dirname "$PROJECT_ENV")"
        _env_make_venv "$PROJECT_ENV"
    fi
    PY="$PROJECT_ENV/bin/python"
    export PATH="$PROJECT_ENV/bin:$PATH"
    if [ "$PROJECT_ENV_KIND" != "conda" ]; then export VIRTUAL_ENV="$PROJECT_ENV"; fi
    hash -r
    if [ -z "${ACCEL_WIDGETS_SKIP_SETUP:-}" ]; then
        _env_install "$extras"
    fi
    case "$PROJECT_ENV_KIND" in
        conda) PROJECT_ENV_HINT="conda activate $PROJECT_ENV" ;;
        *) PROJECT_ENV_HINT="source $PROJECT_ENV/bin/activate" ;;
    esac
    project_env_summary
}

# Where the environment is and how to use accel-widgets from it in a new shell.
project_env_summary() {
    [ -n "$PROJECT_ENV_HINT" ] || return 0
    echo "Python environment: $PROJECT_ENV ($("$PY" --version 2>&1))."
    echo "To use accel-widgets from it later: $PROJECT_ENV_HINT; then accel-widgets --help" \
        "(or run $PROJECT_ENV/bin/accel-widgets directly)."
}
