"""The shared target of Kubernetes and KServe: deploy with progress, status, logs, delete by one
label selector, and the capacity check, on top of the manifests, the connection, the rollout
diagnosis and the capacity maths of this folder.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from abc import abstractmethod
from typing import Any

from accel_widgets.engine.packaging.package_context import GRPC_PORT
from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ImageRecord,
    ServiceRecord,
    Workspace,
)
from accel_widgets.engine.targets.base import Target, pushed_reference
from accel_widgets.engine.targets.capacity import QuotaReport
from accel_widgets.engine.targets.k8s.api import Kube, KubeApiError, connect
from accel_widgets.engine.targets.k8s.capacity import (
    COUNTED,
    amount_text,
    capacity_model,
    container_requests,
    free_text,
    need_text,
    quota_row,
    read_nodes,
    to_cores,
    to_gib,
)
from accel_widgets.engine.targets.k8s.manifests import (
    GPU_RESOURCE,
    check_k8s_name,
    check_keys_from_file,
    check_settings,
    gpu_tolerations,
    resources_for,
)
from accel_widgets.engine.targets.k8s.rollout import waiting_containers
from accel_widgets.errors import ServingError
from accel_widgets.progress import Reporter

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
        report("quota", 0.8, f"comparing with {replicas} pod(s) of {need_text(need)}")
        usable = [n for n in nodes if n["counted"]]
        total = {r: sum(n["_alloc"][r] for n in usable) for r in COUNTED}
        used = {r: sum(n["_requested"][r] for n in usable) for r in COUNTED}
        needed = {r: replicas * need[r] for r in COUNTED}
        rows = [
            quota_row("CPU (cluster)", used["cpu"], total["cpu"], needed["cpu"], to_cores, "cores"),
            quota_row(
                "memory (cluster)", used["memory"], total["memory"], needed["memory"], to_gib, "GiB"
            ),
        ]
        if gpu:
            rows.append(
                quota_row(
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
        per_pod = f"{need_text(need)} a pod"
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
                f"The pods ask for {amount_text(GPU_RESOURCE, gpu)} each, but no schedulable "
                f"node of {where} has nvidia.com/gpu: add a GPU node pool with the NVIDIA "
                "device plugin (on AKS: `az aks nodepool add --node-vm-size "
                "Standard_NC4as_T4_v3 ...`; taint it nvidia.com/gpu:NoSchedule if at all, the "
                "taint the pods tolerate), or deploy without GPUs (gpu=0)."
            )
        elif short:
            lacking = ", ".join(
                f"{amount_text(r, total[r] - used[r])} free of {amount_text(r, needed[r])} needed"
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
                f"node with the most room, {best['name']}, has {free_text(best)} free. The "
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
            "per_pod": {
                "cpu": to_cores(need["cpu"]),
                "memory_gib": to_gib(need["memory"]),
                "gpu": gpu,
            },
            "replicas": replicas,
            "pods_that_fit": fit,
            "nodes": [{k: v for k, v in n.items() if not k.startswith("_")} for n in nodes],
            "largest_node_free": largest,
        }
        if most > replicas:
            at_most = {r: most * need[r] for r in COUNTED}
            details["max_replicas"] = most
            details["max_needed"] = {
                "cpu": to_cores(at_most["cpu"]),
                "memory_gib": to_gib(at_most["memory"]),
                "gpu": at_most[GPU_RESOURCE],
            }
            then = (
                "that fits now too."
                if fit >= most
                else f"only {fit} fit now, so scale the node pool (or let the cluster "
                "autoscaler add nodes) before the load gets there."
            )
            advice += (
                f" At the autoscale maximum of {most} pods it needs {need_text(at_most)}: {then}"
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
            for _, status in waiting_containers(pod):
                reason = ((status.get("state") or {}).get("waiting") or {}).get("reason", "")
                if reason in ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull"):
                    return True
        return False
