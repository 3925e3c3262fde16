"""The cluster's capacity: the nodes' ``status.allocatable`` and the requests of the pods on them,
against replicas x the requests the manifests give the model's pods (the quota step's check,
:meth:`~accel_widgets.engine.targets.k8s.cluster.ClusterTarget.check_capacity`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    Workspace,
)
from accel_widgets.engine.targets.capacity import QuotaRow
from accel_widgets.engine.targets.k8s.api import Kube
from accel_widgets.engine.targets.k8s.manifests import GPU_RESOURCE
from accel_widgets.errors import ServingError

# -- capacity: the cluster's allocatable CPU, memory and GPUs against the requests ----------

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<exponent>[eE][+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$"
)
_SCALE = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
    "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50,
    "Ei": 2.0**60,
}  # fmt: skip
_GIB = 2**30
#: The resources the capacity check counts, in whole units: millicores, bytes, GPUs.
COUNTED = ("cpu", "memory", GPU_RESOURCE)
#: Knative's queue-proxy sidecar in every serverless KServe pod requests this much CPU by
#: default (``queue-sidecar-cpu-request`` in Knative's ``config-deployment``).
QUEUE_PROXY_CPU_M = 25


def parse_quantity(value: Any) -> float:
    """A Kubernetes quantity (``"3920m"``, ``"16Gi"``, ``"1e3"``, ``4``) as a plain number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise ServingError(f"{value!r} is not a Kubernetes quantity (such as 500m, 4 or 16Gi)")
    number = float(match["number"])
    if match["exponent"]:
        return number * 10.0 ** int(match["exponent"][1:])
    return number * _SCALE.get(match["suffix"] or "", 1.0)


def _units(resource: str, value: Any) -> int:
    """One resource in whole units: CPU in millicores, memory in bytes, GPUs as a count."""
    amount = parse_quantity(value)
    if resource == "cpu":
        amount *= 1000
    return math.ceil(amount - 1e-9)


def container_requests(resources: dict[str, Any] | None) -> dict[str, int]:
    """What one container asks the scheduler for; a limit alone stands for its request.

    (The API server defaults a missing request to the limit, and extended resources such
    as ``nvidia.com/gpu`` are given as limits only.)
    """
    resources = resources or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    found = {}
    for resource in COUNTED:
        value = requests.get(resource, limits.get(resource))
        found[resource] = _units(resource, value) if value is not None else 0
    return found


