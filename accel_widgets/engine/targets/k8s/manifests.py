"""What a Kubernetes or KServe deployment is made of: the settings both targets take, names and
labels, the pod's resources from the model, probes, the API key's Secret and the pod's security.

Plain dicts, no cluster needed: ``manifests`` works without the ``kubernetes`` package.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

from accel_widgets.engine.packaging.package_context import GRPC_PORT, REST_PORT, SERVING_UID
from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ImageRecord,
    check_name,
)
from accel_widgets.engine.targets.base import Setting
from accel_widgets.errors import ServingError

MANAGED_BY = "accel-widgets"
SERVICE_LABEL = "io.accel-widgets/service"
SECRET_KEY = "api-keys"
GPU_RESOURCE = "nvidia.com/gpu"
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
