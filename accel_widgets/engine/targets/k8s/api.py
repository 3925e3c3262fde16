"""The connection to a cluster: the kubeconfig, the official ``kubernetes`` client's ``ApiClient``
on the documented REST paths of each kind (core objects and KServe's custom resources), and its
errors in the user's words.

The ``kubernetes`` package (>= 37) is imported only inside the calls that talk to a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_widgets.engine.targets.k8s.manifests import DELETE_OPTIONS, KINDS, MANAGED_BY, selector
from accel_widgets.errors import ServingError

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
