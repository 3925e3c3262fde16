"""Why a rollout is stuck, in the user's words: the pods' waiting reasons, an unschedulable pod
after a grace period, and how to reach a service from here.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

from accel_widgets.engine.packaging.package_context import GRPC_PORT
from accel_widgets.engine.targets.k8s.api import Kube
from accel_widgets.engine.targets.k8s.manifests import GPU_RESOURCE

#: Seconds between two looks at a rollout (tests make it shorter).
POLL_S = 1.0
#: How long a pod may stay unschedulable before deploy gives up (a cluster autoscaler may
#: add a node meanwhile; without one, the pod stays Pending for ever).
UNSCHEDULABLE_GRACE_S = 60.0


# -- why a rollout is stuck ------------------------------------------------------------------


def waiting_containers(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return [(s.get("name", ""), s) for s in statuses]


def pod_trouble(
    kube: Kube,
    namespace: str,
    pods: list[dict[str, Any]],
    image: str,
    container: str,
    unschedulable_since: dict[str, float],
) -> str | None:
    """Why the pods cannot become ready, in the user's words, or ``None`` while they might."""
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        for _, status in waiting_containers(pod):
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
                return (
                    f"the cluster cannot pull the image {image} ({reason} in pod {pod_name}: "
                    f"{waiting.get('message', '').strip() or 'no details'}). The image must be "
                    "pushed to a registry the cluster can pull from; a private registry needs "
                    f"imagePullSecrets in namespace {namespace} (or, on AKS, "
                    "`az aks update --attach-acr`)"
                )
            if reason == "CrashLoopBackOff":
                last = (status.get("lastState") or {}).get("terminated") or {}
                code = last.get("exitCode", "?")
                logs = kube.pod_logs(namespace, pod_name, container, 20)
                return (
                    f"the server in pod {pod_name} keeps crashing (CrashLoopBackOff, exit code "
                    f"{code}, {status.get('restartCount', 0)} restarts). Its last log lines:\n"
                    f"{logs or '(no log lines)'}"
                )
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                first = unschedulable_since.setdefault(pod_name, time.monotonic())
                if time.monotonic() - first < UNSCHEDULABLE_GRACE_S:
                    continue
                message = condition.get("message", "")
                short = [
                    r
                    for r in ("cpu", "memory", GPU_RESOURCE)
                    if re.search(rf"Insufficient {re.escape(r)}\b", message)
                ]
                what = (
                    f"not enough {' and '.join(short)} on any node"
                    if short
                    else "no node fits the pod"
                )
                return (
                    f"pod {pod_name} cannot be scheduled (FailedScheduling): {what}. The "
                    f"scheduler says: {message.strip()} Ask for less (fewer replicas or GPUs), "
                    "free some capacity, or add nodes"
                )
    return None


def pending_reason(pods: list[dict[str, Any]]) -> str:
    """What the pods are doing now, for the progress line."""
    for pod in pods:
        for _, status in waiting_containers(pod):
            reason = ((status.get("state") or {}).get("waiting") or {}).get("reason")
            if reason:
                return reason
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return condition.get("reason") or "Pending"
    return "starting"


def connect_hint(namespace: str, service: str, remote_port: int = GRPC_PORT) -> str:
    return f"kubectl port-forward -n {namespace} svc/{service} {GRPC_PORT}:{remote_port}"


def split_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    return parts.hostname or "", parts.port or (443 if tls else 80), tls
