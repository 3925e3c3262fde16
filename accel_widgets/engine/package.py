"""Step 5, package: a container image holding one converted model, built by the Docker engine.

``package("resnet50")`` writes a build context (``package_context.py``), builds it with the
engine through the ``docker`` SDK while the build's steps stream in as progress, and records
the image in the workspace: tag, image id, size, base, the model version it holds, and the
digest of its context. Packaging an unchanged artifact on the same base again reuses the
image. ``push_image`` sends it to a registry and ``save_image`` writes an archive for a
machine with no registry (``docker load -i``); both are recorded on the image, and a deploy
pulls a pushed image back when it was removed from the engine meanwhile.

Where no engine answers, the context is still written (under ``contexts/`` in the
workspace) and the error shows its path and the ``docker build`` command for another machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accel_widgets.engine import docker_engine
from accel_widgets.engine.package_context import (
    DEFAULT_BASE,
    LABEL,
    BuildContext,
    default_base,
    write_context,
)
from accel_widgets.engine.workspace import ArtifactRecord, ImageRecord, Workspace, check_name
from accel_widgets.errors import DependencyError, DockerUnavailableError, PackageError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

__all__ = [
    "DEFAULT_BASE",
    "ImageStatus",
    "delete_image",
    "ensure_local",
    "list_images",
    "package",
    "push_image",
    "repository_for",
    "save_image",
]

#: Local image names: ``accel-widgets/<image name>:<image version>``.
REPOSITORY = "accel-widgets"


def repository_for(name: str) -> str:
    return f"{REPOSITORY}/{name}"


def _base_python(client: Any, base: str, report: Reporter) -> tuple[str, str]:
    """The base image's Python (``"3.11"``) and CPU, so the wheels fit it; pulled if needed."""
    import docker

    if not docker_engine.image_exists(client, base):
        report("base", None, f"pulling the base image {base}")
        try:
            docker_engine.follow_transfer(
                client.api.pull(base, stream=True, decode=True), report, "base"
            )
        except (PackageError, docker.errors.APIError) as exc:
            raise PackageError(
                f"the base image {base} is not on this machine and could not be pulled "
                f"({str(exc).strip()[:300]}). Pull it where a registry is reachable "
                f"(`docker pull {base}`), or make one without a registry "
                "(`bash scripts/make_base_image.sh`, then --base local/debian-py:bookworm)."
            ) from None
    probe = "import sys, platform; print('%d.%d' % sys.version_info[:2], platform.machine())"
    try:
        output = client.containers.run(
            base, ["python3", "-c", probe], remove=True, network_mode="none", user="0"
        )
    except docker.errors.DockerException as exc:
        raise PackageError(
            f"the base image {base} cannot run python3 ({str(exc).strip()[:200]}); choose a "
            "base with Python 3.10 or newer and its venv module (python:3.11-slim-bookworm, "
            "or one made by scripts/make_base_image.sh)"
        ) from None
    version, machine = output.decode().split()
    report("base", 1.0, f"base image {base}: Python {version} on {machine}")
    return version, machine


def _orphan_context(workspace: Workspace, artifact: ArtifactRecord, name: str) -> Path:
    """Where a context goes when no engine can build it: kept for building elsewhere."""
    folder = workspace.root / "contexts" / f"{name}-{artifact.model_version}-{artifact.precision}"
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _reusable(
    client: Any, workspace: Workspace, artifact: ArtifactRecord, name: str, context: BuildContext
) -> ImageRecord | None:
    for image in reversed(workspace.list_images()):
        same = (
            image.name == name
            and image.artifact_id == artifact.id
            and image.info.get("context_digest") == context.digest
            and image.tag
        )
        if same and _present(client, image):
            return image
    return None


