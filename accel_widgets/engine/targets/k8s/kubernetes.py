"""The Kubernetes target: a packaged image as a Deployment and a Service on any cluster.

``manifests`` builds plain objects (YAML for kubectl or GitOps, validated strictly against
the Kubernetes schemas in the tests); ``deploy`` applies the same objects with the official
``kubernetes`` client to the kubeconfig's current or named context and waits for the
rollout with progress:

- a Secret holding a generated API key (``auth``, on by default: a cluster is beyond this
  machine), mounted read-only into the server's container as a file
  (``ACCEL_WIDGETS_API_KEYS_FILE`` names it), never put in its environment;
- a Deployment of the pushed image (a cluster cannot pull from this machine's engine), with
  native gRPC startup, readiness and liveness probes on the server's ``grpc.health.v1``
  service (port 8500), CPU and memory sized from the catalog's measurements, uid 10001 and
  no privilege escalation, and ``nvidia.com/gpu`` limits plus a toleration with ``gpu``;
- a Service with the gRPC port (8500, named ``grpc``) and the REST port (8501, ``http``):
  headless with ``headless`` (a ClusterIP Service balances gRPC per connection; a headless
  one lets the client's ``round_robin`` spread requests over the pods), a LoadBalancer with
  ``expose=loadbalancer``;
- an ``autoscaling/v2`` HorizontalPodAutoscaler on CPU with ``autoscale MIN:MAX``, and a
  ``policy/v1`` PodDisruptionBudget when more than one replica runs.

A stuck rollout is explained: an image the cluster cannot pull, pods that cannot be
scheduled for lack of CPU, memory or GPUs, and a crash loop with the pod's last log lines.
What a failed deploy made is removed again, and its workspace row with it.
"""

from __future__ import annotations

import time
from typing import Any

from accel_widgets.engine.packaging.package_context import GRPC_PORT, REST_PORT
from accel_widgets.engine.store.workspace import ArtifactRecord, ServiceRecord, Workspace
from accel_widgets.engine.targets.base import Setting
from accel_widgets.engine.targets.k8s.api import Kube
from accel_widgets.engine.targets.k8s.cluster import ClusterTarget
from accel_widgets.engine.targets.k8s.manifests import (
    SERVICE_LABEL,
    api_key_secret,
    common_settings,
    container_security,
    gpu_tolerations,
    grpc_probe,
    labels,
    metadata,
    mount_secret,
    pod_security,
    resources_for,
    secret_name,
    selector,
    server_args,
    server_env,
)
from accel_widgets.engine.targets.k8s.rollout import (
    POLL_S,
    connect_hint,
    pending_reason,
    pod_trouble,
)
from accel_widgets.errors import ServingError
from accel_widgets.progress import Reporter

EXPOSE = ("cluster", "loadbalancer")
#: Share of a pod's CPU request the autoscaler keeps each pod at.
CPU_TARGET_PERCENT = 70


