"""Clean up: services, then images, then models, the order their dependencies need.

The Clean-up widget shows :func:`cleanup_plan` as a table with a delete button per row and
calls :func:`delete_item`; "delete everything" is :func:`delete_everything`. A row whose
dependants still exist says so, and deleting it anyway gets the workspace's own
:class:`~accel_widgets.errors.DependencyError` with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

from accel_widgets.engine.targets import delete_service, list_services
from accel_widgets.engine.workspace import Workspace
from accel_widgets.errors import AccelError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter
from accel_widgets.sizes import IMAGE_MB, bytes_text

KINDS = ("service", "image", "model")


@dataclass(frozen=True)
class CleanupItem:
    """One thing that can be deleted, and what must go before it."""

    kind: str  # service | image | model
    name: str
    version: int | None
    detail: str
    blocked_by: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}" + (f":{self.version}" if self.version else "")


def cleanup_plan(workspace: Workspace | None = None) -> list[CleanupItem]:
    """Everything in the workspace, services first, then images, then model versions.

    Services' states are checked live (a health call each), as :func:`list_services` does.
    """
    workspace = workspace or Workspace()
    # Checked now, so a service whose process died reads "dead", not its last recorded state.
    services = [status.service for status in list_services(workspace)]
    images = workspace.list_images()
    items: list[CleanupItem] = []
    artifact_users: dict[int, list[str]] = {}
    for service in services:
        artifact_users.setdefault(service.artifact_id, []).append(f"service {service.name}")
        where = f"{service.address}:{service.port}" if service.port else service.target
        items.append(CleanupItem("service", service.name, None, f"{service.state} at {where}"))
    for image in images:
        users = tuple(f"service {s.name}" for s in services if s.image_id == image.id)
        artifact_users.setdefault(image.artifact_id, []).append(
            f"image {image.name}:{image.version}"
        )
        size = bytes_text(int(image.info.get("size_bytes") or 0), IMAGE_MB)
        detail = f"{image.tag} ({size})" if image.tag else f"build context at {image.path}"
        items.append(CleanupItem("image", image.name, image.version, detail, users))
    for model in workspace.list_models():
        artifacts = workspace.list_artifacts(model)
        users = tuple(u for a in artifacts for u in artifact_users.get(a.id, []))
        sizes = ", ".join(f"{a.precision} {bytes_text(a.size_bytes)}" for a in artifacts)
        items.append(
            CleanupItem("model", model.name, model.version, sizes or "not converted", users)
        )
    return items


def delete_item(item: CleanupItem, workspace: Workspace | None = None) -> None:
    """Delete one row of the plan (a running service is stopped first)."""
    workspace = workspace or Workspace()
    if item.kind == "service":
        delete_service(item.name, workspace=workspace)
    elif item.kind == "image":
        from accel_widgets.engine.package import delete_image

        delete_image(item.name, item.version, workspace=workspace)
    elif item.kind == "model":
        workspace.delete_model(item.name, item.version)
    else:
        raise AccelError(f"unknown kind {item.kind!r}; one of {', '.join(KINDS)}")


def delete_everything(
    workspace: Workspace | None = None,
    *,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
) -> list[CleanupItem]:
    """Delete every service, image and model, in dependency order; what was deleted."""
    report = as_reporter(progress, cancel)
    workspace = workspace or Workspace()
    plan = cleanup_plan(workspace)
    for index, item in enumerate(plan):
        report("cleanup", index / max(1, len(plan)), f"deleting {item.label}")
        delete_item(item, workspace)
    report("cleanup", 1.0, f"deleted {len(plan)} items")
    return plan
