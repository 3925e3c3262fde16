"""A fake Kubernetes API server on loopback, for the client path of the cluster targets.

No Kubernetes API server can run on these machines (no kind, k3s, kwok or envtest), so the
tests point the real ``kubernetes`` client at this one, through a kubeconfig they write. It
speaks the documented REST paths the targets call (``/api/v1/namespaces/{ns}/secrets``,
``/apis/apps/v1/namespaces/{ns}/deployments``, ``.../pods/{name}/log``, KServe's
``/apis/serving.kserve.io/...``: GET, list with ``labelSelector``, POST, PUT, PATCH (merge),
DELETE), answers errors as ``Status`` objects with the real codes (401, 404, 409), checks the
bearer token, stores objects, records every call, and plays a rollout:

- ``scenario="ready"``: a Deployment's pods go Pending -> Running and its ``readyReplicas``
  climb to ``spec.replicas`` over ``ready_after`` GETs of it; an InferenceService turns
  ``Ready`` with a ``status.url`` after ``ready_after`` GETs;
- ``"ImagePullBackOff"``, ``"FailedScheduling"`` (``Insufficient cpu``) and
  ``"CrashLoopBackOff"`` (with ``crash_logs`` as the pod's log): the pods stay stuck so.

For the capacity check it also lists ``nodes`` (``GET /api/v1/nodes``, built with
:func:`node`: ``status.allocatable``, taints, cordoned) and the pods of every namespace
(``GET /api/v1/pods``, with the ``fieldSelector`` terms ``path=value`` and ``path!=value``);
:meth:`FakeKubeAPI.add_pod` places a pod with requests on a node.

Why not ``kmock`` (PyPI): it mocks HTTP at the level of handlers to be scripted per test,
with no object store or rollout of its own; the targets need create/replace/list-by-label/
delete semantics and pods that follow a Deployment, which this small server keeps in one place.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

ITEM_RE = re.compile(
    r"^(?P<prefix>/api/v1|/apis/[^/]+/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>log|status))?)?$"
)
NAMESPACE_RE = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?$")
CLUSTER_RE = re.compile(r"^/api/v1/(?P<plural>nodes|pods)$")
ISVC_LABEL = "serving.kserve.io/inferenceservice"


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _fields_match(obj: dict[str, Any], selector: str | None) -> bool:
    """The API server's field selectors: ``a.b=v``, ``a.b==v`` and ``a.b!=v``, comma-joined."""
    for term in (selector or "").split(","):
        if not term.strip():
            continue
        if "!=" in term:
            path, value = term.split("!=", 1)
            if _field(obj, path.strip()) == value.strip():
                return False
        else:
            path, _, value = term.replace("==", "=").partition("=")
            if _field(obj, path.strip()) != value.strip():
                return False
    return True


