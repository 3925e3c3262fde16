"""The KServe target: a ServingRuntime for our server and an InferenceService that uses it.

Objects (applied in this order, all labelled for the service so delete finds them):

- a Secret with the API key (``auth``, on by default), mounted read-only into the
  runtime's container as a file (``ACCEL_WIDGETS_API_KEYS_FILE``), never its environment;
- a ``serving.kserve.io/v1alpha1`` **ServingRuntime** ``accel-widgets-<name>``: our image as
  its one container (``kserve-container``), ``protocolVersions: [grpc-v1]`` (TF Serving's
  Predict, which our server speaks), ``supportedModelFormats: [{name: accel-widgets-onnx}]``
  with ``autoSelect: false`` (no other InferenceService picks it by accident), gRPC
  readiness and liveness probes on ``grpc.health.v1``, uid 10001;
- a ``serving.kserve.io/v1beta1`` **InferenceService** whose predictor is
  ``model: {modelFormat: {name: accel-widgets-onnx}, runtime: accel-widgets-<name>,
  protocolVersion: grpc-v1}`` with the CPU, memory (and GPU) requests sized from the catalog,
  ``minReplicas``/``maxReplicas`` from ``replicas``/``autoscale``, and the
  ``serving.kserve.io/deploymentMode`` annotation from ``mode``.

Why a runtime plus ``predictor.model``, not a custom-container predictor
(``predictor.containers``): both validate against KServe's CRD schema, but only the runtime
form says what the server *is* to KServe (its protocol, its model format), which is what
KServe reads to route gRPC and to list runtimes; and it keeps the server's container (image,
ports, probes, environment) in one object while the InferenceService carries only what
differs per deployment (resources, replicas). The model is baked into the image, so the
predictor has no ``storageUri`` and KServe adds no storage initializer. One runtime per
service (not one shared) because the image is per model; delete removes both.

KServe exposes one port of the container: the gRPC one (8500; the REST port stays inside the
pod). Its name is what KServe and Knative read to route HTTP/2: ``h2c`` in serverless mode
(Knative), ``grpc-port`` in RawDeployment mode (a plain Service and Deployment; Istio and
KServe read the ``grpc`` prefix). Knative serving has accepted native gRPC probes since
1.12 (knative/serving#14134); its queue-proxy runs readiness probes itself, so the runtime
declares readiness and liveness but no startup probe (liveness waits up to two minutes
before its first look instead).

Ready is the InferenceService's ``Ready`` condition; the address is the URL it reports
(``status.url``, else ``status.address.url``). An in-cluster URL (``*.svc.cluster.local``,
RawDeployment without an ingress) is recorded with a ``kubectl port-forward`` hint.
"""

from __future__ import annotations

import time
from typing import Any

from accel_widgets.engine.packaging.package_context import GRPC_PORT
from accel_widgets.engine.store.workspace import ArtifactRecord, ServiceRecord, Workspace
from accel_widgets.engine.targets.base import Setting
from accel_widgets.engine.targets.k8s.api import Kube
from accel_widgets.engine.targets.k8s.capacity import QUEUE_PROXY_CPU_M
from accel_widgets.engine.targets.k8s.cluster import ClusterTarget
from accel_widgets.engine.targets.k8s.manifests import (
    api_key_secret,
    common_settings,
    container_security,
    gpu_tolerations,
    grpc_probe,
    metadata,
    mount_secret,
    resources_for,
    secret_name,
    server_args,
    server_env,
)
from accel_widgets.engine.targets.k8s.rollout import (
    POLL_S,
    connect_hint,
    pending_reason,
    pod_trouble,
    split_url,
)
from accel_widgets.errors import ServingError
from accel_widgets.progress import Reporter

MODEL_FORMAT = "accel-widgets-onnx"
PROTOCOL = "grpc-v1"
MODES = ("serverless", "raw")
DEPLOYMENT_MODE = {"serverless": "Serverless", "raw": "RawDeployment"}
#: The container port's name each mode needs (Knative: h2c; RawDeployment: grpc-*).
PORT_NAME = {"serverless": "h2c", "raw": "grpc-port"}
ISVC_LABEL = "serving.kserve.io/inferenceservice"
CONTAINER = "kserve-container"


def runtime_name(name: str) -> str:
    return f"accel-widgets-{name}"


