# Sourced by walkthrough.sh, test.sh and cli_walk.sh: system packages a fresh machine lacks.
# On Debian and Ubuntu they are installed with apt-get (with sudo when not root); elsewhere
# the error names what to install.

_prerequisites_sudo() {
    if [ "$(id -u)" = "0" ]; then
        return 0
    fi
    if command -v sudo >/dev/null 2>&1; then
        echo "sudo"
        return 0
    fi
    return 1
}

_prerequisites_updated=""

# ensure_packages PACKAGE...: apt-get install the packages dpkg does not list as installed.
# False (with a message) where there is no apt-get or no way to become root.
ensure_packages() {
    local missing=() package sudo
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "this is not a Debian or Ubuntu system (no apt-get): install $* yourself" >&2
        return 1
    fi
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
            missing+=("$package")
        fi
    done
    [ "${#missing[@]}" = 0 ] && return 0
    if ! sudo="$(_prerequisites_sudo)"; then
        echo "installing ${missing[*]} needs root: run sudo apt-get install ${missing[*]}" >&2
        return 1
    fi
    echo "installing ${missing[*]} with apt-get"
    if [ -z "$_prerequisites_updated" ]; then
        $sudo apt-get update -qq
        _prerequisites_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ensure_command COMMAND PACKAGE...: install the packages when COMMAND is missing.
ensure_command() {
    local command_name="$1"
    shift
    if command -v "$command_name" >/dev/null 2>&1; then
        return 0
    fi
    if ! ensure_packages "$@"; then
        echo "error: $command_name is missing; install it ($*) and run this again" >&2
        exit 1
    fi
}
