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

Several workspaces share one engine (the users of a workshop box, test runs), so the engine's
names carry the workspace's readable id (:attr:`Workspace.ident`): images are
``accel-widgets/<id>/<image name>:<version>``, and the build's wheels stage is kept as
``accel-widgets/<id>/wheels:<base>`` (the cache that makes the next image take seconds, never
a dangling ``<none>`` image). A tag is only a name any build can take: an image is known by
the id recorded when it was built, and a delete removes only names that still point at it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accel_widgets.engine.packaging import docker_engine
from accel_widgets.engine.packaging.package_context import (
    DEFAULT_BASE,
    BuildContext,
    default_base,
    write_context,
)
from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ImageRecord,
    ModelRecord,
    Workspace,
    check_name,
    make_private,
)
from accel_widgets.errors import (
    DependencyError,
    DockerUnavailableError,
    NotFoundError,
    PackageError,
)
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

__all__ = [
    "DEFAULT_BASE",
    "ImageStatus",
    "delete_image",
    "ensure_local",
    "list_images",
    "package",
    "package_command",
    "push_image",
    "repository_for",
    "save_image",
]

#: Local image names: ``accel-widgets/<workspace id>/<image name>:<image version>``.
REPOSITORY = "accel-widgets"
#: A build's step output naming the image that step made (Docker's classic builder).
_STEP_IMAGE = re.compile(r"^\s*---> ([0-9a-f]{12})$")
_STEP_FROM = re.compile(r"^Step \d+/\d+ : FROM ", re.IGNORECASE)


def repository_for(name: str, workspace: Workspace) -> str:
    """``accel-widgets/alice-3f9a2c1b/resnet50``: the image name, in its workspace's space."""
    return f"{REPOSITORY}/{workspace.ident}/{name}"


def wheels_tag(workspace: Workspace, base: str) -> str:
    """The name the build's wheels stage keeps in this workspace, one per base image."""
    slug = re.sub(r"[^a-z0-9_.-]+", "-", base.lower()).strip("-.")[:100] or "base"
    return f"{REPOSITORY}/{workspace.ident}/wheels:{slug}"


def package_command(workspace: Workspace, image: ImageRecord, extra: str = "") -> str:
    """The ``accel-widgets package`` command that makes (or reuses) ``image`` again: the
    model, version and precision it holds, and its image name, which may differ from the
    model's."""
    try:
        artifact = workspace.get_artifact_by_id(image.artifact_id)
    except NotFoundError:
        return f"accel-widgets package MODEL --name {image.name}{extra}"
    return (
        f"accel-widgets package {artifact.model_name} --version {artifact.model_version} "
        f"--precision {artifact.precision} --name {image.name}{extra}"
    )


#: the base image scripts/make_base_image.sh makes without a registry
LOCAL_BASE = "local/debian-py:bookworm"
_DOCKER_URL = re.compile(r"\s*for url: http\+docker://\S+|http\+docker://\S+")


def _docker_reason(exc: BaseException) -> str:
    """What the Docker engine said, without the SDK's ``http+docker://...`` request URL:
    an APIError's explanation ("pull access denied...", "no such host") when it has one."""
    reason = getattr(exc, "explanation", None) or str(exc)
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    reason = _DOCKER_URL.sub("", str(reason)).strip()
    return reason[:300] or type(exc).__name__


