"""Step 4, package: the converted model in a container image, built by the Docker engine."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.engine.packaging.package import package, pull_error_words
from accel_widgets.engine.packaging.package_context import default_base
from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.errors import AccelError, PackageError
from accel_widgets.sizes import IMAGE_MB, bytes_text
from accel_widgets.widgets.base import ProgressPanel, Step, button


class PackageWidget(Step):
    """Base image, optional registry and archive -> a built image (reused when unchanged).

    Optional in the walk: the local target runs the converted model without an image; the
    container target (and the cluster targets) run the image made here.
    """

    css_name = "package"
    model = traitlets.Any(None, allow_none=True, help="ModelRecord from the Convert step")
    image = traitlets.Any(None, allow_none=True, help="the packaged ImageRecord")

    def __init__(self, workspace: Workspace | None = None, **kwargs: Any) -> None:
        self.workspace = workspace
        self.intro = widgets.HTML(
            "<i>Optional for this machine: the <b>container</b> target and clusters run the "
            "image built here. Needs a Docker engine.</i>"
        )
        self.base = widgets.Text(value=default_base(), description="base image")
        self.base.add_class("accel-package-base")
        self.push = widgets.Text(
            value="", description="push to", placeholder="registry/path (optional)"
        )
        self.push.add_class("accel-package-push")
        self.save = widgets.Text(value="", description="save to", placeholder="file.tar (optional)")
        self.save.add_class("accel-package-save")
        self.package_button = button("Build image", "package", "primary", "cube")
        self.cancel_button = button("Cancel", "package-cancel", "warning", "stop")
        self.cancel_button.disabled = True
        self.progress = ProgressPanel()
        self.details = widgets.HTML()
        self.details.add_class("accel-image-details")
        super().__init__(
            [
                self.intro,
                self.base,
                widgets.HBox([self.push, self.save]),
                widgets.HBox([self.package_button, self.cancel_button]),
                self.progress,
                self.details,
            ],
            **kwargs,
        )
        self.title = "4. Package"
        self.package_button.on_click(lambda _: self._start(self.run))
        self.cancel_button.on_click(lambda _: self.cancel())

    @traitlets.observe("model")
    def _on_model(self, change: Any) -> None:
        self.done = False
        self.image = None
        self.details.value = ""
        self.status = ""

    def _sync(self) -> None:
        """Reopen when the image is deleted elsewhere."""
        if self.busy or self.state is None or self.image is None:
            return
        if not self.state.has_image(self.image):
            ref = self.image.ref
            self.image = None
            self.details.value = ""
            self.done = False
            self.status = f"image {ref} was deleted; build it again"

    def _set_enabled(self, enabled: bool) -> None:
        for control in (self.base, self.push, self.save, self.package_button):
            control.disabled = not enabled
        self.cancel_button.disabled = not self.busy

    def run(self):
        """Build (synchronously) and show the image's name, size and id."""
        return self._guarded(self._package)

    def _package(self):
        if self.model is None:
            raise AccelError("convert a model in the step above first")
        self.progress.reset()
        self.details.value = ""  # never leave an earlier image on screen after a failure
        self.image = None
        self.status = f"packaging {self.model.ref}..."
        base = self.base.value.strip() or default_base()
        try:
            image = package(
                self.model,
                base=base,
                push=self.push.value.strip() or None,
                save=self.save.value.strip() or None,
                workspace=self.workspace,
                progress=self.progress,
                cancel=self._new_cancel(),
            )
        except PackageError as exc:
            self.progress.finish(False)
            self.status = "not packaged"
            reason = getattr(exc, "pull_reason", None)
            if reason is None:
                raise
            # The way out in this form's words: its "base image" field, not the CLI's --base.
            raise PackageError(
                pull_error_words(base, reason, base_setting=self.base.description)
            ) from None
        except BaseException:
            self.progress.finish(False)
            self.status = "not packaged"
            raise
        self.progress.finish(True)
        self._show(image)
        self.image = image
        how = "reused" if image.info.get("reused") else f"built in {image.info['build_seconds']} s"
        self.status = f"{image.tag} is ready ({how})"
        self.done = True
        self._refresh_state()
        return image

    def _show(self, image) -> None:
        info = image.info
        rows = [
            ("image", f"<code>{html.escape(info['tag'])}</code>"),
            ("size", bytes_text(int(info["size_bytes"]), IMAGE_MB)),
            ("id", f"<code>{html.escape(info['image_id'][:19])}</code>"),
            ("base", html.escape(f"{info['base']} (Python {info.get('python', '?')})")),
        ]
        for pushed in info.get("pushed", []):
            rows.append(("pushed", f"<code>{html.escape(pushed['ref'])}</code>"))
        for saved in info.get("saved", []):
            rows.append(("saved", f"<code>{html.escape(saved['path'])}</code>"))
        self.details.value = (
            "<table>"
            + "".join(
                f"<tr><td style='padding:2px 8px'>{k}</td><td style='padding:2px 8px'>{v}</td></tr>"
                for k, v in rows
            )
            + "</table>"
        )
