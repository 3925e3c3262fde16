"""Step 5, deploy: the converted model as a gRPC service; its address, key and health.

The target list and each target's form come from the target registry: a control per
declared setting (a checkbox for a flag, a number box, a text box, a drop-down for choices),
so a new target shows up here without an edit.
"""

from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as widgets
import traitlets

from accel_widgets.engine.checks.verdicts import artifact_check
from accel_widgets.engine.store import keys
from accel_widgets.engine.store.workspace import Workspace, check_name, default_order
from accel_widgets.engine.targets import (
    Setting,
    deploy_or_reuse,
    get_target,
    service_live,
    service_status,
    targets,
)
from accel_widgets.errors import AccelError
from accel_widgets.widgets.base import ProgressPanel, Step, button
from accel_widgets.widgets.state import LOST, lost_words


def mask_key(key: str | None) -> str:
    """Enough of a key to tell two apart, not enough to use it (the engine's rule)."""
    return keys.mask_key(key, none="none (loopback only, no key needed)")


#: The copy buttons look like the step's own buttons (ipywidgets' ``jupyter-button``, in
#: JupyterLab and Voila alike), small enough to sit in a table row; not a bare native button.
COPY_CLASS = "accel-copy jupyter-button"
COPY_STYLE = (
    "width:auto;height:22px;line-height:20px;padding:0 10px;margin:0 0 0 6px;font-size:12px"
)


def _copy_button(text: str, label: str) -> str:
    """An HTML button that copies ``text`` in the browser (the kernel has no clipboard)."""
    payload = html.escape(json.dumps(text), quote=True)
    return (
        f"<button class='{COPY_CLASS}' style='{COPY_STYLE}' title='Copy to the clipboard' "
        f"onclick='navigator.clipboard.writeText({payload})'>{html.escape(label)}</button>"
    )


#: Fetches a service's key from the Jupyter server extension at click time and copies it.
#: The key itself is never in the page: an ``onclick`` attribute holding it landed in the
#: notebook's saved output and widget state, readable by anyone the notebook was shared with.
_COPY_KEY_SCRIPT = (
    "(async (b) => {{"
    "const node = document.getElementById('jupyter-config-data');"
    "const config = node ? JSON.parse(node.textContent) : {{}};"
    "const base = (config.baseUrl || '/').replace(/\\/?$/, '/');"
    "const headers = config.token ? {{Authorization: 'token ' + config.token}} : {{}};"
    "try {{"
    "const r = await fetch(base + 'accel-widgets/api/services/' + {name} + '/key',"
    " {{headers, credentials: 'same-origin'}});"
    "if (!r.ok) throw new Error((await r.json()).message || r.statusText);"
    "await navigator.clipboard.writeText((await r.json()).key);"
    "b.textContent = 'copied';"
    "}} catch (e) {{"
    "b.textContent = 'run: accel-widgets services --show-key';"
    "b.title = String(e);"
    "}}"
    "}})(this)"
)


def _copy_key_button(service_name: str) -> str:
    """A button that copies the service's API key without the key being in the HTML."""
    script = _COPY_KEY_SCRIPT.format(name=json.dumps(service_name))
    return (
        f"<button class='{COPY_CLASS}' style='{COPY_STYLE}' "
        "title='Copy the API key to the clipboard (fetched from "
        f'the Jupyter server when clicked)\' onclick="{html.escape(script, quote=True)}">'
        "copy key</button>"
    )


def setting_control(setting: Setting) -> widgets.Widget:
    """One control for a declared target setting, labelled with its help text."""
    label = setting.name.replace("_", " ")
    if setting.choices:
        control = widgets.Dropdown(
            options=list(setting.choices), value=setting.default, description=label
        )
    elif setting.type is bool:
        # The help is the label here: the whole sentence, not cut at the description width.
        control = widgets.Checkbox(
            value=bool(setting.default),
            description=setting.help,
            indent=True,
            layout=widgets.Layout(width="auto"),
        )
    elif setting.type is int:
        control = widgets.IntText(value=setting.default or 0, description=label)
    elif setting.type is float:
        default = setting.current_default()  # a room's default from the environment
        control = widgets.FloatText(
            value=default if isinstance(default, float) else 0.0, description=label
        )
    else:
        control = widgets.Text(value=setting.default or "", description=label)
    control.tooltip = setting.help
    if not isinstance(control, widgets.Checkbox):
        # "ready timeout", "resource group": labels longer than the default width show whole.
        control.style.description_width = "9em"
    control.add_class(f"accel-setting-{setting.name.replace('_', '-')}")
    return control


def setting_value(setting: Setting, control: widgets.Widget) -> Any:
    """What the engine gets: ``None`` (the target decides) for an unticked or empty control."""
    value = control.value
    if setting.type is bool:
        # Unticked means False when the target has a default of its own (an unticked box
        # whose default is True must not send the default); None only where the target
        # decides (a default of None).
        if setting.default is None:
            return True if value else None
        return bool(value)
    if isinstance(value, str):
        return value.strip() or None
    return value