def pull_error_words(base: str, reason: str, *, base_setting: str | None = None) -> str:
    """Why the base image could not be had and the two ways out, in the caller's words:
    the command line's ``--base`` flag, or ``base_setting`` (a widget's field) when given."""
    use = (
        f'then put {LOCAL_BASE} in the "{base_setting}" field'
        if base_setting
        else f"then --base {LOCAL_BASE}"
    )
    return (
        f"the base image {base} is not on this machine and could not be pulled ({reason}). "
        f"Pull it where a registry is reachable (`docker pull {base}`), or make one without "
        f"a registry (`bash scripts/make_base_image.sh`, {use})."
    )


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
            error = PackageError(pull_error_words(base, _docker_reason(exc)))
            error.pull_reason = _docker_reason(exc)  # for a front end's own words
            raise error from None
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
    model: str | ModelRecord | ArtifactRecord,
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
        The workspace model and which artifact (when ``precision`` is None, the one deploy
        would take: a recommended INT8, else fp32; see ``workspace.default_order``);
        ``model`` may be the record the step before handed on (ModelRecord, ArtifactRecord).
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
        make_private(folder)  # in the workspace like the rest: 0700 folders, 0600 files
        raise DockerUnavailableError(
            f"{exc}\nThe build context is written to {folder}; to build it on a machine with "
            f"Docker (its files are private to you: the tar command makes them readable in "
            f"the image): tar -C {folder} --owner=0 --group=0 --mode=a+rX -c . | docker build "
            f"--build-arg BASE={base} -t {repository_for(name, workspace)}:1 -"
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


def _context_tar(folder: Path) -> Any:
    """The build context as a tar file for the engine, every file readable in the image.

    The workspace keeps its files private (0600; the model file is a hard link to the
    artifact), and ``COPY`` keeps the modes it is given, so the server's user in the image
    could not read them: in the tar they are root's, 0644 (folders 0755).
    """
    handle = tempfile.TemporaryFile(prefix="accel-widgets-context-")  # noqa: SIM115 (returned)
    with tarfile.open(fileobj=handle, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isdir():
                info.mode = 0o755
                tar.addfile(info)
            elif info.isfile():
                info.mode = 0o644
                with open(path, "rb") as data:
                    tar.addfile(info, data)
    handle.seek(0)
    return handle


def _keep_wheels_stage(client: Any, workspace: Workspace, base: str, stage_id: str | None) -> None:
    """Tag the build's wheels stage as this workspace's, and drop the one it replaces.

    Untagged, the stage (the venv with ONNX Runtime and OpenVINO, ~610 MB) would stay as a
    dangling ``<none>`` image after every build, which ``docker image prune`` deletes and
    nothing of ours accounts for. Tagged, it is the cache the next build of any model on
    this base reuses, and it goes with the workspace's last image (:func:`delete_image`).
    """
    import docker

    if not stage_id:
        return
    tag = wheels_tag(workspace, base)
    repository, _, name = tag.rpartition(":")
    try:
        previous = _engine_image(client, tag)
        stage = client.images.get(stage_id)
        stage.tag(repository, name)
        if previous is not None and previous.id != stage.id:
            _remove_if_unnamed(client, previous.id)  # the stage this one replaces
    except docker.errors.APIError:
        pass  # in use by another build or container: the engine keeps it, named or not


def _remove_if_unnamed(client: Any, reference: str | None, *, tries: int = 1) -> None:
    """Remove an image no name holds; one that a name, a child image or a build still holds
    stays. ``tries`` > 1 waits out a cancelled build the engine is still winding down."""
    import docker

    for attempt in range(tries):
        try:
            found = _engine_image(client, reference)
            if found is not None and not found.tags:
                client.images.remove(found.id)
            return
        except docker.errors.ImageNotFound:
            return
        except docker.errors.APIError:
            if attempt + 1 < tries:
                time.sleep(0.5)


def _settle_failed_build(
    client: Any,
    workspace: Workspace,
    context: BuildContext,
    scratch_tag: str,
    stage_id: str | None,
    last_step: str | None,
) -> None:
    """Remove what a failed or cancelled build left, so nothing stays that no clean-up finds.

    The engine keeps each finished step's image. The wheels stage is complete once the final
    stage starts, and it is the cache that makes the next try take seconds, but only this
    workspace's name on it lets clean-up find it (that name goes with the workspace's last
    image): a workspace that holds an image names it, one that holds none gets its ~610 MB
    back now (unless another workspace's name keeps it). The scratch name goes, and so does
    the last step's image with its unnamed parents (a step image another build still uses
    has children, and the engine refuses).
    """
    import docker

    with contextlib.suppress(docker.errors.APIError):
        client.images.remove(scratch_tag)  # a build that ended as it was cancelled
    if stage_id and any(image.tag for image in workspace.list_images()):
        _keep_wheels_stage(client, workspace, context.base, stage_id)
    else:
        _remove_if_unnamed(client, stage_id, tries=20)
    _remove_if_unnamed(client, last_step)


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

    repository = repository_for(name, workspace)
    scratch_tag = f"{repository}:build-{context.digest[7:19]}"
    report("package", 0.0, f"building {repository} on {context.base}")
    started = time.monotonic()
    stage_id = None
    stream = None
    froms, last = 0, None
    try:
        with _context_tar(context.path) as tar:
            stream = client.api.build(
                fileobj=tar,
                custom_context=True,
                tag=scratch_tag,
                buildargs={"BASE": context.base},
                rm=True,
                forcerm=True,
                pull=False,
                nocache=no_cache,
                decode=True,
            )
            for line in docker_engine.build_lines(stream, report):
                if _STEP_FROM.match(line):
                    froms += 1
                    if froms == 2:  # the final stage starts: the wheels stage is done
                        stage_id = last
                elif found := _STEP_IMAGE.match(line):
                    last = found.group(1)
        built = client.images.get(scratch_tag)
    except BaseException as exc:  # a failed or cancelled build, after its wheels stage or not
        if stream is not None:
            stream.close()  # drops the connection: the engine stops a build whose client left
        _settle_failed_build(client, workspace, context, scratch_tag, stage_id, last)
        if isinstance(exc, docker.errors.APIError):
            raise PackageError(f"the Docker engine refused the build: {exc.explanation}") from None
        raise
    _keep_wheels_stage(client, workspace, context.base, stage_id)
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
        "wheels": wheels_tag(workspace, context.base) if stage_id else None,
    }
    # The context folder becomes the image's folder in the workspace (files first, row last).
    try:
        image = workspace.register_image(name, artifact, context.path, info=info)
    except BaseException:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(scratch_tag, noprune=False)
        raise
    tag = f"{repository}:{image.version}"
    built.tag(repository, str(image.version))
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
    local = ensure_local(client, image, report, workspace)
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
    ensure_local(client, image, report, workspace)
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
    """Whether an engine image is the recorded one: by the id recorded at build time.

    Never by tag, nor by labels alone: a tag is a name any build can take (another
    workspace on the same engine, a rebuild by hand), and another workspace's build of the
    same model file carries the same model labels.
    """
    return engine_image is not None and engine_image.id == image.info.get("image_id")


def _engine_image(client: Any, reference: str | None) -> Any | None:
    import docker

    if not reference:
        return None
    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def ensure_local(
    client: Any, image: ImageRecord, report: Reporter, workspace: Workspace | None = None
) -> Any:
    """The engine's image for ``image``, found by its recorded id (its tag put back on it
    when the tag was removed or moved), or pulled back from where it was pushed when it was
    removed from the engine meanwhile."""
    import docker

    if not image.tag:
        raise PackageError(f"image {image.ref} was never built; package it again")
    repository, _, tag = image.tag.rpartition(":")
    tagged = _engine_image(client, image.tag)
    by_id = _engine_image(client, image.info.get("image_id"))
    if by_id is not None:
        if not holds(tagged, image):
            by_id.tag(repository, tag)  # our name back on our image
        return by_id
    errors = []
    for entry in reversed(image.info.get("pushed") or []):
        reference = entry["ref"]
        pushed_repository, _, pushed_tag = reference.rpartition(":")
        report("pull", 0.0, f"{image.tag} is gone from this engine; pulling {reference}")
        try:
            docker_engine.follow_transfer(
                client.api.pull(pushed_repository, tag=pushed_tag, stream=True, decode=True),
                report,
                "pull",
            )
            pulled = client.images.get(reference)
        except (PackageError, docker.errors.APIError) as exc:
            errors.append(f"{reference}: {str(exc).strip()[:200]}")
            continue
        if not holds(pulled, image):
            errors.append(f"{reference}: holds another image now ({pulled.short_id})")
            continue
        pulled.tag(repository, tag)
        report("pull", 1.0, f"pulled {reference}")
        return pulled
    where = ("; pulling failed: " + "; ".join(errors)) if errors else " and was never pushed"
    if tagged is not None:
        where = f" (the tag now names another image, {tagged.short_id}){where}"
    again = (
        f"`{package_command(workspace, image)}`"
        if workspace is not None
        else f"`accel-widgets package MODEL --name {image.name}`"
    )
    raise PackageError(
        f"the image {image.tag} ({image.ref} in the workspace) is no longer in the Docker "
        f"engine: it was removed outside accel-widgets{where}. Package the model again "
        f"({again}), or load a saved archive with `docker load -i FILE`."
    )


def _present(client: Any, image: ImageRecord) -> bool:
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


def _remove_from_engine(client: Any, workspace: Workspace, image: ImageRecord) -> None:
    """Untag what names this image, then remove the image once no name is left on it.

    A tag that now names another image (a rebuild, another workspace) is left alone, and so
    is an identical build that another name still holds. With the workspace's last image,
    its wheels stages go (the names this workspace gave them; another workspace's name on
    the same stage keeps it).
    """
    import docker

    references = [image.tag, *(p["ref"] for p in image.info.get("pushed", []))]
    try:
        for reference in references:
            found = _engine_image(client, reference)
            if holds(found, image):
                client.images.remove(reference)
        leftover = _engine_image(client, image.info.get("image_id"))
        if leftover is not None and not leftover.tags:
            client.images.remove(leftover.id)
        others = [i for i in workspace.list_images() if i.id != image.id and i.tag]
        if not others:
            _remove_wheels_stages(client, workspace)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        raise PackageError(
            f"the Docker engine would not remove {image.tag}: {exc.explanation}. A container "
            "outside accel-widgets may use it (`docker ps -a`)."
        ) from None


def _remove_wheels_stages(client: Any, workspace: Workspace) -> None:
    """Remove this workspace's wheels-stage names (and the stages no other name holds)."""
    import docker

    for stage in client.images.list(name=f"{REPOSITORY}/{workspace.ident}/wheels"):
        for tag in stage.tags:
            if tag.startswith(f"{REPOSITORY}/{workspace.ident}/wheels:"):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag)


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
            _remove_from_engine(client, workspace, image)
    return workspace.delete_image(name, version)
