"""Step 4, deploy: the converted model as a gRPC service; its address, key and health."""

from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.engine.targets import TARGETS, deploy_or_reuse, service_status
from accel_widgets.engine.workspace import Workspace, check_name
from accel_widgets.errors import AccelError
from accel_widgets.widgets.base import ProgressPanel, Step, button


def mask_key(key: str | None) -> str:
    """Enough of a key to tell two apart, not enough to use it."""
    if not key:
        return "none (loopback only, no key needed)"
    return f"{key[:4]}{'•' * 8}{key[-4:]}" if len(key) > 12 else "•" * len(key)


def _copy_button(text: str, label: str) -> str:
    """An HTML button that copies ``text`` in the browser (the kernel has no clipboard)."""
    payload = html.escape(json.dumps(text), quote=True)
    return (
        f"<button class='accel-copy' title='Copy to the clipboard' "
        f"onclick='navigator.clipboard.writeText({payload})'>{html.escape(label)}</button>"
    )


class DeployWidget(Step):
    """Target, service name and auth -> a running service (reused when it already runs)."""

    css_name = "deploy"
    model = traitlets.Any(None, allow_none=True, help="ModelRecord from the Convert step")
    service = traitlets.Any(None, allow_none=True, help="the deployed ServiceRecord")

    def __init__(self, workspace: Workspace | None = None, **kwargs: Any) -> None:
        self.workspace = workspace
        self.target = widgets.Dropdown(options=list(TARGETS), value="local", description="target")
        self.service_name = widgets.Text(description="service")
        self.service_name.add_class("accel-service-name")
        self.auth = widgets.Checkbox(value=False, description="require an API key")
        self.auth.add_class("accel-auth")
        self.deploy_button = button("Deploy", "deploy", "primary", "rocket")
        self.health_button = button("Check health", "health", "", "heartbeat")
        self.progress = ProgressPanel()
        self.details = widgets.HTML()
        self.details.add_class("accel-service-details")
        super().__init__(
            [
                widgets.HBox([self.target, self.service_name]),
                self.auth,
                widgets.HBox([self.deploy_button, self.health_button]),
                self.progress,
                self.details,
            ],
            **kwargs,
        )
        self.title = "4. Deploy"
        self.deploy_button.on_click(lambda _: self._start(self.run))
        self.health_button.on_click(lambda _: self._start(self.check_health))
        self._set_enabled(not self.locked)

    @traitlets.observe("model")
    def _on_model(self, change: Any) -> None:
        model = change["new"]
        self.done = False
        if model is not None and not self.service_name.value:
            self.service_name.value = model.name

    def _set_enabled(self, enabled: bool) -> None:
        for control in (self.target, self.service_name, self.auth, self.deploy_button):
            control.disabled = not enabled
        self.health_button.disabled = not enabled or self.service is None

    def run(self):
        """Deploy (synchronously) and show where the service answers."""
        return self._guarded(self._deploy)

    def _deploy(self):
        if self.model is None:
            raise AccelError("convert a model in the step above first")
        name = check_name(self.service_name.value.strip() or self.model.name, "service")
        self.progress.reset()
        self.status = f"deploying {name}..."
        try:
            # No precision: the engine serves INT8 when the model has it, else float.
            service, reused = deploy_or_reuse(
                self.model.name,
                version=self.model.version,
                name=name,
                target=self.target.value,
                auth=self.auth.value,
                workspace=self.workspace,
                progress=self.progress,
                cancel=self._new_cancel(),
            )
        except BaseException:
            self.progress.finish(False)
            self.status = "not deployed"
            raise
        self.progress.finish(True)
        self.service = service
        self._show(service, "running")
        ready = service.info.get("ready_seconds")
        timing = "already running, reused" if reused else f"ready in {ready:.2f} s"
        self.status = f"{name} is ready at {service.address}:{service.port} ({timing})"
        self.done = True
        self._set_enabled(not self.locked)
        return service

    def check_health(self) -> str | None:
        """Ask the service now: running, starting, unhealthy or dead."""

        def check() -> str:
            if self.service is None:
                raise AccelError("deploy a service first")
            status = service_status(self.service.name, self.workspace)
            self._show(status.service, status.live)
            return status.live

        return self._guarded(check)

    def _show(self, service, live: str) -> None:
        address = f"{service.address}:{service.port}"
        color = {"running": "#1b7f3b", "starting": "#9a6700"}.get(live, "#b00020")
        key_cell = html.escape(mask_key(service.key))
        if service.key:
            key_cell += " " + _copy_button(service.key, "copy key")
        rows = [
            ("address", f"<code>{html.escape(address)}</code> {_copy_button(address, 'copy')}"),
            ("API key", key_cell),
            ("health", f"<b style='color:{color}'>{html.escape(live)}</b>"),
            ("target", html.escape(service.target)),
        ]
        if service.info.get("ready_seconds") is not None:
            rows.append(("time to ready", f"{service.info['ready_seconds']:.2f} s"))
        self.details.value = (
            "<table>"
            + "".join(
                f"<tr><td style='padding:2px 8px'>{k}</td><td style='padding:2px 8px'>{v}</td></tr>"
                for k, v in rows
            )
            + "</table>"
        )