def node(
    name: str,
    cpu: str = "4",
    memory: str = "16Gi",
    gpu: int = 0,
    *,
    taints: tuple[dict[str, str], ...] = (),
    unschedulable: bool = False,
    ready: bool = True,
    pods: int = 110,
) -> dict[str, Any]:
    """A Node as the API server returns it: allocatable, taints, cordoned, Ready."""
    allocatable = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    if gpu:
        allocatable["nvidia.com/gpu"] = str(gpu)
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": spec,
        "status": {
            "capacity": dict(allocatable),
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


class FakeKubeAPI:
    """The server, its store and its script. Use as a context manager."""

    def __init__(
        self,
        *,
        namespaces: tuple[str, ...] = ("default", "ml"),
        token: str = "fake-token",
        scenario: str = "ready",
        ready_after: int = 3,
        crash_logs: str = "",
        load_balancer_ip: str | None = None,
        nodes: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
    ) -> None:
        self.namespaces = list(namespaces)
        self.nodes = [copy.deepcopy(n) for n in nodes]
        self.token = token
        self.scenario = scenario
        self.ready_after = ready_after
        self.crash_logs = crash_logs
        self.load_balancer_ip = load_balancer_ip
        self.calls: list[tuple[str, str]] = []
        self.store: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        self._gets: dict[tuple[str, str, str], int] = {}
        self._version = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- life --

    def __enter__(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: Path, contexts: tuple[str, ...] = ("fake", "staging")) -> Path:
        """A kubeconfig whose contexts all point here with the bearer token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [
                {"name": c, "context": {"cluster": "fake", "user": "tester"}} for c in contexts
            ],
            "current-context": contexts[0],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- what tests look at --

    def objects(self, plural: str | None = None, selector: str | None = None) -> list[dict]:
        with self._lock:
            found = []
            for (_, _, kind_plural), items in self.store.items():
                if plural in (None, kind_plural):
                    found += [
                        o
                        for o in items.values()
                        if _matches(o["metadata"].get("labels") or {}, selector)
                    ]
            return copy.deepcopy(found)

    def names(self, plural: str) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.objects(plural))

    def add_pod(
        self,
        name: str,
        node_name: str,
        cpu: str = "0",
        memory: str = "0",
        gpu: int = 0,
        *,
        namespace: str = "default",
        phase: str = "Running",
        limits_only: bool = False,
    ) -> dict[str, Any]:
        """A pod of someone else's, scheduled on ``node_name`` with these requests."""
        asked: dict[str, str] = {"cpu": cpu, "memory": memory}
        resources: dict[str, Any] = {"limits" if limits_only else "requests": asked}
        if gpu:
            resources.setdefault("limits", {})["nvidia.com/gpu"] = str(gpu)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {
                "nodeName": node_name,
                "containers": [{"name": "main", "image": "busybox", "resources": resources}],
            },
            "status": {"phase": phase},
        }
        with self._lock:
            self.store.setdefault(("/api/v1", namespace, "pods"), {})[name] = pod
        return pod

    def writes(self) -> list[tuple[str, str]]:
        """The calls that changed something (POST, PUT, PATCH, DELETE), in order."""
        return [c for c in self.calls if c[0] != "GET"]

    # -- the rollout --

    def _pods_for(self, ns: str, owner: str, labels: dict[str, str], count: int) -> None:
        pods = self.store.setdefault(("/api/v1", ns, "pods"), {})
        for index in range(count):
            name = f"{owner}-5d8f7c9b4-{index:05d}"
            pods[name] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
                "status": {"phase": "Pending"},
            }

    def _play(self, ns: str, pods: list[dict], ready: bool) -> None:
        for pod in pods:
            status: dict[str, Any] = {"phase": "Pending"}
            container = {"name": "server", "ready": False, "restartCount": 0}
            if self.scenario == "ImagePullBackOff":
                container["state"] = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": 'Back-off pulling image "127.0.0.1:5000/models/sq:1"',
                    }
                }
                status["containerStatuses"] = [container]
            elif self.scenario == "FailedScheduling":
                status["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient cpu. preemption: "
                        "0/3 nodes are available: 3 No preemption victims found.",
                    }
                ]
            elif self.scenario == "CrashLoopBackOff":
                status["phase"] = "Running"
                container["restartCount"] = 4
                container["state"] = {
                    "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}
                }
                container["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
                status["containerStatuses"] = [container]
            elif ready:
                status["phase"] = "Running"
                container["ready"] = True
                container["state"] = {"running": {"startedAt": "2026-12-01T00:00:00Z"}}
                status["containerStatuses"] = [container]
            else:
                container["state"] = {"waiting": {"reason": "ContainerCreating"}}
                status["containerStatuses"] = [container]
            pod["status"] = status

    def _advance(self, key: tuple[str, str, str], obj: dict[str, Any]) -> None:
        """One GET of a Deployment or InferenceService: the rollout takes a step."""
        count = self._gets[key] = self._gets.get(key, 0) + 1
        ns, name = key[1], obj["metadata"]["name"]
        ok = self.scenario == "ready"
        if obj["kind"] == "Deployment":
            wanted = obj["spec"].get("replicas", 1)
            ready = min(wanted, wanted * count // self.ready_after) if ok else 0
            selector = obj["spec"]["selector"]["matchLabels"]
            pods = [
                p
                for p in self.store.get(("/api/v1", ns, "pods"), {}).values()
                if all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())
            ]
            for index, pod in enumerate(pods):
                self._play(ns, [pod], index < ready)
            obj["status"] = {
                "observedGeneration": obj["metadata"]["generation"],
                "replicas": wanted,
                "updatedReplicas": wanted,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "conditions": [
                    {"type": "Available", "status": "True" if ready >= wanted else "False"}
                ],
            }
        elif obj["kind"] == "InferenceService":
            ready = ok and count >= self.ready_after
            pods = [
                p
                for p in self.store.get(("/api/v1", ns, "pods"), {}).values()
                if p["metadata"]["labels"].get(ISVC_LABEL) == name
            ]
            self._play(ns, pods, ready)
            state = "True" if ready else "Unknown"
            obj["status"] = {
                "conditions": [
                    {"type": "PredictorReady", "status": state},
                    {"type": "IngressReady", "status": "True" if count > 1 else "Unknown"},
                    {"type": "Ready", "status": state},
                ]
            }
            if ready:
                mode = (
                    obj["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
                )
                internal = f"http://{name}-predictor.{ns}.svc.cluster.local"
                obj["status"]["url"] = (
                    internal if mode == "RawDeployment" else f"http://{name}.{ns}.example.com"
                )
                obj["status"]["address"] = {"url": internal}

    def _created(self, ns: str, obj: dict[str, Any]) -> None:
        if obj["kind"] == "Deployment":
            labels = obj["spec"]["template"]["metadata"]["labels"]
            self._pods_for(ns, obj["metadata"]["name"], labels, obj["spec"].get("replicas", 1))
        elif obj["kind"] == "InferenceService":
            name = obj["metadata"]["name"]
            labels = {ISVC_LABEL: name, "component": "predictor"}
            self._pods_for(ns, f"{name}-predictor", labels, 1)
        elif obj["kind"] == "Service" and self.load_balancer_ip:
            if obj["spec"].get("type") == "LoadBalancer":
                obj["status"] = {"loadBalancer": {"ingress": [{"ip": self.load_balancer_ip}]}}
        elif obj["kind"] == "Service" and obj["spec"].get("clusterIP") != "None":
            obj["spec"]["clusterIP"] = "10.0.0.17"

    def _removed(self, ns: str, obj: dict[str, Any]) -> None:
        pods = self.store.get(("/api/v1", ns, "pods"), {})
        if obj["kind"] == "Deployment":
            selector = obj["spec"]["selector"]["matchLabels"]
            for name in [
                n
                for n, p in pods.items()
                if all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())
            ]:
                del pods[name]
        elif obj["kind"] == "InferenceService":
            for name in [
                n
                for n, p in pods.items()
                if p["metadata"]["labels"].get(ISVC_LABEL) == obj["metadata"]["name"]
            ]:
                del pods[name]

    # -- HTTP --

    def _stamp(self, obj: dict[str, Any], generation: int) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        obj["metadata"]["generation"] = generation
        obj["metadata"].setdefault("uid", f"uid-{self._version}")

    def handle(self, method: str, raw_path: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        with self._lock:
            self.calls.append((method, path))
            match = NAMESPACE_RE.match(path)
            if match and method == "GET":
                name = match["name"]
                if name is None:
                    items = [{"metadata": {"name": n}} for n in self.namespaces]
                    return 200, {"kind": "NamespaceList", "apiVersion": "v1", "items": items}
                if name in self.namespaces:
                    return 200, {
                        "kind": "Namespace",
                        "apiVersion": "v1",
                        "metadata": {"name": name},
                    }
                return _status(404, "NotFound", f'namespaces "{name}" not found')
            match = CLUSTER_RE.match(path)
            if match and method == "GET":
                fields = (query.get("fieldSelector") or [""])[0]
                if match["plural"] == "nodes":
                    found = self.nodes
                else:
                    found = [
                        pod
                        for (prefix, _, plural), items in self.store.items()
                        if (prefix, plural) == ("/api/v1", "pods")
                        for pod in items.values()
                    ]
                found = [o for o in found if _fields_match(o, fields)]
                return 200, {"kind": "List", "apiVersion": "v1", "items": copy.deepcopy(found)}
            match = ITEM_RE.match(path)
            if match is None:
                return _status(404, "NotFound", f"the server could not find {path}")
            ns, plural, name, sub = match["ns"], match["plural"], match["name"], match["sub"]
            key = (match["prefix"], ns, plural)
            items = self.store.setdefault(key, {})
            if ns not in self.namespaces:
                return _status(404, "NotFound", f'namespaces "{ns}" not found')
            if name is None:
                if method == "GET":
                    selector = (query.get("labelSelector") or [""])[0]
                    found = [
                        o
                        for o in items.values()
                        if _matches(o["metadata"].get("labels") or {}, selector)
                    ]
                    return 200, {"kind": "List", "items": copy.deepcopy(found)}
                if method == "POST":
                    obj = copy.deepcopy(body)
                    new = obj["metadata"]["name"]
                    if new in items:
                        return _status(409, "AlreadyExists", f'{plural} "{new}" already exists')
                    obj["metadata"]["namespace"] = ns
                    self._stamp(obj, 1)
                    items[new] = obj
                    self._created(ns, obj)
                    return 201, obj
                return _status(405, "MethodNotAllowed", f"{method} on a collection")
            obj = items.get(name)
            if obj is None:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            if sub == "log":
                if self.scenario == "CrashLoopBackOff":
                    text = self.crash_logs
                else:
                    text = f"{name}: loading model\n{name}: serving on 0.0.0.0:8500\n"
                lines = int((query.get("tailLines") or ["0"])[0])
                kept = text.splitlines()[-lines:] if lines else text.splitlines()
                return 200, "\n".join(kept) + "\n"
            if method == "GET":
                if obj["kind"] in ("Deployment", "InferenceService"):
                    self._advance(key, obj)
                return 200, copy.deepcopy(obj)
            if method == "DELETE":
                del items[name]
                self._removed(ns, obj)
                return 200, {"kind": "Status", "status": "Success"}
            if method in ("PUT", "PATCH"):
                if method == "PUT":
                    given = (body.get("metadata") or {}).get("resourceVersion")
                    if given and given != obj["metadata"]["resourceVersion"]:
                        return _status(409, "Conflict", f'{plural} "{name}": object modified')
                    new = copy.deepcopy(body)
                else:
                    new = _merge(copy.deepcopy(obj), body)
                self._stamp(new, obj["metadata"]["generation"] + 1)
                items[name] = new
                return 200, new
            return _status(405, "MethodNotAllowed", method)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    code, answer = _status(401, "Unauthorized", "Unauthorized")
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    data = self.rfile.read(length) if length else b""
                    body = json.loads(data) if data else None
                    code, answer = fake.handle(self.command, self.path, body)
                if isinstance(answer, str):
                    payload, kind = answer.encode(), "text/plain"
                else:
                    payload, kind = json.dumps(answer).encode(), "application/json"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


# -- what both test modules set up --------------------------------------------------------

PUSHED_REF = "127.0.0.1:5000/models/sq:1"
SQUEEZENET_PRE = {"channel_order": "BGR", "layout": "NCHW", "dtype": "float16"}


def pushed_squeezenet(workspace: Any, weights_dir: Path, tmp_path: Path, pushed: bool = True):
    """The real SqueezeNet registered, and an image record for it made without Docker.

    These tests test the cluster path, not Docker: the record says what the package step
    would have recorded after building and pushing (tag, image id, labels, the push).
    """
    from accel_widgets.engine.models.register import register_onnx

    register_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        "sq",
        workspace=workspace,
        preprocessing=SQUEEZENET_PRE,
        labels="imagenet",
    )
    artifact = workspace.get_artifact("sq")
    staged = tmp_path / "staged-image"
    staged.mkdir()
    (staged / "Dockerfile").write_text("FROM scratch\n")
    info: dict[str, Any] = {
        "tag": "accel-widgets/sq:1",
        "image_id": "sha256:" + "ab" * 32,
        # What an image of this accel-widgets records: its server reads a mounted key file.
        "labels": {"io.accel-widgets.model": "sq", "io.accel-widgets.keys": "file"},
        "pushed": [],
    }
    if pushed:
        info["pushed"] = [{"ref": PUSHED_REF, "digest": "sha256:" + "cd" * 32}]
    image = workspace.register_image("sq", artifact, staged, info=info)
    return artifact, image
