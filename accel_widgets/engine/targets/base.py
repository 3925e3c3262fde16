"""What a deployment target is: its settings, and deploy / status / logs / delete.

A target is a small object that declares the settings it takes (each with a type, a default
and help text) and implements four calls. The registry in ``targets/__init__.py`` holds one
instance per name; the CLI builds its ``deploy`` flags, and the Deploy widget its form, from
the declared settings, so a new target is an addition (a module and a registration, or a
plugin's ``accel_widgets.targets`` entry point), never an edit of the widgets or the CLI.

A target's settings reach it as one mapping (``settings``), never mixed into the keyword
arguments of ``deploy()``; the names ``deploy()`` and the command line use themselves
(:data:`RESERVED_SETTINGS`) are refused when a target is registered, so a plugin cannot
shadow ``--version`` or ``image``.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ImageRecord,
    ServiceRecord,
    Workspace,
)
from accel_widgets.engine.targets.capacity import QuotaReport
from accel_widgets.engine.targets.machine import MachineCapacity
from accel_widgets.errors import ServingError
from accel_widgets.progress import Reporter
from accel_widgets.serving.addresses import is_loopback
from accel_widgets.serving.config import RUNTIMES

#: Live states a target reports for a service.
LIVE_STATES = ("running", "starting", "unhealthy", "dead", "unknown")

#: Names a setting may not have: the parameters of ``targets.deploy()`` / ``manifests()``
#: and the flags of the ``deploy``, ``manifests`` and ``quota`` commands, which target
#: settings share a command line with (``subscription`` is the quota command's own flag
#: and the azureml target's setting at once, on purpose: the quota command passes it on).
RESERVED_SETTINGS = frozenset(
    {
        "cancel",
        "command",
        "family",
        "help",
        "image",
        "model",
        "name",
        "needed",
        "out",
        "precision",
        "progress",
        "region",
        "settings",
        "show_key",
        "target",
        "version",
        "workspace",
    }
)


@dataclass(frozen=True)
class Setting:
    """One thing a target lets the user choose.

    ``type`` is ``str``, ``int``, ``float`` or ``bool``; ``None`` as the default means "the
    target decides" (a free port, auth on beyond loopback...). ``choices`` limits a string.
    ``ui=False`` keeps a setting for Python callers only (a TLS key pair, a preset key):
    the widget and the CLI do not offer it.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    ui: bool = True
    #: Whether the quota step takes it: a setting that sizes a deployment or says where it
    #: runs (replicas, an instance type, a cluster context) does; how it is reached once it
    #: runs (a bind address, a port, a key, a wait) does not.
    capacity: bool = True
    #: An environment variable that sets the default for everyone on this machine (a
    #: workshop room sets ``ACCEL_WIDGETS_IDLE_TIMEOUT`` once); forms show its value.
    env: str | None = None

    def current_default(self) -> Any:
        """The default now: the ``env`` variable's value when it is set, else ``default``
        (as text when it is not of the setting's type: the deploy reports it then)."""
        if self.env and (value := os.environ.get(self.env, "").strip()):
            try:
                return self.type(value)
            except (TypeError, ValueError):
                return value
        return self.default

    @property
    def flag(self) -> str:
        """The command-line spelling: ``ready_timeout`` -> ``--ready-timeout``."""
        return "--" + self.name.replace("_", "-")

    def coerce(self, value: Any, target: str) -> Any:
        """``value`` as this setting's type, or a :class:`ServingError` that names the setting."""
        if value is None or not self.ui:
            return value
        try:
            if self.type is bool:
                if isinstance(value, str):
                    lowered = value.strip().lower()
                    if lowered not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                        raise ValueError(value)
                    value = lowered in ("true", "yes", "1", "on")
                else:
                    value = bool(value)
            else:
                value = self.type(value)
        except (TypeError, ValueError):
            raise ServingError(
                f"setting {self.name}={value!r} of the {target} target must be a "
                f"{self.type.__name__}: {self.help}"
            ) from None
        if self.choices and value not in self.choices:
            raise ServingError(
                f"setting {self.name}={value!r} of the {target} target must be one of "
                f"{', '.join(self.choices)}"
            )
        return value


