"""The room: every accel-widgets service on this machine that this user can see.

A workshop runs twenty participants' services on one box, each from its own workspace, so
no workspace knows what the others hold. The room is found from the machine instead:

* **local services**: processes running ``python -m accel_widgets.serving`` (psutil); the
  config path in their command line, ``WORKSPACE/services/NAME/run-ID/config.json``, names
  the workspace and the service, and the ready file beside it the REST port, whose
  ``/metrics`` gives requests served and idle seconds (``accel_widgets_idle_seconds``);
* **container services**: running containers labelled ``io.accel-widgets.workspace`` (the
  docker SDK), when a Docker engine answers; memory from the engine's stats.

"Can see" is what the operating system shows this user: on a JupyterHub where each
participant is a Unix user, ``/proc`` mounted with ``hidepid=2`` shows each participant
their own processes only, and an instructor running ``accel-widgets room`` as root sees
everyone's (docs/ARCHITECTURE.md, "A workshop on one machine").
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.progress import Reporter
from accel_widgets.serving.config import STOPPED_FILE

#: A process is one of our servers when its command line holds this module.
SERVER_MODULE = "accel_widgets.serving"


@dataclass(frozen=True)
class RoomService:
    """One running service as the room sees it; ``None`` where it could not be read."""

    target: str  # local | container
    name: str
    workspace: str
    user: str
    pid: int | None
    rss_mb: float
    cpu_percent: float | None  # average over the service's life
    requests: int | None
    idle_seconds: float | None
    address: str
    run_folder: str | None = None  # a local server's run folder (its ready file's)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _metrics(rest_port: int | None) -> tuple[int | None, float | None]:
    """Requests served and idle seconds, from the server's ``/metrics`` on loopback."""
    if not rest_port:
        return None, None
    from prometheus_client.parser import text_string_to_metric_families

    try:
        url = f"http://127.0.0.1:{rest_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return None, None
    requests, idle = 0, None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "accel_widgets_requests_total":
                requests += int(sample.value)
            elif sample.name == "accel_widgets_idle_seconds":
                idle = float(sample.value)
    return requests, idle


def _local(process: Any) -> RoomService | None:
    import psutil

    with contextlib.suppress(psutil.Error, ValueError, IndexError):
        cmdline = process.cmdline()
        if SERVER_MODULE not in " ".join(cmdline) or "--config" not in cmdline:
            return None
        config = Path(cmdline[cmdline.index("--config") + 1])
        run = config.parent
        name, services = run.parent.name, run.parent.parent
        workspace = services.parent if services.name == "services" else run
        ready: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            ready = json.loads((run / "ready.json").read_text())
        with process.oneshot():
            rss = process.memory_info().rss / 2**20
            times = process.cpu_times()
            alive = max(time.time() - process.create_time(), 1e-3)
            cpu = 100.0 * (times.user + times.system) / alive
            user = process.username()
        requests, idle = _metrics(ready.get("rest_port"))
        host = cmdline[cmdline.index("--host") + 1] if "--host" in cmdline else "127.0.0.1"
        port = ready.get("port")
        return RoomService(
            target="local",
            name=name,
            workspace=str(workspace),
            user=user,
            pid=process.pid,
            rss_mb=round(rss, 1),
            cpu_percent=round(cpu, 1),
            requests=requests,
            idle_seconds=None if idle is None else round(idle, 1),
            address=f"{host}:{port}" if port else host,
            run_folder=str(run),
        )
    return None


def _containers() -> list[RoomService]:
    """Running accel-widgets containers, when a Docker engine answers (else none)."""
    from accel_widgets.engine.packaging.package_context import LABEL

    try:
        import docker

        client = docker.from_env(timeout=5)
        containers = client.containers.list(filters={"label": f"{LABEL}.workspace"})
    except Exception:  # no SDK, no engine, no permission: the room has no containers
        return []
    found = []
    for container in containers:
        with contextlib.suppress(Exception):
            stats = container.stats(stream=False)
            usage = stats.get("memory_stats", {}).get("usage", 0) / 2**20
            labels = container.labels
            found.append(
                RoomService(
                    target="container",
                    name=labels.get(f"{LABEL}.service", container.name),
                    workspace=labels.get(f"{LABEL}.workspace", "?"),
                    user="-",
                    pid=None,
                    rss_mb=round(usage, 1),
                    cpu_percent=None,
                    requests=None,
                    idle_seconds=None,
                    address=container.name,
                )
            )
    return found


def room_services(*, containers: bool = True) -> list[RoomService]:
    """Every accel-widgets service on this machine this user can see, largest first."""
    import psutil

    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        if (service := _local(process)) is not None:
            found.append(service)
    if containers:
        found += _containers()
    return sorted(found, key=lambda s: -s.rss_mb)


def others(workspace: Workspace) -> list[RoomService]:
    """The room's services that do not belong to ``workspace`` (for the capacity check):
    local ones name its folder, containers its id."""
    mine = (str(workspace.root.resolve()), workspace.ident)
    return [s for s in room_services() if s.workspace not in mine]


def stop_idle(
    services: list[RoomService], idle_seconds: float, report: Reporter | None = None
) -> list[RoomService]:
    """SIGTERM every local service idle for ``idle_seconds`` or more (each drains what is
    in flight and exits; its workspace reads it as stopped at the next look); the stopped."""
    import psutil

    stopped = []
    idle = [
        s
        for s in services
        if s.pid and s.idle_seconds is not None and s.idle_seconds >= idle_seconds
    ]
    for index, service in enumerate(idle):
        if report is not None:
            report("room", index / max(len(idle), 1), f"stopping {service.name}")
        if service.run_folder:  # what the service's own idle time-out would have written
            note = {"reason": "idle", "idle_seconds": service.idle_seconds, "at": time.time()}
            with contextlib.suppress(OSError):
                (Path(service.run_folder) / STOPPED_FILE).write_text(json.dumps(note))
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(service.pid)
            process.terminate()
            process.wait(15)
            stopped.append(service)
    return stopped
