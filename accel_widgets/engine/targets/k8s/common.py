"""What the Kubernetes and KServe targets share: settings, the API connection, and rollouts.

Both targets build plain manifests (dicts), apply them with the official ``kubernetes``
client to a kubeconfig context, record the service in the workspace, wait with progress,
and explain a stuck rollout in the user's words. Everything they create carries the labels
of :func:`labels`, so ``delete`` (and the clean-up after a failed deploy) finds all of it by
one label selector.

The ``kubernetes`` package (>= 37) is imported only inside the calls that talk to a cluster:
``manifests`` works without it. Requests go through the client's own ``ApiClient`` (its
kubeconfig loading, token and certificate handling, its transport) on the documented REST
paths of each kind, so one small table serves core objects and KServe's custom resources.

The quota step's check (:meth:`ClusterTarget.check_capacity`) reads the nodes'
``status.allocatable`` and the requests of the pods on them, and compares what is free where
the pods may go with replicas x the requests the manifests give the model's pods.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from accel_widgets.engine.packaging.package_context import GRPC_PORT, REST_PORT, SERVING_UID
from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ImageRecord,
    ServiceRecord,
    Workspace,
    check_name,
)
from accel_widgets.engine.targets.base import Setting, Target, pushed_reference
from accel_widgets.engine.targets.capacity import QuotaReport, QuotaRow
from accel_widgets.errors import ServingError
from accel_widgets.progress import Reporter

MANAGED_BY = "accel-widgets"
SERVICE_LABEL = "io.accel-widgets/service"
SECRET_KEY = "api-keys"
GPU_RESOURCE = "nvidia.com/gpu"
#: Seconds between two looks at a rollout (tests make it shorter).
POLL_S = 1.0
#: How long a pod may stay unschedulable before deploy gives up (a cluster autoscaler may
#: add a node meanwhile; without one, the pod stays Pending for ever).
UNSCHEDULABLE_GRACE_S = 60.0
#: Kubernetes object names (Services): DNS-1035 labels.
K8S_NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")

#: Deleting a Deployment removes its ReplicaSets and pods in the background.
DELETE_OPTIONS = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
#: kind -> (API path prefix, plural) for every kind the targets create, list or delete.
KINDS: dict[str, tuple[str, str]] = {
    "Namespace": ("/api/v1", "namespaces"),
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "Pod": ("/api/v1", "pods"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "ServingRuntime": ("/apis/serving.kserve.io/v1alpha1", "servingruntimes"),
    "InferenceService": ("/apis/serving.kserve.io/v1beta1", "inferenceservices"),
}


def common_settings(ready_timeout: float = 300.0) -> tuple[Setting, ...]:
    """The settings every cluster target takes (the kubeconfig, where, how many, auth)."""
    return (
        Setting("context", str, None, "kubeconfig context to deploy to; default: the current"),
        Setting(
            "kubeconfig",
            str,
            None,
            "kubeconfig file; default: $KUBECONFIG, else ~/.kube/config",
        ),
        Setting("namespace", str, "default", "namespace to deploy into (it must exist)"),
        Setting("replicas", int, 1, "number of serving pods (the minimum with --autoscale)"),
        Setting(
            "autoscale",
            str,
            None,
            "MIN:MAX replicas, scaled on CPU (e.g. 2:10); default: a fixed replica count",
        ),
        Setting("gpu", int, 0, "NVIDIA GPUs per pod (an nvidia.com/gpu limit and toleration)"),
        Setting(
            "auth",
            bool,
            True,
            "require an API key (kept in a Secret); off only behind your own gateway",
            capacity=False,
        ),
        Setting(
            "ready_timeout", float, ready_timeout, "seconds to wait for the rollout", capacity=False
        ),
        Setting("key", str, None, "use this API key instead of a generated one", ui=False),
    )


# -- settings and sizing ---------------------------------------------------------------------


def check_k8s_name(name: str) -> str:
    """A service name that is also a valid Kubernetes object name (no '_', <= 63)."""
    check_name(name, "service")
    if not K8S_NAME_RE.fullmatch(name):
        suggestion = re.sub(r"[^a-z0-9-]+", "-", name).strip("-") or "model"
        raise ServingError(
            f"service name {name!r} is not a valid Kubernetes name: use lowercase letters, "
            f"digits and '-', starting with a letter (for example {suggestion!r})"
        )
    return name


def parse_autoscale(value: str | None) -> tuple[int, int] | None:
    """``"MIN:MAX"`` as two ints (1 <= MIN <= MAX), or ``None`` when not asked for."""
    if value is None or str(value).strip() == "":
        return None
    low, sep, high = str(value).strip().partition(":")
    try:
        bounds = (int(low), int(high))
    except ValueError:
        bounds = None
    if not sep or bounds is None:
        raise ServingError(
            f"autoscale {value!r} must be MIN:MAX replicas, two whole numbers (e.g. 2:10)"
        )
    if bounds[0] < 1 or bounds[0] > bounds[1]:
        raise ServingError(
            f"autoscale {value!r}: MIN must be at least 1 and at most MAX "
            f"(e.g. {min(bounds)}:{max(bounds)})"
            if bounds[0] >= 1
            else f"autoscale {value!r}: MIN must be at least 1 (e.g. 1:{max(bounds[1], 1)})"
        )
    return bounds


def check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The checks that need no cluster; returns the parsed values the manifests use."""
    if settings["replicas"] < 1:
        raise ServingError(f"replicas={settings['replicas']} must be at least 1")
    if settings["gpu"] < 0:
        raise ServingError(f"gpu={settings['gpu']} must be 0 (none) or a number of GPUs per pod")
    if settings["ready_timeout"] <= 0:
        raise ServingError(f"ready_timeout={settings['ready_timeout']} must be positive seconds")
    namespace = settings["namespace"]
    if not namespace or not K8S_NAME_RE.fullmatch(namespace):
        raise ServingError(f"namespace {namespace!r} is not a valid Kubernetes namespace name")
    autoscale = parse_autoscale(settings["autoscale"])
    return {"autoscale": autoscale}