class KServeTarget(ClusterTarget):
    """An InferenceService of the packaged image through its own ServingRuntime."""

    name = "kserve"
    title = "KServe"
    description = (
        "the packaged image as a KServe InferenceService (serverless with Knative, or raw "
        "Kubernetes Deployments), through your kubeconfig"
    )
    kinds = ("InferenceService", "ServingRuntime", "Secret")
    container = CONTAINER
    settings = (
        *common_settings(600.0)[:7],
        Setting(
            "mode",
            str,
            "serverless",
            "serverless: Knative (scales with traffic); raw: a plain Deployment and Service",
            choices=MODES,
        ),
        *common_settings(600.0)[7:],
    )

    def pod_selector(self, name: str) -> str:
        return f"{ISVC_LABEL}={name}"

    def pod_requests_for(self, artifact: ArtifactRecord, settings: dict[str, Any]) -> dict:
        """The predictor's requests, plus Knative's queue-proxy sidecar in serverless mode
        (25m CPU by default), which the capacity check counts as the scheduler does."""
        need = super().pod_requests_for(artifact, settings)
        if settings["mode"] == "serverless":
            need = {**need, "cpu": need["cpu"] + QUEUE_PROXY_CPU_M}
        return need

    def build(
        self,
        artifact: ArtifactRecord,
        name: str,
        image: str,
        settings: dict[str, Any],
        parsed: dict[str, Any],
        key: str | None,
    ) -> list[dict[str, Any]]:
        namespace, mode = settings["namespace"], settings["mode"]
        autoscale = parsed["autoscale"]
        low, high = autoscale or (settings["replicas"], settings["replicas"])
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": PORT_NAME[mode], "containerPort": GRPC_PORT, "protocol": "TCP"}],
            "env": server_env(secret_name(name) if key else None),
            "readinessProbe": grpc_probe(period=5, failures=2),
            "livenessProbe": grpc_probe(
                period=10, failures=3, delay=min(int(settings["ready_timeout"]), 120)
            ),
            "securityContext": container_security(),
        }
        args = server_args(bool(key))
        if args:
            container["args"] = args
        runtime = {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "ServingRuntime",
            "metadata": {
                **metadata(runtime_name(name), namespace, name),
                "annotations": {"serving.kserve.io/deploymentMode": DEPLOYMENT_MODE[mode]},
            },
            "spec": {
                "protocolVersions": [PROTOCOL],
                "supportedModelFormats": [
                    {"name": MODEL_FORMAT, "version": "1", "autoSelect": False}
                ],
                "multiModel": False,
                "containers": [container],
            },
        }
        mount_secret(container, runtime["spec"], secret_name(name) if key else None)
        if settings["gpu"]:
            runtime["spec"]["tolerations"] = gpu_tolerations(settings["gpu"])
        annotations = {"serving.kserve.io/deploymentMode": DEPLOYMENT_MODE[mode]}
        predictor: dict[str, Any] = {
            "minReplicas": low,
            "maxReplicas": high,
            "model": {
                "modelFormat": {"name": MODEL_FORMAT, "version": "1"},
                "runtime": runtime_name(name),
                "protocolVersion": PROTOCOL,
                "resources": resources_for(artifact, settings["gpu"]),
            },
        }
        if autoscale:
            predictor["scaleMetric"] = "cpu"
            predictor["scaleTarget"] = 70
            if mode == "raw":
                annotations["serving.kserve.io/autoscalerClass"] = "hpa"
        if settings["gpu"]:
            predictor["tolerations"] = gpu_tolerations(settings["gpu"])
        isvc = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {**metadata(name, namespace), "annotations": annotations},
            "spec": {"predictor": predictor},
        }
        objects: list[dict[str, Any]] = []
        if key:
            objects.append(api_key_secret(name, namespace, key))
        return [*objects, runtime, isvc]

    # -- waiting --

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
        namespace = settings["namespace"]
        timeout = settings["ready_timeout"]
        deadline = started + timeout
        unschedulable: dict[str, float] = {}
        while True:
            report.check()
            isvc = kube.get("InferenceService", namespace, name)
            if isvc is None:
                raise ServingError(
                    f"the InferenceService {name} disappeared from namespace {namespace} "
                    "while it was starting (deleted by someone else?)"
                )
            status = isvc.get("status") or {}
            conditions = status.get("conditions") or []
            if _condition(conditions, "Ready") == "True":
                url = status.get("url") or (status.get("address") or {}).get("url")
                if url:
                    return self._address(name, namespace, url, status)
            pods = self.pods(kube, namespace, name)
            trouble = pod_trouble(kube, namespace, pods, image, CONTAINER, unschedulable)
            if trouble:
                raise ServingError(trouble)
            waiting = _not_ready(conditions)
            if time.monotonic() > deadline:
                raise ServingError(
                    f"the InferenceService {name} was not Ready after {timeout:.0f} s "
                    f"({waiting or 'no conditions reported: is KServe installed?'}); see "
                    f"`kubectl describe inferenceservice -n {namespace} {name}`, or allow more "
                    "time (ready_timeout)"
                )
            done = sum(c.get("status") == "True" for c in conditions)
            report(
                "deploy",
                0.2 + 0.75 * done / max(len(conditions), 1),
                f"InferenceService {name}: {waiting or 'waiting for KServe'} "
                f"(pods: {pending_reason(pods) if pods else 'none yet'})",
            )
            time.sleep(POLL_S)

    @staticmethod
    def _address(name: str, namespace: str, url: str, status: dict[str, Any]) -> dict[str, Any]:
        host, port, tls = split_url(url)
        reached: dict[str, Any] = {"address": host, "port": port, "tls": tls, "url": url}
        internal = (status.get("address") or {}).get("url")
        if internal:
            reached["in_cluster"] = internal
        if host.endswith((".svc", ".svc.cluster.local")):
            service = host.split(".")[0]
            reached["connect"] = connect_hint(namespace, service, port)
        return reached

    # -- status --

    def status(self, workspace: Workspace, service: ServiceRecord) -> str:
        kube = self._kube(service)
        namespace = service.info["namespace"]
        isvc = kube.get("InferenceService", namespace, service.name)
        if isvc is None:
            return "dead"
        ready = _condition((isvc.get("status") or {}).get("conditions") or [], "Ready")
        if ready == "True":
            return "running"
        if self.unhealthy_pods(kube, namespace, service.name):
            return "unhealthy"
        if ready == "False" and service.state != "starting":
            return "unhealthy"
        return "starting"


def _condition(conditions: list[dict[str, Any]], kind: str) -> str | None:
    for condition in conditions:
        if condition.get("type") == kind:
            return condition.get("status")
    return None


def _not_ready(conditions: list[dict[str, Any]]) -> str:
    parts = []
    for condition in conditions:
        if condition.get("status") != "True" and condition.get("type") != "Ready":
            detail = condition.get("reason") or condition.get("message") or condition["status"]
            parts.append(f"{condition.get('type')}: {detail}")
    return "; ".join(parts)


TARGET = KServeTarget()