class Target(ABC):
    """One place a service can run. Subclasses set the class attributes and the four calls.

    ``capacity`` names the registered capacity check that applies before deploying here
    (:mod:`~accel_widgets.engine.targets.capacity`; ``local``: this machine's memory, disk and
    cores, the default; ``azure``: a region's vCPU quota), so the quota step offers every
    target without knowing any of them.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    settings: ClassVar[tuple[Setting, ...]] = ()
    capacity: ClassVar[str] = MachineCapacity.name
    needs_image: ClassVar[bool] = False
    #: Whether ``deploy`` of a recorded name restarts it in place (dead) or swaps in the new
    #: version (running); targets without it refuse a recorded name ("delete it first").
    replaces_in_place: ClassVar[bool] = False

    def setting(self, name: str) -> Setting:
        for setting in self.settings:
            if setting.name == name:
                return setting
        raise ServingError(self._unknown_settings([name]))

    def _unknown_settings(self, names: list[str]) -> str:
        offered = ", ".join(s.name for s in self.settings) or "none"
        return (
            f"the {self.name} target has no setting {', '.join(sorted(names))}; "
            f"its settings: {offered}"
        )

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared setting: the given value (checked and coerced) or the default.

        A setting this target does not declare is refused with the list it does take, so
        ``--replicas 2`` on the local target says so instead of being silently ignored.
        """
        unknown = [k for k, v in given.items() if v is not None and k not in self._names()]
        if unknown:
            raise ServingError(self._unknown_settings(unknown))
        resolved = {}
        for setting in self.settings:
            value = given.get(setting.name)
            resolved[setting.name] = (
                setting.default if value is None else setting.coerce(value, self.name)
            )
        return resolved

    def _names(self) -> set[str]:
        return {s.name for s in self.settings}

    def describe(self) -> dict[str, Any]:
        """The target as JSON (for the sidebar's REST API and ``accel-widgets targets``)."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "capacity": self.capacity,
            "needs_image": self.needs_image,
            "settings": [
                {
                    "name": s.name,
                    "type": s.type.__name__,
                    "default": s.default,
                    "help": s.help,
                    "choices": list(s.choices),
                }
                for s in self.settings
                if s.ui
            ],
        }

    @abstractmethod
    def deploy(
        self,
        workspace: Workspace,
        artifact: ArtifactRecord,
        name: str,
        *,
        image: ImageRecord | None,
        settings: dict[str, Any],
        report: Reporter,
        image_reference: str | None = None,
    ) -> ServiceRecord:
        """Start the service, wait until it answers, and return its workspace record.

        ``image`` is the workspace image to run (for targets with ``needs_image``), and
        ``image_reference`` the registry reference the caller named (``REGISTRY/path:tag``),
        when it named one: a cluster pulls from a registry, never from this engine.
        """

    def manifests(
        self,
        workspace: Workspace,
        artifact: ArtifactRecord,
        name: str,
        *,
        image: ImageRecord | None,
        settings: dict[str, Any],
        image_reference: str | None = None,
    ) -> list[dict[str, Any]]:
        """The objects ``deploy`` would create, as plain dicts (YAML for kubectl or GitOps).

        Only targets that apply declarative objects have them.
        """
        raise ServingError(
            f"the {self.name} target creates no manifests; targets that do: kubernetes, kserve"
        )

    def check_capacity(
        self, settings: dict[str, Any], report: Reporter, **options: Any
    ) -> QuotaReport | None:
        """What a deployment with ``settings`` needs, checked where this target runs.

        ``options`` are the quota step's own (``region``, ``subscription_id``,
        ``credential``, ``endpoint``, ``timeout``). ``None`` means "run the ``capacity``
        check as it is" (this machine's, or Azure's for the given family).
        """
        del settings, report, options
        return None

    def reconcile(self, workspace: Workspace, service: ServiceRecord) -> ServiceRecord | None:
        """The record brought in line with what is live, or None when nothing of the
        service is left (a deploy that died before anything served). Called whenever a
        service is read; the default trusts the record."""
        del workspace
        return service

    @abstractmethod
    def status(self, workspace: Workspace, service: ServiceRecord) -> str:
        """One of :data:`LIVE_STATES`, checked now."""

    def stop_reason(self, workspace: Workspace, service: ServiceRecord) -> str | None:
        """Why a service that is no longer running stopped, when it stopped by itself (an
        idle time-out: ``idle: no request for 600 s``); None when nothing says."""
        del workspace, service
        return None

    @abstractmethod
    def logs(self, workspace: Workspace, service: ServiceRecord, lines: int = 50) -> str:
        """The service's last ``lines`` log lines."""

    @abstractmethod
    def delete(self, workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
        """Stop the service, remove what the target made for it, and forget it."""


# -- helpers that several targets share --------------------------------------------------


#: The server's runtime, for the targets that start our server with their own config
#: (local) or override an image's (container, through ``ACCEL_WIDGETS_RUNTIME``).
RUNTIME_SETTING = Setting(
    "runtime",
    str,
    "auto",
    "auto measures ONNX Runtime and OpenVINO at start-up and keeps the faster",
    choices=RUNTIMES,
)


#: How long a service may go without a scoring request before it stops itself, for the
#: targets that run our server (local, container). ``None`` takes the room's default,
#: ``$ACCEL_WIDGETS_IDLE_TIMEOUT`` (set once for a workshop), else 0: never.
IDLE_TIMEOUT_SETTING = Setting(
    "idle_timeout",
    float,
    None,
    "stop the service after this many seconds without a request; 0: never "
    "(default: $ACCEL_WIDGETS_IDLE_TIMEOUT, else 0)",
    env="ACCEL_WIDGETS_IDLE_TIMEOUT",
)


def idle_timeout(settings: Mapping[str, Any], target: str) -> float:
    """The deploy's idle time-out in seconds: the setting, else the room's default."""
    value = settings.get("idle_timeout")
    where = f"setting idle_timeout of the {target} target"
    if value is None:
        value = os.environ.get("ACCEL_WIDGETS_IDLE_TIMEOUT") or 0
        where = "ACCEL_WIDGETS_IDLE_TIMEOUT"
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ServingError(f"{where} must be a number of seconds; got {value!r}") from None
    if not seconds >= 0:
        raise ServingError(f"{where} must be 0 (never) or more seconds; got {value!r}")
    return seconds


def pushed_reference(
    image: ImageRecord, requested: str | None = None, artifact: ArtifactRecord | None = None
) -> str:
    """The registry reference a remote target pulls: the one asked for, or the newest push.

    A cluster or a cloud service cannot pull from this machine's Docker engine: an image
    that was never pushed is refused with the command that pushes it (``artifact``, the
    model the image holds, makes that command exact: the image's name need not be the
    model's).
    """
    pushed = [p["ref"] for p in image.info.get("pushed", [])]
    if requested and "/" in requested and requested != image.tag:
        return requested
    if pushed:
        return pushed[-1]
    model = (
        f"{artifact.model_name} --version {artifact.model_version} --precision {artifact.precision}"
        if artifact is not None
        else "MODEL"
    )
    raise ServingError(
        f"image {image.ref} ({image.tag}) was never pushed, and a remote target cannot pull "
        f"from this machine: push it first (`accel-widgets package {model} --name "
        f"{image.name} --push REGISTRY/PATH`), then deploy with --image REGISTRY/PATH/"
        f"{image.name}:{image.version}"
    )


def same_settings(existing: ServiceRecord, settings: Mapping[str, Any]) -> bool:
    """Whether a recorded service was deployed with the (resolved) ``settings`` asked now.

    ``host`` is compared with the address, ``port`` unless 0 (any free port), ``auth``
    unless None (the target decides), ``tls`` as on or off, and every other setting with
    what was recorded at deploy time; the key and the time-out never count.
    """
    recorded = existing.info.get("settings", {})
    for key, value in settings.items():
        if key in ("key", "ready_timeout"):
            continue
        if key == "host":
            same = existing.address == value
        elif key == "port":
            same = value in (0, None, existing.port)
        elif key == "auth":
            same = value is None or bool(existing.key_hash or existing.key) == value
        elif key == "tls":
            same = existing.use_ssl == bool(value)
        else:
            same = value is None or recorded.get(key) == value
        if not same:
            return False
    return True


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (so a server could bind it now)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for servers that cannot report the port they bound)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def check_exposure(host: str, auth: bool | None) -> bool:
    """Whether the service needs a key: on beyond loopback, and never off there."""
    if auth is None:
        auth = not is_loopback(host)
    if not auth and not is_loopback(host):
        raise ServingError(
            f"a service bound to {host} is reachable from other machines: keep authentication "
            "on (auth=True), or bind to 127.0.0.1"
        )
    return auth


def health_state(service: ServiceRecord, timeout: float = 2.0) -> str:
    """``running`` when the service's gRPC health service says SERVING, else ``unhealthy``."""
    from accel_widgets.engine.clients.grpc_client import PredictionClient

    with PredictionClient(
        service.address,
        service.port,
        use_ssl=service.use_ssl,
        access_token=service.key,
        service_name=service.name,
        timeout=timeout,
    ) as client:
        return "running" if client.is_ready(timeout=timeout) else "unhealthy"