def labels(name: str) -> dict[str, str]:
    """The labels on everything made for service ``name`` (delete selects on them)."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        SERVICE_LABEL: name,
    }


def selector(name: str) -> str:
    return f"{SERVICE_LABEL}={name},app.kubernetes.io/managed-by={MANAGED_BY}"


def metadata(name: str, namespace: str, service: str | None = None) -> dict[str, Any]:
    """An object's metadata: its name, namespace and the labels of ``service`` (or itself)."""
    return {"name": name, "namespace": namespace, "labels": labels(service or name)}


def _catalog_spec(artifact: ArtifactRecord):
    from accel_widgets.engine.models import catalog
    from accel_widgets.errors import CatalogError

    name = artifact.model_name
    if artifact.precision == "int8" and not name.startswith("quantized-"):
        name = f"quantized-{name}"
    for candidate in (name, artifact.model_name):
        with contextlib.suppress(CatalogError):
            return catalog.get_spec(candidate)
    return None


def _mib(value: float) -> str:
    return f"{int(math.ceil(value / 64.0) * 64)}Mi"


def resources_for(artifact: ArtifactRecord, gpu: int = 0) -> dict[str, Any]:
    """CPU and memory requests and limits for one serving pod.

    Catalog models: the measured serving memory (``serve_gib``) plus 25%, limit twice that;
    one core requested (latencies were measured on 2 cores), two for the slow ones (over
    100 ms a request). Custom models: four times the ONNX file plus 256 MiB, at least 512 MiB.
    """
    spec = _catalog_spec(artifact)
    if spec is not None:
        memory = spec.serve_gib * 1024 * 1.25
        latency = spec.expected_latency_ms or 0
    else:
        memory = max(512.0, 4 * artifact.size_bytes / 2**20 + 256)
        latency = 0
    cpu = 2 if latency > 100 else 1
    resources: dict[str, Any] = {
        "requests": {"cpu": f"{cpu * 1000}m", "memory": _mib(memory)},
        "limits": {"cpu": f"{cpu * 2000}m", "memory": _mib(memory * 2)},
    }
    if gpu:
        resources["limits"][GPU_RESOURCE] = str(gpu)
    return resources