def pod_requests(pod: dict[str, Any]) -> dict[str, int]:
    """A pod's effective requests, as the scheduler counts them.

    The containers' sum (with sidecar init containers, ``restartPolicy: Always``), or the
    largest plain init container when that is more, plus the runtime class's overhead.
    """
    spec = pod.get("spec") or {}
    total = dict.fromkeys(COUNTED, 0)
    largest_init = dict.fromkeys(COUNTED, 0)
    for container in spec.get("containers") or []:
        for resource, amount in container_requests(container.get("resources")).items():
            total[resource] += amount
    for container in spec.get("initContainers") or []:
        asked = container_requests(container.get("resources"))
        for resource, amount in asked.items():
            if container.get("restartPolicy") == "Always":
                total[resource] += amount
            else:
                largest_init[resource] = max(largest_init[resource], amount)
    overhead = container_requests({"requests": spec.get("overhead") or {}})
    return {r: max(total[r], largest_init[r]) + overhead[r] for r in COUNTED}


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """Whether one of ``tolerations`` tolerates ``taint`` (Kubernetes' matching rules)."""
    for toleration in tolerations:
        effect = toleration.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key") or ""
        if toleration.get("operator") == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (toleration.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def _taint_text(taint: dict[str, Any]) -> str:
    value = f"={taint['value']}" if taint.get("value") else ""
    return f"{taint.get('key')}{value}:{taint.get('effect')}"


def node_excluded(node: dict[str, Any], tolerations: list[dict[str, Any]]) -> str | None:
    """Why the pod cannot go to ``node`` whatever is free there, or ``None`` when it can."""
    spec, status = node.get("spec") or {}, node.get("status") or {}
    if spec.get("unschedulable"):
        return "cordoned"
    for taint in spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return f"taint {_taint_text(taint)}, not tolerated"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") != "True":
            return "not Ready"
    return None


def to_cores(millicores: float) -> float:
    return millicores / 1000


def to_gib(amount: float) -> float:
    return amount / _GIB


def need_text(need: dict[str, int]) -> str:
    parts = [amount_text("cpu", need["cpu"]), amount_text("memory", need["memory"])]
    if need[GPU_RESOURCE]:
        parts.append(amount_text(GPU_RESOURCE, need[GPU_RESOURCE]))
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def amount_text(resource: str, amount: int) -> str:
    """``1 core``, ``2.5 cores``, ``448 MiB``, ``1.5 GiB``, ``1 GPU``, as a user reads them."""
    if resource == "cpu":
        cores = to_cores(amount)
        return f"{cores:g} core{'' if cores == 1 else 's'}"
    if resource == "memory":
        if abs(amount) < _GIB:
            return f"{amount / 2**20:.0f} MiB"
        return f"{to_gib(amount):.2f}".rstrip("0").rstrip(".") + " GiB"
    return f"{amount} GPU{'' if amount == 1 else 's'}"


def free_text(node: dict[str, Any]) -> str:
    free = dict(node["_free"])
    if not node["_alloc"][GPU_RESOURCE]:
        free[GPU_RESOURCE] = 0
    return need_text(free)


def _pods_that_fit(free: dict[str, int], need: dict[str, int], slots: int) -> int:
    """How many pods of ``need`` fit in ``free`` on one node (``slots``: its pod room left)."""
    counts = [free[r] // need[r] for r in COUNTED if need[r] > 0]
    return max(0, min([*counts, slots]))


def read_nodes(
    kube: Kube, tolerations: list[dict[str, Any]], need: dict[str, int]
) -> list[dict[str, Any]]:
    """Every node: allocatable, requested by its running pods, free, and pods that fit."""
    nodes = kube.request("GET", "/api/v1/nodes").get("items") or []
    pods = (
        kube.request(
            "GET",
            "/api/v1/pods",
            query=[("fieldSelector", "status.phase!=Succeeded,status.phase!=Failed")],
        ).get("items")
        or []
    )
    used: dict[str, dict[str, int]] = {}
    counted: dict[str, int] = {}
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if not node_name or phase in ("Succeeded", "Failed"):
            continue
        asked = pod_requests(pod)
        into = used.setdefault(node_name, dict.fromkeys(COUNTED, 0))
        for resource in COUNTED:
            into[resource] += asked[resource]
        counted[node_name] = counted.get(node_name, 0) + 1
    found = []
    for node in nodes:
        name = (node.get("metadata") or {}).get("name", "")
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        alloc = {r: _units(r, allocatable[r]) if r in allocatable else 0 for r in COUNTED}
        requested = used.get(name, dict.fromkeys(COUNTED, 0))
        free = {r: alloc[r] - requested[r] for r in COUNTED}
        slots = int(parse_quantity(allocatable.get("pods", 110))) - counted.get(name, 0)
        excluded = node_excluded(node, tolerations)
        found.append(
            {
                "name": name,
                "counted": excluded is None,
                "why_not": excluded,
                "allocatable": {
                    "cpu": to_cores(alloc["cpu"]),
                    "memory_gib": to_gib(alloc["memory"]),
                    "gpu": alloc[GPU_RESOURCE],
                },
                "requested": {
                    "cpu": to_cores(requested["cpu"]),
                    "memory_gib": to_gib(requested["memory"]),
                    "gpu": requested[GPU_RESOURCE],
                },
                "free": {
                    "cpu": to_cores(free["cpu"]),
                    "memory_gib": to_gib(free["memory"]),
                    "gpu": free[GPU_RESOURCE],
                },
                "pods_that_fit": 0 if excluded else _pods_that_fit(free, need, slots),
                "_alloc": alloc,
                "_requested": requested,
                "_free": free,
            }
        )
    return found


def quota_row(name: str, used: int, total: int, needed: int, scale, unit: str):
    """A :class:`QuotaRow` whose ``enough`` agrees with the exact whole-unit comparison
    (``3.9 - 0.9`` cores is ``2.9999999999999996`` in floats)."""
    row = QuotaRow(name, scale(used), scale(total), unit, scale(needed))
    if row.enough != (total - used >= needed):
        row = QuotaRow(name, scale(used) - 1e-9, scale(total), unit, scale(needed))
    return row


def capacity_model(options: dict[str, Any]) -> tuple[ArtifactRecord, str]:
    """The artifact to size pods for, from the quota step's ``model`` and ``workspace``.

    A workspace model (its newest version; the artifact deploy picks: a recommended INT8,
    else fp32), else a catalog name (not converted yet: sized from the catalog's
    measurements), else, with no model named, a custom model of the smallest size
    (1 core, 512 MiB a pod).
    """
    from accel_widgets.engine.models import catalog
    from accel_widgets.errors import AccelError, CatalogError

    model = options.get("model")
    if isinstance(model, ArtifactRecord):
        return model, f"{model.model_name}:{model.model_version} ({model.precision})"
    if not model:
        stub = ArtifactRecord(0, 0, "custom", 0, "fp32", "onnx", Path(), 0, {}, 0.0)
        return stub, "a custom model of the default size (no model was named)"
    name = str(model)
    where = options.get("workspace") or options.get("workspace_dir")
    problem = ""
    try:
        workspace = where if isinstance(where, Workspace) else Workspace(where)
        if workspace.find_model(name) is not None:
            artifact = workspace.get_artifact(name)
            return (
                artifact,
                f"{artifact.model_name}:{artifact.model_version} ({artifact.precision})",
            )
    except AccelError as exc:  # no artifact yet, an unreadable workspace: try the catalog
        problem = f" ({exc})"
    try:
        spec = catalog.get_spec(name)
    except CatalogError:
        names = ", ".join(s.name for s in catalog.list_specs(include_quantized=False))
        raise ServingError(
            f"cannot size the pods for model {name!r}: it is not a converted model in the "
            f"workspace{problem} nor a catalog model ({names}); convert it first, or leave "
            "model out to check for a small custom model"
        ) from None
    stub = ArtifactRecord(0, 0, spec.name, 0, "fp32", "onnx", Path(), 0, {}, 0.0)
    return stub, f"{spec.name} (sized from the catalog)"
