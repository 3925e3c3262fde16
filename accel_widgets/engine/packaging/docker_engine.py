"""The Docker engine, through the ``docker`` SDK: connecting, and its streams as progress.

One place turns "no engine", a refused pull or push, and a failed build into errors that
say what to do, and turns the engine's JSON streams (build steps, layer pushes) into
progress events. The package step and the container target both go through here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from accel_widgets.errors import DockerUnavailableError, PackageError
from accel_widgets.progress import Reporter

HOW_TO_START = (
    "Install Docker and start its engine: on Debian or Ubuntu `sudo apt-get install docker.io` "
    "then `sudo systemctl start docker` (or, where there is no systemd, `sudo dockerd &`); "
    "elsewhere see https://docs.docker.com/engine/install/. Then make sure your user may use "
    "it (`docker info` answers), or set DOCKER_HOST to an engine you can reach."
)

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")


def connect(timeout: float = 120.0) -> Any:
    """A ``docker.DockerClient`` that answered a ping, or :class:`DockerUnavailableError`."""
    try:
        import docker
    except ImportError:
        raise DockerUnavailableError(
            "the docker Python package is missing: `pip install docker` (it comes with "
            "`pip install accel-widgets[engine]`)"
        ) from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as exc:
        reason = str(exc).split("(")[0].strip() or type(exc).__name__
        raise DockerUnavailableError(
            f"no Docker engine answers ({reason}). {HOW_TO_START}"
        ) from None
    return client


def image_exists(client: Any, reference: str) -> bool:
    import docker

    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_lines(stream: Iterable[dict[str, Any]], report: Reporter) -> Iterator[str]:
    """Follow a build's JSON stream: progress per ``Step i/n``; yields every log line.

    Raises :class:`PackageError` with the failing step and its last lines on an error.
    """
    recent: list[str] = []
    fraction = 0.0
    for chunk in stream:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            tail = "\n".join(recent[-12:])
            raise PackageError(f"the image build failed: {detail.strip()}\n{tail}".rstrip())
        text = chunk.get("stream") or chunk.get("status") or ""
        for line in text.splitlines():
            line = line.rstrip()
            if not line:
                continue
            recent.append(line)
            step = _STEP.match(line)
            if step:
                index, total = int(step.group(1)), int(step.group(2))
                fraction = (index - 1) / total
                report("package", fraction, f"step {index}/{total}: {step.group(3)[:90]}")
            else:
                report("package", fraction, line[:120])
            yield line


def follow_transfer(stream: Iterable[dict[str, Any]], report: Reporter, step: str) -> str:
    """Follow a push or pull stream: one fraction over all layers; returns the digest seen.

    A registry that cannot be reached or refuses the image arrives as an ``error`` chunk.
    """
    layers: dict[str, tuple[int, int]] = {}
    digest = ""
    for chunk in stream:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            raise PackageError(detail.strip())
        if chunk.get("aux", {}).get("Digest"):
            digest = chunk["aux"]["Digest"]
        status = chunk.get("status", "")
        layer = chunk.get("id")
        detail = chunk.get("progressDetail") or {}
        if layer and detail.get("total"):
            layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
        elif layer and status in (
            "Pushed",
            "Layer already exists",
            "Pull complete",
            "Already exists",
        ):
            done = layers.get(layer, (1, 1))[1]
            layers[layer] = (done, done)
        moved = sum(c for c, _ in layers.values())
        total = sum(t for _, t in layers.values())
        fraction = moved / total if total else None
        message = f"{status} {layer or ''}".strip()
        if total:
            message += f" ({moved / 2**20:.0f}/{total / 2**20:.0f} MB)"
        report(step, fraction, message)
        found = re.search(r"digest: (sha256:[0-9a-f]{64})", status)
        if found:
            digest = found.group(1)
    return digest
