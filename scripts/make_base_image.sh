#!/usr/bin/env bash
# Make a Debian 12 (bookworm) base image with Python 3.11 and venv, without any registry.
#
# Usage: bash scripts/make_base_image.sh [IMAGE]        (IMAGE defaults to local/debian-py:bookworm)
#
# BASE_IMAGE_PACKAGES (default python3,python3-venv) and BASE_IMAGE_CHECK (default: make a
# venv and run its pip) make other images the same way: scripts/fresh_machine.sh makes a bare
# Debian 12 with python3,git,ca-certificates and checks only that python3 and git run.
#
# For machines that cannot pull from Docker Hub (only Debian package mirrors reachable), the
# image is bootstrapped from Debian packages with mmdebstrap and loaded with `docker import`.
# Use it wherever a Dockerfile wants a Python base, e.g.
#     docker build --build-arg BASE=local/debian-py:bookworm ...
# Debian's Python refuses system-wide pip installs (PEP 668): install into a venv in the
# image (`python3 -m venv /opt/venv`).
#
# The image carries the label accel-widgets.base-hash: a hash of the recipe below (suite,
# packages, options, architecture). When an image of that name with the same hash exists, the
# script does nothing (about a second); otherwise it builds (about a minute, about 220 MB) and
# replaces the tag. Needs a running Docker engine; installs mmdebstrap with apt-get (with sudo
# when not root) if missing. As root mmdebstrap runs in "root" mode; as another user it picks
# "unshare" mode, which needs unprivileged user namespaces and /etc/subuid entries.
set -euo pipefail

IMAGE="${1:-local/debian-py:bookworm}"
SUITE="bookworm"
VARIANT="apt"
PACKAGES="${BASE_IMAGE_PACKAGES:-python3,python3-venv}"
CHECK="${BASE_IMAGE_CHECK:-python3 -m venv /tmp/v && /tmp/v/bin/pip --version}"
DPKGOPT='path-exclude=/usr/share/{man,locale,doc}/*'
ARCH="$(dpkg --print-architecture 2>/dev/null || uname -m)"
IMAGE_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bump when the script changes what ends up in the image.
RECIPE_VERSION=1
LABEL_KEY="accel-widgets.base-hash"

START=$SECONDS
say() { echo "[make_base_image +$((SECONDS - START))s] $*"; }

RECIPE="version=$RECIPE_VERSION suite=$SUITE variant=$VARIANT include=$PACKAGES"
RECIPE+=" dpkgopt=$DPKGOPT arch=$ARCH path=$IMAGE_PATH lang=C.UTF-8 cmd=bash"
HASH="$(printf '%s' "$RECIPE" | sha256sum | cut -d' ' -f1)"

if ! command -v docker >/dev/null 2>&1; then
    echo "make_base_image: the docker command is missing (install docker.io, or source" \
        "scripts/docker_env.sh and run docker_up)" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "make_base_image: no Docker engine answers (docker info failed); start one first," \
        "e.g. as root: dockerd --iptables=false --ip6tables=false --bridge=none &" >&2
    exit 1
fi

# One build at a time per user (two test sessions starting together would both build).
exec 9>"${TMPDIR:-/tmp}/accel-widgets-make-base-image.$(id -u).lock"
flock 9

existing="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL_KEY\" }}" \
    "$IMAGE" 2>/dev/null || true)"
old_id="$(docker image inspect --format '{{ .Id }}' "$IMAGE" 2>/dev/null || true)"
if [ "$existing" = "$HASH" ]; then
    say "$IMAGE is up to date (${LABEL_KEY}=${HASH:0:12})"
    exit 0
fi
if [ -n "$old_id" ]; then
    say "$IMAGE exists but was made from another recipe (${LABEL_KEY}=${existing:0:12}); rebuilding"
else
    say "$IMAGE not found; building it (about a minute)"
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    say "installing mmdebstrap"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mmdebstrap >/dev/null
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/make-base-image.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
TAR="$WORK/rootfs.tar"

say "mmdebstrap $SUITE ($VARIANT variant, + $PACKAGES)"
# mmdebstrap's own "I: ..." lines, prefixed with the elapsed time, are the progress report.
mmdebstrap --variant="$VARIANT" --include="$PACKAGES" --dpkgopt="$DPKGOPT" \
    "$SUITE" "$TAR" 2>&1 | while IFS= read -r line; do say "  $line"; done
say "root file system: $(du -h "$TAR" | cut -f1)"

say "docker import as $IMAGE"
description="Debian $SUITE with ${PACKAGES//,/ } (mmdebstrap, $VARIANT variant)"
new_id="$(docker import \
    --change "LABEL $LABEL_KEY=$HASH" \
    --change "LABEL org.opencontainers.image.description=\"$description\"" \
    --change "ENV PATH=$IMAGE_PATH" \
    --change "ENV LANG=C.UTF-8" \
    --change 'CMD ["bash"]' \
    "$TAR" "$IMAGE")"

say "checking inside the image: $CHECK"
if ! docker run --rm --network host "$IMAGE" sh -c "$CHECK"; then
    echo "make_base_image: the new image fails its check ($CHECK); removing it" >&2
    docker image rm "$IMAGE" >/dev/null || true
    exit 1
fi
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    # The replaced image, now untagged; kept if containers or other images still use it.
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
say "done: $IMAGE ${new_id:0:19} (${LABEL_KEY}=${HASH:0:12})"
