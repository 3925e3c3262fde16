# Sourced by walkthrough.sh and test.sh: system packages a fresh Debian machine lacks.

# ensure_command COMMAND PACKAGE...: apt-get install the packages when COMMAND is missing.
ensure_command() {
    local command_name="$1"
    shift
    if command -v "$command_name" >/dev/null 2>&1; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    echo "installing $* (for $command_name)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# `pip install` builds the JupyterLab extension (labextension/) with Node.js and npm.
ensure_command npm nodejs npm