def package(
    model: str,
    version: int | None = None,
    precision: str | None = None,
    *,
    name: str | None = None,
    base: str | None = None,
    push: str | None = None,
    save: str | os.PathLike[str] | None = None,
    no_cache: bool = False,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> ImageRecord:
    """Build a container image that serves one converted model, and record it.

    Parameters
    ----------
    model, version, precision:
        The workspace model and which artifact (int8 before fp32 when ``precision`` is None).
    name:
        The image name (lowercase; default: the model name). Its versions count up.
    base:
        The image to build on: any image with Python 3.10+ and its venv module. The default
        is ``$ACCEL_WIDGETS_BASE_IMAGE``, else Docker Hub's ``python:3.11-slim-bookworm``;
        with no registry, make one with ``scripts/make_base_image.sh`` and pass
        ``local/debian-py:bookworm``.
    push:
        A registry and path prefix (``127.0.0.1:5000/models``) to push the image to.
    save:
        A ``.tar`` path to write the image to (``docker load -i`` on an offline machine).
    no_cache:
        Build every layer again (the engine otherwise reuses the wheels layer, which is
        what makes a second model's image take seconds) and never reuse an earlier image.

    Returns
    -------
    ImageRecord
        ``info`` holds ``tag``, ``image_id``, ``size_bytes``, ``base``, ``context_digest``,
        ``build_seconds``, ``reused`` and, when pushed or saved, ``pushed`` / ``saved``.
    """
    report = as_reporter(progress, cancel)
    workspace = workspace or Workspace()
    artifact = workspace.get_artifact(model, version, precision)
    name = check_name(name or artifact.model_name, "image")
    base = (base or "").strip() or default_base()
    try:
        client = docker_engine.connect()
    except DockerUnavailableError as exc:
        folder = _orphan_context(workspace, artifact, name)
        write_context(workspace, artifact, folder, base=base, report=report)
        raise DockerUnavailableError(
            f"{exc}\nThe build context is written to {folder}; to build it on a machine with "
            f"Docker: docker build --build-arg BASE={base} -t {repository_for(name)} {folder}"
        ) from None
    python, machine = _base_python(client, base, report)
    with workspace.staging(min_free_bytes=2 * artifact.size_bytes) as staged:
        context = write_context(
            workspace,
            artifact,
            staged / "context",
            base=base,
            python=python,
            machine=machine,
            report=report,
        )
        reused = None if no_cache else _reusable(client, workspace, artifact, name, context)
        if reused is not None:
            report("package", 1.0, f"{reused.tag} already holds this model on {base}; reusing")
            image = workspace.update_image(reused, {**reused.info, "reused": True})
        else:
            image = _build(client, workspace, artifact, name, context, report, no_cache)
    if push:
        image = push_image(image.name, image.version, push, workspace=workspace, progress=report)
    if save:
        image = save_image(image.name, image.version, save, workspace=workspace, progress=report)
    return image


def _build(
    client: Any,
    workspace: Workspace,
    artifact: ArtifactRecord,
    name: str,
    context: BuildContext,
    report: Reporter,
    no_cache: bool = False,
) -> ImageRecord:
    import docker

    scratch_tag = f"{repository_for(name)}:build-{context.digest[7:19]}"
    report("package", 0.0, f"building {repository_for(name)} on {context.base}")
    started = time.monotonic()
    try:
        stream = client.api.build(
            path=str(context.path),
            tag=scratch_tag,
            buildargs={"BASE": context.base},
            rm=True,
            forcerm=True,
            pull=False,
            nocache=no_cache,
            decode=True,
        )
        for _line in docker_engine.build_lines(stream, report):
            pass
        built = client.images.get(scratch_tag)
    except docker.errors.APIError as exc:
        raise PackageError(f"the Docker engine refused the build: {exc.explanation}") from None
    seconds = round(time.monotonic() - started, 1)
    info = {
        "image_id": built.id,
        "size_bytes": int(built.attrs.get("Size") or 0),
        "base": context.base,
        "python": context.python,
        "context_digest": context.digest,
        "labels": context.labels,
        "build_seconds": seconds,
        "reused": False,
        "pushed": [],
        "saved": [],
    }
    # The context folder becomes the image's folder in the workspace (files first, row last).
    try:
        image = workspace.register_image(name, artifact, context.path, info=info)
    except BaseException:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(scratch_tag, noprune=False)
        raise
    tag = f"{repository_for(name)}:{image.version}"
    built.tag(repository_for(name), str(image.version))
    with contextlib.suppress(docker.errors.APIError):
        client.images.remove(scratch_tag)  # drops the scratch name only: the image stays
    image = workspace.update_image(image, {**image.info, "tag": tag})
    size_mb = info["size_bytes"] / 1e6
    report("package", 1.0, f"built {tag} ({size_mb:.0f} MB) in {seconds:.0f} s")
    return image


def push_image(
    name: str,
    version: int | None,
    registry: str,
    *,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> ImageRecord:
    """Push an image to ``registry`` (``host:port/path``) as ``registry/name:version``."""
    import docker

    report = as_reporter(progress, cancel)
    workspace = workspace or Workspace()
    image = workspace.get_image(name, version)
    client = docker_engine.connect()
    local = ensure_local(client, image, report)
    registry = registry.rstrip("/")
    if "://" in registry:
        raise PackageError(
            f"give the registry as host:port/path without a scheme, e.g. "
            f"{registry.split('://', 1)[1]} (not {registry})"
        )
    repository = f"{registry}/{image.name}"
    reference = f"{repository}:{image.version}"
    local.tag(repository, str(image.version))
    report("push", 0.0, f"pushing {reference}")
    try:
        digest = docker_engine.follow_transfer(
            client.api.push(repository, str(image.version), stream=True, decode=True),
            report,
            "push",
        )
    except (PackageError, docker.errors.APIError) as exc:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(reference)
        host = registry.split("/", 1)[0]
        raise PackageError(
            f"could not push {reference}: {str(exc).strip()[:300]}. Check that a registry "
            f"answers at {host} (`curl http://{host}/v2/`), and sign in with "
            f"`docker login {host}` where it needs one; the image is still here as {image.tag}."
        ) from None
    pushed = [p for p in image.info.get("pushed", []) if p.get("ref") != reference]
    pushed.append({"ref": reference, "digest": digest, "at": time.time()})
    report("push", 1.0, f"pushed {reference}" + (f" ({digest[:19]})" if digest else ""))
    return workspace.update_image(image, {**image.info, "pushed": pushed})


def save_image(
    name: str,
    version: int | None,
    path: str | os.PathLike[str],
    *,
    workspace: Workspace | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> ImageRecord:
    """Write an image to a ``.tar`` archive (``docker load -i FILE`` on the other machine)."""
    import docker

    report = as_reporter(progress, cancel)
    workspace = workspace or Workspace()
    image = workspace.get_image(name, version)
    client = docker_engine.connect()
    ensure_local(client, image, report)
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        target = target / f"{image.name}-{image.version}.tar"
    if not target.parent.is_dir():
        raise PackageError(f"cannot save to {target}: the folder {target.parent} does not exist")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    expected = int(image.info.get("size_bytes") or 0)
    written = 0
    try:
        with open(partial, "wb") as handle:
            for chunk in client.api.get_image(image.tag):
                handle.write(chunk)
                written += len(chunk)
                fraction = min(0.99, written / expected) if expected else None
                report("save", fraction, f"{written / 1e6:.0f} MB written to {target.name}")
        os.replace(partial, target)
    except (OSError, docker.errors.APIError) as exc:
        raise PackageError(f"could not save {image.tag} to {target}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    saved = [s for s in image.info.get("saved", []) if s.get("path") != str(target)]
    saved.append({"path": str(target), "bytes": written, "at": time.time()})
    report("save", 1.0, f"saved {image.tag} to {target} ({written / 1e6:.0f} MB)")
    return workspace.update_image(image, {**image.info, "saved": saved})


def holds(engine_image: Any, image: ImageRecord) -> bool:
    """Whether an engine image is the recorded one, or a build of the same model file.

    Tags are names any build can take (another workspace on the same engine, a rebuild by
    hand); the image id and the labels say what is inside.
    """
    if engine_image.id == image.info.get("image_id"):
        return True
    labels, recorded = engine_image.labels or {}, image.info.get("labels") or {}
    keys = (f"{LABEL}.model", f"{LABEL}.precision", f"{LABEL}.onnx-sha256")
    return bool(recorded) and all(labels.get(k) == recorded.get(k) for k in keys)


def _engine_image(client: Any, reference: str | None) -> Any | None:
    import docker

    if not reference:
        return None
    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def ensure_local(client: Any, image: ImageRecord, report: Reporter) -> Any:
    """The engine's image for ``image``: by its tag, by its id, or pulled back from where it
    was pushed when it was removed from the engine meanwhile."""
    import docker

    if not image.tag:
        raise PackageError(f"image {image.ref} was never built; package it again")
    tagged = _engine_image(client, image.tag)
    if tagged is not None and holds(tagged, image):
        return tagged
    by_id = _engine_image(client, image.info.get("image_id"))
    if by_id is not None:
        if tagged is None:
            repository, _, tag = image.tag.rpartition(":")
            by_id.tag(repository, tag)
        return by_id
    errors = []
    for entry in reversed(image.info.get("pushed") or []):
        reference = entry["ref"]
        repository, _, tag = reference.rpartition(":")
        report("pull", 0.0, f"{image.tag} is gone from this engine; pulling {reference}")
        try:
            docker_engine.follow_transfer(
                client.api.pull(repository, tag=tag, stream=True, decode=True), report, "pull"
            )
            pulled = client.images.get(reference)
        except (PackageError, docker.errors.APIError) as exc:
            errors.append(f"{reference}: {str(exc).strip()[:200]}")
            continue
        if tagged is None:
            local_repository, _, local_tag = image.tag.rpartition(":")
            pulled.tag(local_repository, local_tag)
        report("pull", 1.0, f"pulled {reference}")
        return pulled
    where = ("; pulling failed: " + "; ".join(errors)) if errors else " and was never pushed"
    if tagged is not None:
        where = f" (the tag now names another image, {tagged.short_id}){where}"
    raise PackageError(
        f"the image {image.tag} ({image.ref} in the workspace) is no longer in the Docker "
        f"engine: it was removed outside accel-widgets{where}. Package the model again "
        f"(`accel-widgets package {image.name}`), or load a saved archive with "
        f"`docker load -i FILE`."
    )


def _present(client: Any, image: ImageRecord) -> bool:
    tagged = _engine_image(client, image.tag)
    if tagged is not None and holds(tagged, image):
        return True
    return _engine_image(client, image.info.get("image_id")) is not None


@dataclass(frozen=True)
class ImageStatus:
    """An image as recorded, and whether the engine still has it (``None``: no engine)."""

    image: ImageRecord
    artifact: ArtifactRecord
    present: bool | None

    @property
    def model(self) -> str:
        """``name:version precision`` of the model the image holds."""
        a = self.artifact
        return f"{a.model_name}:{a.model_version} {a.precision}"


def list_images(workspace: Workspace | None = None) -> list[ImageStatus]:
    """Every recorded image, with its model and whether the Docker engine still holds it."""
    workspace = workspace or Workspace()
    images = workspace.list_images()
    client = None
    if images:
        with contextlib.suppress(DockerUnavailableError):
            client = docker_engine.connect(timeout=10)
    statuses = []
    for image in images:
        artifact = workspace.get_artifact_by_id(image.artifact_id)
        present = None
        if client is not None and image.tag:
            present = _present(client, image)
        statuses.append(ImageStatus(image, artifact, present))
    return statuses


def _remove_from_engine(client: Any, image: ImageRecord) -> None:
    """Untag what names this image, then remove the image once no name is left on it.

    A tag that now names another image (a rebuild, another workspace) is left alone, and so
    is an identical build that another name still holds.
    """
    import docker

    references = [image.tag, *(p["ref"] for p in image.info.get("pushed", []))]
    try:
        for reference in references:
            found = _engine_image(client, reference)
            if found is not None and found.id == image.info.get("image_id"):
                client.images.remove(reference)
        leftover = _engine_image(client, image.info.get("image_id"))
        if leftover is not None and not leftover.tags:
            client.images.remove(leftover.id)
        # The wheels stage is kept as build cache (a second model builds in seconds) while
        # any model image is left; with the last one gone, the engine keeps nothing of ours.
        if not client.images.list(filters={"label": f"{LABEL}.model"}):
            client.images.prune(filters={"dangling": True, "label": f"{LABEL}.stage=wheels"})
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        raise PackageError(
            f"the Docker engine would not remove {image.tag}: {exc.explanation}. A container "
            "outside accel-widgets may use it (`docker ps -a`)."
        ) from None


def delete_image(
    name: str, version: int | None = None, workspace: Workspace | None = None
) -> list[ImageRecord]:
    """Remove image versions from the Docker engine and the workspace (services go first).

    The engine's copies (the local tag and the tags made for pushing) are removed; what
    was pushed stays in its registry. An image already gone from the engine is forgotten
    all the same.
    """
    workspace = workspace or Workspace()
    targets = (
        [workspace.get_image(name, version)]
        if version is not None
        else [i for i in workspace.list_images() if i.name == name]
    )
    if not targets:
        workspace.get_image(name)  # the "no image ..." error
    for image in targets:
        users = workspace.image_users(image)
        if users:
            raise DependencyError(
                f"image {image.ref} is used by service {', '.join(users)}; delete the service "
                f"first (`accel-widgets delete service {users[0]}`)"
            )
    with_tags = [i for i in targets if i.tag]
    if with_tags:
        try:
            client = docker_engine.connect(timeout=30)
        except DockerUnavailableError as exc:
            raise DockerUnavailableError(
                f"{exc}\nThe image stays in the workspace until the engine can remove it."
            ) from None
        for image in with_tags:
            _remove_from_engine(client, image)
    return workspace.delete_image(name, version)