def gpu_tolerations(gpu: int) -> list[dict[str, Any]]:
    if not gpu:
        return []
    return [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


def grpc_probe(period: int, failures: int, timeout: int = 3, delay: int = 0) -> dict[str, Any]:
    """A native gRPC probe (GA in Kubernetes 1.27) on the server's grpc.health.v1 service."""
    probe = {
        "grpc": {"port": GRPC_PORT},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


#: Where the API key Secret is mounted in the serving container (read-only).
SECRET_MOUNT = "/var/run/secrets/accel-widgets"
SECRET_VOLUME = "api-key"


def server_env(secret: str | None) -> list[dict[str, Any]]:
    """The server's environment: all interfaces, TF Serving's ports, and where the key's
    file is (the Secret is mounted as a file, never put in the environment: ``kubectl
    exec ... env``, ``/proc/1/environ`` and every child process would show it there)."""
    env: list[dict[str, Any]] = [
        {"name": "ACCEL_WIDGETS_HOST", "value": "0.0.0.0"},
        {"name": "ACCEL_WIDGETS_PORT", "value": str(GRPC_PORT)},
        {"name": "ACCEL_WIDGETS_REST_PORT", "value": str(REST_PORT)},
    ]
    if secret:
        env.append({"name": "ACCEL_WIDGETS_API_KEYS_FILE", "value": f"{SECRET_MOUNT}/{SECRET_KEY}"})
    return env


def mount_secret(container: dict[str, Any], pod: dict[str, Any], secret: str | None) -> None:
    """Mount the key Secret read-only into ``container`` (a volume of ``pod``).

    Mode 0444: the pod runs only our server's user, and a ServingRuntime has no fsGroup to
    give the file to that user alone (the server logs that the file is readable by others).
    """
    if not secret:
        return
    container["volumeMounts"] = [
        {"name": SECRET_VOLUME, "mountPath": SECRET_MOUNT, "readOnly": True}
    ]
    pod["volumes"] = [
        {
            "name": SECRET_VOLUME,
            "secret": {
                "secretName": secret,
                "defaultMode": 0o444,
                "items": [{"key": SECRET_KEY, "path": SECRET_KEY}],
            },
        }
    ]


def check_keys_from_file(image: ImageRecord, auth: bool) -> None:
    """Refuse an image whose server reads its key from the environment only (made by an
    older accel-widgets): it would not find the mounted key and refuse to start."""
    labels = image.info.get("labels") or {}
    if auth and labels and labels.get("io.accel-widgets.keys") != "file":
        raise ServingError(
            f"image {image.ref} was packaged by an older accel-widgets, whose server reads its "
            "API key from the environment only; package and push it again (`accel-widgets "
            f"package {labels.get('io.accel-widgets.model', 'MODEL')} --version "
            f"{labels.get('io.accel-widgets.model-version', 'N')} --precision "
            f"{labels.get('io.accel-widgets.precision', 'P')} --name {image.name} --no-cache "
            "--push REGISTRY/PATH`)"
        )


def server_args(auth: bool) -> list[str]:
    # The server refuses 0.0.0.0 without keys unless told so out loud.
    return [] if auth else ["--insecure-no-auth"]


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": SERVING_UID,
        "runAsGroup": SERVING_UID,
        "fsGroup": SERVING_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": SERVING_UID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def api_key_secret(name: str, namespace: str, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(secret_name(name), namespace, name),
        "type": "Opaque",
        "stringData": {SECRET_KEY: key},
    }


def secret_name(name: str) -> str:
    return f"{name}-api-key"


# -- the connection --------------------------------------------------------------------------


def kubeconfig_path(setting: str | None) -> Path:
    if setting:
        return Path(setting).expanduser()
    env = os.environ.get("KUBECONFIG", "").strip()
    if env:
        return Path(env.split(os.pathsep)[0]).expanduser()
    return Path.home() / ".kube" / "config"


class KubeApiError(ServingError):
    """An API server answer that is not 2xx; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass
class Kube:
    """One kubeconfig context: the official client's ``ApiClient`` and where it points."""

    api: Any
    context: str
    kubeconfig: Path
    server: str
    calls: list[tuple[str, str]] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        raw: bool = False,
    ) -> Any:
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": "application/json, */*", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        self.calls.append((method, path))
        try:
            response = self.api.call_api(*params, _request_timeout=(10, 60))
        except Exception as exc:  # urllib3 errors: no server there, TLS, DNS
            raise ServingError(
                f"cannot reach the Kubernetes API server {self.server} (context {self.context} "
                f"in {self.kubeconfig}): {exc}"
            ) from None
        response.read()
        text = response.data.decode(errors="replace") if response.data else ""
        if not 200 <= response.status <= 299:
            try:
                status = json.loads(text)
                message, reason = status.get("message", text), status.get("reason", "")
            except ValueError:
                message, reason = text, ""
            if response.status in (401, 403):
                message = (
                    f"the cluster refused {method} {path} (HTTP {response.status}: {message}); "
                    f"check the credentials of context {self.context} and your permissions "
                    "in the namespace"
                )
            raise KubeApiError(message, response.status, reason)
        if raw:
            return text
        return json.loads(text) if text else {}

    # -- objects --

    @staticmethod
    def collection(kind: str, namespace: str) -> str:
        prefix, plural = KINDS[kind]
        return f"{prefix}/namespaces/{namespace}/{plural}"

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"{self.collection(kind, namespace)}/{name}")
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        answer = self.request(
            "GET", self.collection(kind, namespace), query=[("labelSelector", label_selector)]
        )
        return list(answer.get("items") or [])

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self.request(
                "DELETE",
                f"{self.collection(kind, namespace)}/{name}",
                body=DELETE_OPTIONS,
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def apply(self, obj: dict[str, Any]) -> str:
        """Create ``obj``, or replace the one of ours with its name. Returns what happened."""
        kind, meta = obj["kind"], obj["metadata"]
        path = self.collection(kind, meta["namespace"])
        try:
            self.request("POST", path, body=obj)
            return "created"
        except KubeApiError as exc:
            if exc.status != 409:
                raise
        existing = self.get(kind, meta["namespace"], meta["name"]) or {}
        body = json.loads(json.dumps(obj))
        body["metadata"]["resourceVersion"] = existing.get("metadata", {}).get("resourceVersion")
        if kind == "Service":
            old_ip = existing.get("spec", {}).get("clusterIP")
            new_ip = body["spec"].get("clusterIP")
            if (old_ip == "None") != (new_ip == "None"):  # headless or not cannot change
                self.delete(kind, meta["namespace"], meta["name"])
                self.request("POST", path, body=obj)
                return "recreated"
            if old_ip and not new_ip:
                body["spec"]["clusterIP"] = old_ip
        self.request("PUT", f"{path}/{meta['name']}", body=body)
        return "replaced"

    def refuse_foreign(self, objects: list[dict[str, Any]]) -> None:
        """An object with one of our names that accel-widgets did not make stops the deploy."""
        for obj in objects:
            meta = obj["metadata"]
            existing = self.get(obj["kind"], meta["namespace"], meta["name"])
            if existing is None:
                continue
            found = existing.get("metadata", {}).get("labels") or {}
            if found.get("app.kubernetes.io/managed-by") != MANAGED_BY:
                raise ServingError(
                    f"a {obj['kind']} named {meta['name']} exists in namespace "
                    f"{meta['namespace']} and was not made by accel-widgets; remove it "
                    f"(`kubectl delete -n {meta['namespace']} {obj['kind'].lower()} "
                    f"{meta['name']}`) or choose another service name"
                )

    def delete_labelled(self, namespace: str, name: str, kinds: tuple[str, ...]) -> list[str]:
        """Delete every object of ``kinds`` labelled for service ``name``; ``kind/name`` list."""
        removed = []
        for kind in kinds:
            for obj in self.list(kind, namespace, selector(name)):
                if self.delete(kind, namespace, obj["metadata"]["name"]):
                    removed.append(f"{kind}/{obj['metadata']['name']}")
        return removed

    def check_namespace(self, namespace: str) -> None:
        try:
            self.request("GET", f"/api/v1/namespaces/{namespace}")
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            there = ""
            with contextlib.suppress(ServingError):
                listed = self.request("GET", "/api/v1/namespaces").get("items") or []
                names = [n["metadata"]["name"] for n in listed]
                there = f"; namespaces there: {', '.join(names)}"
            raise ServingError(
                f"namespace {namespace!r} does not exist in context {self.context}: create it "
                f"(`kubectl create namespace {namespace}`) or choose another{there}"
            ) from None

    def pod_logs(self, namespace: str, pod: str, container: str, lines: int) -> str:
        with contextlib.suppress(ServingError):
            return self.request(
                "GET",
                f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                query=[("container", container), ("tailLines", str(lines))],
                raw=True,
            ).rstrip()
        return ""


def connect(settings: dict[str, Any]) -> Kube:
    """The kubeconfig context ``settings`` name, checked: the file, then the context."""
    path = kubeconfig_path(settings.get("kubeconfig"))
    if not path.is_file():
        raise ServingError(
            f"no kubeconfig at {path}: set kubeconfig= (--kubeconfig) or $KUBECONFIG to your "
            "cluster's file (for AKS: `az aks get-credentials -g GROUP -n CLUSTER`)"
        )
    try:
        from kubernetes import config as kube_config
    except ImportError:
        raise ServingError(
            "the kubernetes and kserve targets need the Kubernetes client: `pip install kubernetes`"
        ) from None
    try:
        contexts, current = kube_config.list_kube_config_contexts(config_file=str(path))
    except Exception as exc:
        raise ServingError(f"cannot read the kubeconfig {path}: {exc}") from None
    names = [c["name"] for c in contexts or []]
    wanted = settings.get("context") or (current or {}).get("name")
    if not wanted:
        raise ServingError(
            f"the kubeconfig {path} has no current context; choose one with context= "
            f"(--context): {', '.join(names) or 'it has none'}"
        )
    if wanted not in names:
        raise ServingError(
            f"no context {wanted!r} in the kubeconfig {path}; its contexts: "
            f"{', '.join(names) or 'none'}"
        )
    try:
        api = kube_config.new_client_from_config(
            config_file=str(path), context=wanted, persist_config=False
        )
    except Exception as exc:
        raise ServingError(f"cannot use context {wanted!r} of {path}: {exc}") from None
    return Kube(api=api, context=wanted, kubeconfig=path, server=api.configuration.host)


# -- why a rollout is stuck ------------------------------------------------------------------


def _waiting(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
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
        for _, status in _waiting(pod):
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
        for _, status in _waiting(pod):
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


def _cores(millicores: float) -> float:
    return millicores / 1000


def _gib(amount: float) -> float:
    return amount / _GIB


def _need_text(need: dict[str, int]) -> str:
    parts = [_amount("cpu", need["cpu"]), _amount("memory", need["memory"])]
    if need[GPU_RESOURCE]:
        parts.append(_amount(GPU_RESOURCE, need[GPU_RESOURCE]))
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _amount(resource: str, amount: int) -> str:
    """``1 core``, ``2.5 cores``, ``448 MiB``, ``1.5 GiB``, ``1 GPU``, as a user reads them."""
    if resource == "cpu":
        cores = _cores(amount)
        return f"{cores:g} core{'' if cores == 1 else 's'}"
    if resource == "memory":
        if abs(amount) < _GIB:
            return f"{amount / 2**20:.0f} MiB"
        return f"{_gib(amount):.2f}".rstrip("0").rstrip(".") + " GiB"
    return f"{amount} GPU{'' if amount == 1 else 's'}"


def _free_text(node: dict[str, Any]) -> str:
    free = dict(node["_free"])
    if not node["_alloc"][GPU_RESOURCE]:
        free[GPU_RESOURCE] = 0
    return _need_text(free)


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
                    "cpu": _cores(alloc["cpu"]),
                    "memory_gib": _gib(alloc["memory"]),
                    "gpu": alloc[GPU_RESOURCE],
                },
                "requested": {
                    "cpu": _cores(requested["cpu"]),
                    "memory_gib": _gib(requested["memory"]),
                    "gpu": requested[GPU_RESOURCE],
                },
                "free": {
                    "cpu": _cores(free["cpu"]),
                    "memory_gib": _gib(free["memory"]),
                    "gpu": free[GPU_RESOURCE],
                },
                "pods_that_fit": 0 if excluded else _pods_that_fit(free, need, slots),
                "_alloc": alloc,
                "_requested": requested,
                "_free": free,
            }
        )
    return found


def _row(name: str, used: int, total: int, needed: int, scale, unit: str):
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


# -- the shared target ---------------------------------------------------------------------


class ClusterTarget(Target):
    """Deploy, status, logs and delete for targets that apply labelled objects to a cluster.

    Subclasses build the objects (:meth:`build`), say which kinds to delete (``kinds``, in
    deletion order), wait for readiness (:meth:`wait_ready`) and name their pods.
    """

    capacity = "local"
    needs_image = True
    kinds: tuple[str, ...] = ()
    container: str = "server"

    @abstractmethod
    def build(
        self,
        artifact: ArtifactRecord,
        name: str,
        image: str,
        settings: dict[str, Any],
        parsed: dict[str, Any],
        key: str | None,
    ) -> list[dict[str, Any]]:
        """The objects, in the order they are applied."""

    @abstractmethod
    def wait_ready(
        self,
        kube: Kube,
        name: str,
        image: str,
        settings: dict[str, Any],
        parsed: dict[str, Any],
        report: Reporter,
        started: float,
    ) -> dict[str, Any]:
        """Wait until the service answers; returns ``address``, ``port``, ``tls``, extras."""

    @abstractmethod
    def pod_selector(self, name: str) -> str:
        """The label selector of the service's pods."""

    # -- capacity --

    def pod_requests_for(self, artifact: ArtifactRecord, settings: dict[str, Any]) -> dict:
        """One serving pod's requests as this target's manifests ask for them (whole units:
        millicores, bytes, GPUs)."""
        return container_requests(resources_for(artifact, settings["gpu"]))

    def check_capacity(
        self, settings: dict[str, Any], report: Reporter, **options: Any
    ) -> QuotaReport:
        """The cluster's allocatable CPU, memory and GPUs against what the deployment asks.

        Connects as deploy does (the kubeconfig, the context, the namespace must exist),
        lists the nodes and the pods scheduled on them, and counts a node only when the
        pods could go there: not cordoned, Ready, and no ``NoSchedule``/``NoExecute`` taint
        they do not tolerate (with ``gpu`` they tolerate ``nvidia.com/gpu``). Free is a
        node's ``status.allocatable`` less the requests of its pods that have not finished
        (not Succeeded or Failed).

        Needed is replicas x one pod's requests, as the manifests size them for the model:
        ``replicas`` or, with ``autoscale MIN:MAX``, MIN now (what MAX needs is said in the
        advice and ``details["max_needed"]``). The model comes from the ``model`` option (a
        workspace model, or a catalog name not converted yet) and ``workspace`` (or
        ``workspace_dir``); with no model named, the pods are sized for a custom model of
        the default size: 1 core and 512 MiB (the smallest a custom model gets), which the
        advice says. Enough in total is not enough: the pods must also fit whole on the
        nodes, one node each at least, which is checked and said.

        Not counted: namespace ResourceQuotas and LimitRanges, node selectors or affinity
        of other pods, and sidecars injected by a service mesh.

        Raises
        ------
        QuotaError
            The kubeconfig or context is missing, the namespace does not exist, the
            cluster cannot be reached, or the account may not list nodes and pods.
        """
        from accel_widgets.errors import QuotaError

        try:
            return self._check_capacity(settings, report, options)
        except KubeApiError as exc:
            if exc.status in (401, 403):
                raise QuotaError(
                    f"{exc} (the capacity check lists the cluster's nodes and the pods on "
                    "them, which needs permission to list nodes and pods in all namespaces; "
                    "`kubectl auth can-i list nodes` tells whether you have it, and the "
                    "cluster's admin can grant it)"
                ) from None
            raise QuotaError(f"the cluster's capacity could not be read: {exc}") from None
        except ServingError as exc:
            raise QuotaError(str(exc)) from None

    def _check_capacity(
        self, settings: dict[str, Any], report: Reporter, options: dict[str, Any]
    ) -> QuotaReport:
        autoscale = check_settings(settings)["autoscale"]
        replicas = autoscale[0] if autoscale else settings["replicas"]
        most = autoscale[1] if autoscale else replicas
        artifact, model = capacity_model(options)
        need = self.pod_requests_for(artifact, settings)
        gpu = need[GPU_RESOURCE]
        namespace = settings["namespace"]
        report("quota", 0.0, f"connecting to the cluster ({settings.get('context') or 'current'})")
        kube = connect(settings)
        kube.check_namespace(namespace)
        report("quota", 0.3, f"reading the nodes and pods of context {kube.context}")
        nodes = read_nodes(kube, gpu_tolerations(settings["gpu"]), need)
        report("quota", 0.8, f"comparing with {replicas} pod(s) of {_need_text(need)}")
        usable = [n for n in nodes if n["counted"]]
        total = {r: sum(n["_alloc"][r] for n in usable) for r in COUNTED}
        used = {r: sum(n["_requested"][r] for n in usable) for r in COUNTED}
        needed = {r: replicas * need[r] for r in COUNTED}
        rows = [
            _row("CPU (cluster)", used["cpu"], total["cpu"], needed["cpu"], _cores, "cores"),
            _row(
                "memory (cluster)", used["memory"], total["memory"], needed["memory"], _gib, "GiB"
            ),
        ]
        if gpu:
            rows.append(
                _row(
                    "GPUs (cluster)",
                    used[GPU_RESOURCE],
                    total[GPU_RESOURCE],
                    needed[GPU_RESOURCE],
                    float,
                    "GPUs",
                )
            )
        short = [r for r in COUNTED if total[r] - used[r] < needed[r]]
        fit = sum(n["pods_that_fit"] for n in usable)
        verdict = not short and fit >= replicas

        def room(node: dict[str, Any]) -> float:
            return min(node["_free"][r] / need[r] for r in COUNTED if need[r] > 0)

        best = max(usable, key=room) if usable else None
        largest = (
            {"node": best["name"], **best["free"], "pods_that_fit": best["pods_that_fit"]}
            if best
            else None
        )
        per_pod = f"{_need_text(need)} a pod"
        named = artifact.model_name if options.get("model") else "a custom model"
        pods = f"{replicas} pod{'s' if replicas != 1 else ''}"
        where = f"context {kube.context}"
        if not usable:
            advice = (
                f"No node of {where} can take the pods ({len(nodes)} nodes, none counted): "
                "uncordon a node, or add a node pool without taints the pods do not tolerate."
            )
        elif gpu and not total[GPU_RESOURCE]:
            advice = (
                f"The pods ask for {_amount(GPU_RESOURCE, gpu)} each, but no schedulable "
                f"node of {where} has nvidia.com/gpu: add a GPU node pool with the NVIDIA "
                "device plugin (on AKS: `az aks nodepool add --node-vm-size "
                "Standard_NC4as_T4_v3 ...`; taint it nvidia.com/gpu:NoSchedule if at all, the "
                "taint the pods tolerate), or deploy without GPUs (gpu=0)."
            )
        elif short:
            lacking = ", ".join(
                f"{_amount(r, total[r] - used[r])} free of {_amount(r, needed[r])} needed"
                for r in short
            )
            fewer = f"at most {fit} fit now" if fit else "none fits now"
            extra = " or GPU nodes" if GPU_RESOURCE in short else ""
            advice = (
                f"{pods} of {named} need more than {where} has free ({lacking}): scale the "
                f"node pool{extra} (on AKS: `az aks nodepool scale --node-count N ...`, or turn "
                f"on the cluster autoscaler), ask for fewer replicas ({fewer}), or pick a "
                "smaller model."
            )
        elif fit == 0:
            advice = (
                f"Enough in total, but no single node has room for one pod ({per_pod}); the "
                f"node with the most room, {best['name']}, has {_free_text(best)} free. The "
                "free capacity is split across nodes: add a node pool of larger nodes, free "
                "some room on one node, or pick a smaller model."
            )
        elif fit < replicas:
            advice = (
                f"Enough in total, but only {fit} of the {pods} fit on the nodes as they are "
                f"(each pod must fit on one node: {per_pod}): ask for {fit} replicas, scale "
                "the node pool, or pick a smaller model."
            )
        else:
            advice = (
                f"{where.capitalize()} has room for {pods} of {named} ({per_pod}); {fit} "
                "would fit now."
            )
        details: dict[str, Any] = {
            "context": kube.context,
            "namespace": namespace,
            "server": kube.server,
            "model": model,
            "per_pod": {"cpu": _cores(need["cpu"]), "memory_gib": _gib(need["memory"]), "gpu": gpu},
            "replicas": replicas,
            "pods_that_fit": fit,
            "nodes": [{k: v for k, v in n.items() if not k.startswith("_")} for n in nodes],
            "largest_node_free": largest,
        }
        if most > replicas:
            at_most = {r: most * need[r] for r in COUNTED}
            details["max_replicas"] = most
            details["max_needed"] = {
                "cpu": _cores(at_most["cpu"]),
                "memory_gib": _gib(at_most["memory"]),
                "gpu": at_most[GPU_RESOURCE],
            }
            then = (
                "that fits now too."
                if fit >= most
                else f"only {fit} fit now, so scale the node pool (or let the cluster "
                "autoscaler add nodes) before the load gets there."
            )
            advice += (
                f" At the autoscale maximum of {most} pods it needs {_need_text(at_most)}: {then}"
            )
        skipped = [f"{n['name']} ({n['why_not']})" for n in nodes if not n["counted"]]
        if skipped:
            advice += f" Not counted: {', '.join(skipped)}."
        if not options.get("model"):
            advice += " Sized for a small custom model: name the model for its own requests."
        report("quota", 1.0, "cluster check done")
        return QuotaReport(
            target=self.name, rows=rows, verdict=verdict, advice=advice, details=details
        )

    def _prepare(
        self,
        artifact: ArtifactRecord,
        name: str,
        image: ImageRecord | None,
        settings: dict[str, Any],
        image_reference: str | None,
        key: str | None,
    ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
        check_k8s_name(name)
        parsed = check_settings(settings)
        if image is None:
            raise ServingError(
                f"the {self.name} target runs a packaged image: package the model first "
                f"(`accel-widgets package {artifact.model_name} --push REGISTRY/PATH`)"
            )
        reference = pushed_reference(image, image_reference, artifact)
        check_keys_from_file(image, bool(settings.get("auth")))
        objects = self.build(artifact, name, reference, settings, parsed, key)
        return reference, parsed, objects

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
        key = (settings.get("key") or secrets.token_urlsafe(32)) if settings["auth"] else None
        return self._prepare(artifact, name, image, settings, image_reference, key)[2]

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
        key = (settings.get("key") or secrets.token_urlsafe(32)) if settings["auth"] else None
        reference, parsed, objects = self._prepare(
            artifact, name, image, settings, image_reference, key
        )
        if name in {s.name for s in workspace.list_services()}:
            raise ServingError(
                f"a service named {name!r} already exists; delete it first "
                f"(`accel-widgets delete service {name}`) or choose another name"
            )
        namespace = settings["namespace"]
        report("deploy", 0.0, f"connecting to the cluster ({settings.get('context') or 'current'})")
        kube = connect(settings)
        kube.check_namespace(namespace)
        kube.refuse_foreign(objects)
        recorded = {k: v for k, v in settings.items() if k not in ("key",)}
        info: dict[str, Any] = {
            "namespace": namespace,
            "context": kube.context,
            "kubeconfig": str(kube.kubeconfig),
            "server": kube.server,
            "image": reference,
            "objects": [f"{o['kind']}/{o['metadata']['name']}" for o in objects],
            "auth": bool(key),
            "tls": False,
            "settings": {**recorded, "context": kube.context},
        }
        service = workspace.add_service(
            name,
            artifact,
            target=self.name,
            image=image,
            state="starting",
            address="",
            port=GRPC_PORT,
            key=key,
            info=info,
        )
        started = time.monotonic()
        try:
            for index, obj in enumerate(objects):
                done = kube.apply(obj)
                report(
                    "deploy",
                    0.05 + 0.1 * (index + 1) / len(objects),
                    f"{done} {obj['kind']} {obj['metadata']['name']} in {namespace}",
                )
            reached = self.wait_ready(kube, name, reference, settings, parsed, report, started)
        except BaseException:
            with contextlib.suppress(Exception):
                kube.delete_labelled(namespace, name, self.kinds)
            workspace.remove_service(name)
            raise
        seconds = round(time.monotonic() - started, 2)
        info = {
            **service.info,
            "tls": reached.pop("tls", False),
            "ready_seconds": seconds,
            **{k: v for k, v in reached.items() if k not in ("address", "port")},
        }
        where = f"{reached['address']}:{reached['port']}"
        hint = f"; connect with `{info['connect']}`" if info.get("connect") else ""
        report("deploy", 1.0, f"{name} ready at {where} in {seconds:.1f} s ({self.name}){hint}")
        return workspace.update_service(
            name, state="running", address=reached["address"], port=reached["port"], info=info
        )

    # -- status, logs, delete --

    def _kube(self, service: ServiceRecord) -> Kube:
        return connect(
            {
                "kubeconfig": service.info.get("kubeconfig"),
                "context": service.info.get("context"),
            }
        )

    def pods(self, kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
        return kube.list("Pod", namespace, self.pod_selector(name))

    def logs(self, workspace: Workspace, service: ServiceRecord, lines: int = 50) -> str:
        kube = self._kube(service)
        namespace = service.info["namespace"]
        parts = []
        for pod in self.pods(kube, namespace, service.name):
            pod_name = pod["metadata"]["name"]
            text = kube.pod_logs(namespace, pod_name, self.container, lines)
            parts.append(f"==> pod {pod_name} <==\n{text}".rstrip())
        return "\n\n".join(parts)

    def delete(self, workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
        kube = self._kube(service)
        kube.delete_labelled(service.info["namespace"], service.name, self.kinds)
        return workspace.remove_service(service.name)

    def unhealthy_pods(self, kube: Kube, namespace: str, name: str) -> bool:
        for pod in self.pods(kube, namespace, name):
            for _, status in _waiting(pod):
                reason = ((status.get("state") or {}).get("waiting") or {}).get("reason", "")
                if reason in ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull"):
                    return True
        return False