class DeployWidget(Step):
    """Target, its settings and a service name -> a running service (reused when it runs)."""

    css_name = "deploy"
    model = traitlets.Any(None, allow_none=True, help="ModelRecord from the Convert step")
    service = traitlets.Any(None, allow_none=True, help="the deployed ServiceRecord")

    def __init__(self, workspace: Workspace | None = None, **kwargs: Any) -> None:
        self.workspace = workspace
        self._auto_name = ""  # the service name this step filled in (not the user's own)
        self._lost: str | None = None  # the service that went away, for Check health
        self.target = widgets.Dropdown(
            options=[(t.title, t.name) for t in targets()], value="local", description="target"
        )
        self.target.add_class("accel-deploy-target")
        self.service_name = widgets.Text(description="service")
        self.service_name.add_class("accel-service-name")
        # Which artifact: the best that passed its checks unless the user picks another.
        self.precision = widgets.Dropdown(options=[], description="precision")
        self.precision.add_class("accel-deploy-precision")
        self.precision_note = widgets.HTML()
        self.precision_note.add_class("accel-precision-note")
        self.target_help = widgets.HTML()
        # One form per target, built from its declared settings; the chosen one is shown.
        self.controls: dict[str, dict[str, widgets.Widget]] = {}
        self.forms: dict[str, widgets.Box] = {}
        for target in targets():
            controls = {s.name: setting_control(s) for s in target.settings if s.ui}
            self.controls[target.name] = controls
            form = widgets.VBox(list(controls.values()))
            form.add_class(f"accel-target-form-{target.name}")
            self.forms[target.name] = form
        self.form_box = widgets.VBox()
        self.deploy_button = button("Deploy", "deploy", "primary", "rocket")
        self.health_button = button("Check health", "health", "", "heartbeat")
        self.progress = ProgressPanel()
        self.details = widgets.HTML()
        self.details.add_class("accel-service-details")
        super().__init__(
            [
                widgets.HBox([self.target, self.service_name]),
                self.target_help,
                self.precision,
                self.precision_note,
                self.form_box,
                widgets.HBox([self.deploy_button, self.health_button]),
                self.progress,
                self.details,
            ],
            **kwargs,
        )
        self.title = "5. Deploy"
        self.target.observe(self._on_target, "value")
        self.precision.observe(self._on_precision, "value")
        self.service_name.observe(self._on_name, "value")
        self._on_target()
        self.deploy_button.on_click(lambda _: self._start(self.run))
        self.health_button.on_click(lambda _: self._start(self.check_health))
        self._set_enabled(not self.locked)

    def _on_target(self, change: Any = None) -> None:
        target = get_target(self.target.value)
        self.form_box.children = (self.forms[target.name],)
        needs = " It runs the image from the Package step." if target.needs_image else ""
        self.target_help.value = f"<i>{html.escape(target.description)}.{needs}</i>"
        self._set_enabled(not self.locked and not self.busy)

    def _on_name(self, change: Any) -> None:
        """A new name is a new deploy to come: the log of the last one goes."""
        if not self.busy:
            self.progress.reset()

    def settings(self) -> dict[str, Any]:
        """The chosen target's settings as the engine takes them."""
        target = get_target(self.target.value)
        controls = self.controls[target.name]
        return {s.name: setting_value(s, controls[s.name]) for s in target.settings if s.ui}

    @traitlets.observe("model")
    def _on_model(self, change: Any) -> None:
        model = change["new"]
        self.done = False
        self.progress.reset()  # the last deploy's log belongs to the model before
        if self.service is not None:  # a service of another model is not this step's result
            self.service = None
            self.details.value = ""
            self.status = ""
        # The name follows the model unless the user typed one of their own; with no model
        # (another one chosen, not converted yet) it waits empty rather than keep the old name.
        typed = self.service_name.value.strip()
        if not typed or typed == self._auto_name:
            self.service_name.value = self._auto_name = model.name if model is not None else ""
        self._offer_precisions(model)

    def _offer_precisions(self, model: Any) -> None:
        """One option per artifact, each with its verdict; the default is what the engine
        picks when none is given (the best that passed its checks)."""
        workspace = self.workspace or Workspace()
        try:  # the model as the workspace holds it now (it may be gone already)
            record = workspace.get_model(model.name, model.version) if model else None
        except AccelError:
            record = None
        if record is None:
            self.precision.options = []
            self.precision_note.value = ""
            return
        artifacts = sorted(workspace.list_artifacts(record), key=default_order)
        options = []
        for i, artifact in enumerate(artifacts):
            check = artifact_check(artifact.report, artifact.precision)
            words = "default" if i == 0 else ("not recommended" if check.mark == "warn" else "")
            label = f"{artifact.precision} {check.symbol}".strip()
            options.append((f"{label} ({words})" if words else label, artifact.precision))
        self.precision.options = options
        self.precision.value = options[0][1] if options else None
        self._on_precision()

    def _on_precision(self, change: Any = None) -> None:
        """Say what the chosen artifact's check found when it is a warning."""
        note = ""
        if self.model is not None and self.precision.value:
            workspace = self.workspace or Workspace()
            artifact = workspace.get_artifact(self.model, precision=self.precision.value)
            check = artifact_check(artifact.report, artifact.precision)
            if check.mark == "warn":
                note = f"&#9888; {html.escape(artifact.precision)} is {html.escape(check.text)}"
        self.precision_note.value = f"<span style='color:#8a5300'>{note}</span>" if note else ""

    @traitlets.observe("service")
    def _on_service(self, change: Any) -> None:
        self._set_enabled(not self.locked and not self.busy)

    def _sync(self) -> None:
        """Lose the service (and the check mark) when it is deleted or dies elsewhere."""
        if self.busy or self.state is None:
            return
        if self.service is None:
            self._follow_lost()
            return
        service = self.service
        live = self.state.service_live(service.name)
        if live in LOST:
            self._lose(service, live)
        elif live != "unknown":
            self._show(service, live)

    def _follow_lost(self) -> None:
        """Keep the words about a lost service true while they are on screen: a delete stops
        the process before it removes the record, so a poll between the two sees it dead;
        once the record is gone the step says so (and drops the dead service's details)."""
        if self._lost is None or self.status != lost_words(self._lost, "dead"):
            return
        if self.state.service_live(self._lost) == "gone":
            self.status = lost_words(self._lost, "gone")
            self.details.value = ""

    def _lose(self, service, live: str) -> None:
        self._lost = service.name
        self.service = None
        self.done = False
        self.status = lost_words(service.name, live)
        if live == "gone":
            self.details.value = ""
        else:
            self._show(service, live)

    def _set_enabled(self, enabled: bool) -> None:
        for control in (self.target, self.service_name, self.precision, self.deploy_button):
            control.disabled = not enabled
        for controls in self.controls.values():
            for control in controls.values():
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
            # The precision chosen above (by default the best artifact that passed its
            # checks); a target that runs an image gets the newest one packaged from it
            # (the Package step's), or an error saying to package first.
            service, reused = deploy_or_reuse(
                self.model,
                precision=self.precision.value or None,
                name=name,
                target=self.target.value,
                workspace=self.workspace,
                progress=self.progress,
                cancel=self._new_cancel(),
                settings=self.settings(),
            )
        except BaseException:
            self.progress.finish(False)
            self.status = "not deployed"
            raise
        self.progress.finish(True)
        self._lost = None
        self.service = service
        if self.state is not None:
            self.state.watch(service.name)
        self._show(service, "running")
        ready = service.info.get("ready_seconds")
        timing = "already running, reused" if reused else f"ready in {ready:.1f} s"
        self.status = f"{name} is ready at {service.address}:{service.port} ({timing})"
        self.done = True
        self._set_enabled(not self.locked)
        self._refresh_state()
        return service

    def check_health(self) -> str | None:
        """Ask the service now: running, starting, unhealthy or dead."""

        def check() -> str:
            if self.service is None:
                if self._lost:  # asked now: a dead service may have been deleted since
                    raise AccelError(
                        lost_words(self._lost, service_live(self._lost, self.workspace))
                    )
                raise AccelError("deploy a service first")
            service = self.service
            live = service_live(service.name, self.workspace)
            if live in LOST:
                self._lose(service, live)
                self._refresh_state()
                raise AccelError(lost_words(service.name, live))
            status = service_status(service.name, self.workspace)
            self._show(status.service, status.shown)  # "unknown (error ...)" from a plugin
            return status.live

        return self._guarded(check)

    def _show(self, service, live: str) -> None:
        address = f"{service.address}:{service.port}"
        color = {"running": "#1b7f3b", "starting": "#9a6700"}.get(live, "#b00020")
        key_cell = html.escape(mask_key(service.key))
        if service.key:
            key_cell += " " + _copy_key_button(service.name)
        rows = [
            ("address", f"<code>{html.escape(address)}</code> {_copy_button(address, 'copy')}"),
            ("API key", key_cell),
            ("health", f"<b style='color:{color}'>{html.escape(live)}</b>"),
            ("target", html.escape(service.target)),
        ]
        if service.info.get("image"):
            container = service.info.get("container", "")
            rows.append(
                ("image", f"<code>{html.escape(service.info['image'])}</code> ({container})")
            )
        if service.info.get("ready_seconds") is not None:
            rows.append(("time to ready", f"{service.info['ready_seconds']:.1f} s"))
        self.details.value = (
            "<table>"
            + "".join(
                f"<tr><td style='padding:2px 8px'>{k}</td><td style='padding:2px 8px'>{v}</td></tr>"
                for k, v in rows
            )
            + "</table>"
        )