class KubernetesTarget(ClusterTarget):
    """A Deployment, Service, HPA and PDB of the packaged image, on a kubeconfig context."""

    name = "kubernetes"
    title = "Kubernetes"
    description = (
        "the packaged image as a Deployment and Service on a Kubernetes cluster (AKS, EKS, "
        "GKE, on-premises), through your kubeconfig"
    )
    kinds = ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Deployment", "Secret")
    container = "server"
    settings = (
        *common_settings(300.0)[:7],
        Setting(
            "headless",
            bool,
            False,
            "a headless Service, so clients round-robin over the pods (gRPC keeps one "
            "connection per pod)",
        ),
        Setting(
            "expose",
            str,
            "cluster",
            "cluster: reachable inside the cluster (kubectl port-forward from here); "
            "loadbalancer: an external address from the cloud's load balancer",
            choices=EXPOSE,
        ),
        *common_settings(300.0)[7:],
    )

    def pod_selector(self, name: str) -> str:
        return selector(name)

    def build(
        self,
        artifact: ArtifactRecord,
        name: str,
        image: str,
        settings: dict[str, Any],
        parsed: dict[str, Any],
        key: str | None,
    ) -> list[dict[str, Any]]:
        namespace = settings["namespace"]
        if settings["headless"] and settings["expose"] == "loadbalancer":
            raise ServingError(
                "a headless Service has no load balancer address: choose headless (clients "
                "inside the cluster round-robin over pods) or expose=loadbalancer, not both"
            )
        autoscale = parsed["autoscale"]
        replicas = autoscale[0] if autoscale else settings["replicas"]
        objects: list[dict[str, Any]] = []
        if key:
            objects.append(api_key_secret(name, namespace, key))
        objects.append(self._deployment(artifact, name, image, settings, replicas, bool(key)))
        objects.append(self._service(name, namespace, settings))
        if autoscale:
            objects.append(
                {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": metadata(name, namespace),
                    "spec": {
                        "scaleTargetRef": {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": name,
                        },
                        "minReplicas": autoscale[0],
                        "maxReplicas": autoscale[1],
                        "metrics": [
                            {
                                "type": "Resource",
                                "resource": {
                                    "name": "cpu",
                                    "target": {
                                        "type": "Utilization",
                                        "averageUtilization": CPU_TARGET_PERCENT,
                                    },
                                },
                            }
                        ],
                    },
                }
            )
        if replicas > 1 or autoscale:
            objects.append(
                {
                    "apiVersion": "policy/v1",
                    "kind": "PodDisruptionBudget",
                    "metadata": metadata(name, namespace),
                    "spec": {
                        "maxUnavailable": 1,
                        "selector": {"matchLabels": self._match(name)},
                    },
                }
            )
        return objects

    @staticmethod
    def _match(name: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": name, SERVICE_LABEL: name}

    def _deployment(
        self,
        artifact: ArtifactRecord,
        name: str,
        image: str,
        settings: dict[str, Any],
        replicas: int,
        auth: bool,
    ) -> dict[str, Any]:
        namespace = settings["namespace"]
        # The startup probe covers loading and warming up the model, up to ready_timeout.
        startup_failures = max(3, int(settings["ready_timeout"] // 2))
        container: dict[str, Any] = {
            "name": self.container,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "ports": [
                {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
            ],
            "env": server_env(secret_name(name) if auth else None),
            "resources": resources_for(artifact, settings["gpu"]),
            "startupProbe": grpc_probe(period=2, failures=startup_failures),
            "readinessProbe": grpc_probe(period=5, failures=2),
            "livenessProbe": grpc_probe(period=10, failures=3),
            "securityContext": container_security(),
        }
        args = server_args(auth)
        if args:
            container["args"] = args
        pod: dict[str, Any] = {
            "securityContext": pod_security(),
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 30,
            "containers": [container],
        }
        mount_secret(container, pod, secret_name(name) if auth else None)
        tolerations = gpu_tolerations(settings["gpu"])
        if tolerations:
            pod["tolerations"] = tolerations
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(name, namespace),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": self._match(name)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {
                        "labels": {
                            **labels(name),
                            "io.accel-widgets/model": artifact.model_name,
                        },
                    },
                    "spec": pod,
                },
            },
        }

    def _service(self, name: str, namespace: str, settings: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "selector": self._match(name),
            "ports": [
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
                {"name": "http", "port": REST_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        }
        if settings["headless"]:
            spec["clusterIP"] = "None"
        spec["type"] = "LoadBalancer" if settings["expose"] == "loadbalancer" else "ClusterIP"
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(name, namespace),
            "spec": spec,
        }

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
        last = "starting"
        while True:
            report.check()
            deployment = kube.get("Deployment", namespace, name)
            if deployment is None:
                raise ServingError(
                    f"the Deployment {name} disappeared from namespace {namespace} while it "
                    "was rolling out (deleted by someone else?)"
                )
            wanted = deployment["spec"].get("replicas", 1)
            status = deployment.get("status") or {}
            ready = status.get("readyReplicas", 0) or 0
            updated = status.get("updatedReplicas", 0) or 0
            current = status.get("observedGeneration", 0) >= deployment["metadata"].get(
                "generation", 0
            )
            if current and ready >= wanted and updated >= wanted:
                break
            pods = self.pods(kube, namespace, name)
            trouble = pod_trouble(kube, namespace, pods, image, self.container, unschedulable)
            if trouble:
                raise ServingError(trouble)
            for condition in status.get("conditions") or []:
                if condition.get("reason") == "ProgressDeadlineExceeded":
                    raise ServingError(
                        f"the Deployment {name} did not progress: {condition.get('message')}"
                    )
            last = pending_reason(pods)
            if time.monotonic() > deadline:
                raise ServingError(
                    f"the Deployment {name} had {ready} of {wanted} replicas ready after "
                    f"{timeout:.0f} s (pods: {last}); see `kubectl describe pods -n "
                    f"{namespace} -l {SERVICE_LABEL}={name}`, or allow more time "
                    "(ready_timeout)"
                )
            report(
                "deploy",
                0.2 + 0.75 * ready / max(wanted, 1),
                f"{ready}/{wanted} replicas ready ({last})",
            )
            time.sleep(POLL_S)
        report("deploy", 0.95, f"{wanted}/{wanted} replicas ready")
        return self._address(kube, name, settings, deadline, report)

    def _address(
        self,
        kube: Kube,
        name: str,
        settings: dict[str, Any],
        deadline: float,
        report: Reporter,
    ) -> dict[str, Any]:
        namespace = settings["namespace"]
        in_cluster = f"{name}.{namespace}.svc.cluster.local"
        while settings["expose"] == "loadbalancer":
            service = kube.get("Service", namespace, name) or {}
            ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            for entry in ingress or []:
                address = entry.get("ip") or entry.get("hostname")
                if address:
                    return {"address": address, "port": GRPC_PORT, "in_cluster": in_cluster}
            if time.monotonic() > deadline:
                report("deploy", 0.97, "the load balancer has no address yet")
                break
            report("deploy", 0.96, "waiting for the load balancer's address")
            time.sleep(POLL_S)
        hint = connect_hint(namespace, name)
        return {
            "address": in_cluster,
            "port": GRPC_PORT,
            "in_cluster": in_cluster,
            "connect": hint,
        }

    # -- status --

    def status(self, workspace: Workspace, service: ServiceRecord) -> str:
        kube = self._kube(service)
        namespace = service.info["namespace"]
        deployment = kube.get("Deployment", namespace, service.name)
        if deployment is None:
            return "dead"
        wanted = deployment["spec"].get("replicas", 1)
        ready = (deployment.get("status") or {}).get("readyReplicas", 0) or 0
        if ready >= 1:
            return "running"
        if wanted == 0:
            return "dead"
        if self.unhealthy_pods(kube, namespace, service.name):
            return "unhealthy"
        return "starting" if service.state == "starting" else "unhealthy"


TARGET = KubernetesTarget()
