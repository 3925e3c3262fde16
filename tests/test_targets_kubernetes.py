"""The Kubernetes target: its manifests, validated strictly offline, and its client path.

No Kubernetes API server can run on these machines, so:

- every manifest is validated with ``kubernetes-validate`` in strict mode against the
  Kubernetes 1.33 schemas it bundles (unknown fields fail), and a broken manifest is shown
  to fail, so the validation can fail;
- deploy, status, logs and delete run the real ``kubernetes`` client against
  ``tests/k8s_api_server.py``, a fake API server on loopback that speaks the documented REST
  paths the target calls, stores the objects, records the calls and plays a rollout
  (pods pending, then ready; or stuck on ImagePullBackOff, FailedScheduling, CrashLoopBackOff).

The image record is made without Docker (the package step's record after a push): these
tests test the cluster path, not Docker. The model is the real SqueezeNet.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
from k8s_api_server import PUSHED_REF, FakeKubeAPI, pushed_squeezenet

from accel_widgets.engine.store.workspace import ArtifactRecord, Workspace
from accel_widgets.engine.targets import (
    delete_service,
    deploy,
    get_target,
    manifests,
    service_logs,
    service_status,
)
from accel_widgets.engine.targets.k8s import common as kc
from accel_widgets.engine.targets.k8s import rollout
from accel_widgets.errors import ServingError
from accel_widgets.progress import EventLog

pytestmark = pytest.mark.timeout(60)

K8S_VERSION = "1.33.0"
SELECTOR = "io.accel-widgets/service=sq"


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch):
    monkeypatch.setattr(kc, "POLL_S", 0.01)
    monkeypatch.setattr(rollout, "UNSCHEDULABLE_GRACE_S", 0.0)  # where pod_trouble reads it


@pytest.fixture(scope="module")
def _registered(tmp_path_factory, weights_dir) -> Path:
    """SqueezeNet and its pushed image, registered once; each test works on a copy."""
    root = tmp_path_factory.mktemp("k8s-template")
    pushed_squeezenet(Workspace(root / "workspace"), weights_dir, root)
    return root / "workspace"


@pytest.fixture
def workspace(_registered, tmp_path) -> Workspace:
    shutil.copytree(_registered, tmp_path / "workspace")
    return Workspace(tmp_path / "workspace")


@pytest.fixture
def image(workspace):
    return workspace.get_image("sq")


@pytest.fixture
def cluster(tmp_path):
    with FakeKubeAPI() as fake:
        fake.kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        yield fake


def validate(obj: dict) -> None:
    kubernetes_validate.validate(copy.deepcopy(obj), K8S_VERSION, strict=True)


def _by_kind(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


# -- manifests, offline ------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"auth": False},
        {"headless": True, "replicas": 3},
        {"autoscale": "2:10", "gpu": 1, "namespace": "ml"},
        {"expose": "loadbalancer", "replicas": 2},
    ],
    ids=["default", "no-auth", "headless", "autoscale-gpu", "loadbalancer"],
)
def test_every_manifest_validates_strictly(workspace, image, settings):
    objects = manifests(
        "sq", target="kubernetes", image=PUSHED_REF, workspace=workspace, **settings
    )
    for obj in objects:
        validate(obj)
        assert obj["metadata"]["labels"] == {
            "app.kubernetes.io/name": "sq",
            "app.kubernetes.io/managed-by": "accel-widgets",
            "io.accel-widgets/service": "sq",
        }
    kinds = [o["kind"] for o in objects]
    expected = ["Deployment", "Service"]
    if settings.get("auth", True):
        expected.insert(0, "Secret")
    if "autoscale" in settings:
        expected.append("HorizontalPodAutoscaler")
    if settings.get("replicas", 1) > 1 or "autoscale" in settings:
        expected.append("PodDisruptionBudget")
    assert kinds == expected


def test_deployment_probes_security_resources_and_key(workspace, image):
    objects = _by_kind(
        manifests("sq", target="kubernetes", image=PUSHED_REF, workspace=workspace, gpu=2)
    )
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == PUSHED_REF
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 8500}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": 8500,
        "http": 8501,
    }
    # A custom model: four times its ONNX file plus 256 MiB, at least 512 MiB.
    assert container["resources"]["requests"] == {"cpu": "1000m", "memory": "512Mi"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    # The key reaches the server as a read-only file from the Secret, never its environment.
    key = objects["Secret"]["stringData"]["api-keys"]
    assert len(key) >= 32
    assert {
        "name": "ACCEL_WIDGETS_API_KEYS_FILE",
        "value": "/var/run/secrets/accel-widgets/api-keys",
    } in container["env"]
    assert not any(e["name"] == "ACCEL_WIDGETS_API_KEYS" for e in container["env"])
    assert key not in json.dumps(objects["Deployment"])
    assert container["volumeMounts"] == [
        {"name": "api-key", "mountPath": "/var/run/secrets/accel-widgets", "readOnly": True}
    ]
    [volume] = pod["volumes"]
    assert volume["secret"]["secretName"] == "sq-api-key"
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": "api-keys"}]
    assert "args" not in container  # with a key the server needs no --insecure-no-auth
    service = objects["Service"]["spec"]
    assert [(p["name"], p["port"]) for p in service["ports"]] == [("grpc", 8500), ("http", 8501)]


def test_headless_service_and_autoscaler(workspace, image):
    objects = _by_kind(
        manifests(
            "sq", target="kubernetes", image=PUSHED_REF, workspace=workspace, headless=True,
            autoscale="2:10",
        )
    )  # fmt: skip
    assert objects["Service"]["spec"]["clusterIP"] == "None"
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sq"}
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert objects["Deployment"]["spec"]["replicas"] == 2
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_catalog_models_are_sized_from_their_measurements():
    def artifact(name, precision="fp32"):
        return ArtifactRecord(1, 1, name, 1, precision, "onnx", Path("/x"), 10**8, {}, 0.0)

    resnet = kc.resources_for(artifact("resnet50"))
    assert resnet["requests"] == {"cpu": "1000m", "memory": "448Mi"}  # 0.35 GiB + 25%
    assert resnet["limits"]["memory"] == "896Mi"
    vgg = kc.resources_for(artifact("vgg16"))  # 163 ms a request: two cores
    assert vgg["requests"]["cpu"] == "2000m"
    assert vgg["requests"]["memory"] == "1536Mi"
    assert kc.resources_for(artifact("resnet50", "int8"))["requests"]["cpu"] == "1000m"


def test_the_validator_rejects_broken_manifests(workspace, image):
    objects = _by_kind(manifests("sq", target="kubernetes", image=PUSHED_REF, workspace=workspace))
    typo = copy.deepcopy(objects["Deployment"])
    typo["spec"]["replicass"] = 2  # an unknown field: strict mode refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(typo)
    wrong_type = copy.deepcopy(objects["Service"])
    wrong_type["spec"]["ports"][0]["port"] = "eighty-five-hundred"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type)


# -- bad settings: refused before anything is created -------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kubeconfig": "/nonexistent/kubeconfig"}, "no kubeconfig at /nonexistent/kubeconfig"),
        ({"context": "prod"}, "no context 'prod' in the kubeconfig"),
        ({"namespace": "missing"}, "namespace 'missing' does not exist in context fake"),
        ({"autoscale": "10:2"}, "autoscale '10:2': MIN must be at least 1 and at most MAX"),
        ({"autoscale": "lots"}, "autoscale 'lots' must be MIN:MAX replicas"),
        ({"gpu": -1}, "gpu=-1 must be 0 (none) or a number of GPUs per pod"),
        ({"replicas": 0}, "replicas=0 must be at least 1"),
        ({"headless": True, "expose": "loadbalancer"}, "a headless Service has no load balancer"),
        ({"expose": "nodeport"}, "must be one of cluster, loadbalancer"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_made(workspace, image, cluster, settings, message):
    given = {"kubeconfig": str(cluster.kubeconfig), **settings}
    with pytest.raises(ServingError) as caught:
        deploy("sq", target="kubernetes", image=PUSHED_REF, workspace=workspace, **given)
    assert message in str(caught.value)
    assert cluster.writes() == []
    assert workspace.list_services() == []


def test_unknown_context_lists_the_contexts(workspace, image, cluster):
    with pytest.raises(ServingError, match=r"its contexts: fake, staging"):
        deploy(
            "sq", target="kubernetes", image=PUSHED_REF, workspace=workspace,
            kubeconfig=str(cluster.kubeconfig), context="prod",
        )  # fmt: skip


def test_missing_namespace_lists_the_namespaces(workspace, image, cluster):
    with pytest.raises(ServingError, match=r"namespaces there: default, ml"):
        deploy(
            "sq", target="kubernetes", image=PUSHED_REF, workspace=workspace,
            kubeconfig=str(cluster.kubeconfig), namespace="missing",
        )  # fmt: skip


def test_a_never_pushed_image_is_refused(workspace, image, cluster):
    workspace.update_image(image, {**image.info, "pushed": []})
    with pytest.raises(ServingError, match=r"was never pushed, and a remote target cannot pull"):
        deploy("sq", target="kubernetes", workspace=workspace, kubeconfig=str(cluster.kubeconfig))
    assert cluster.calls == []


def test_kubeconfig_defaults_to_the_environment(workspace, image, cluster, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig.parent / "absent"))
    with pytest.raises(ServingError, match=r"no kubeconfig at .*absent"):
        deploy("sq", target="kubernetes", image=PUSHED_REF, workspace=workspace)


# -- the client path against the fake API server ------------------------------------------


def test_deploy_status_logs_delete(workspace, image, cluster):
    events = EventLog()
    service = deploy(
        "sq", target="kubernetes", image=PUSHED_REF, workspace=workspace, progress=events,
        kubeconfig=str(cluster.kubeconfig), namespace="ml", replicas=2,
    )  # fmt: skip
    # What was created, in order, and nothing else.
    assert cluster.writes() == [
        ("POST", "/api/v1/namespaces/ml/secrets"),
        ("POST", "/apis/apps/v1/namespaces/ml/deployments"),
        ("POST", "/api/v1/namespaces/ml/services"),
        ("POST", "/apis/policy/v1/namespaces/ml/poddisruptionbudgets"),
    ]
    assert cluster.calls[0] == ("GET", "/api/v1/namespaces/ml")
    (secret,) = cluster.objects("secrets")
    assert secret["stringData"]["api-keys"] == service.key
    (deployment,) = cluster.objects("deployments")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == PUSHED_REF
    # Progress: replicas ready out of wanted, climbing, then ready.
    messages = [e.message for e in events]
    assert "0/2 replicas ready (ContainerCreating)" in messages
    assert "1/2 replicas ready (ContainerCreating)" in messages
    fractions = [e.fraction for e in events if e.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "connect with `kubectl port-forward -n ml svc/sq 8500:8500`" in messages[-1]
    # The workspace row: where it is and how to reach it.
    assert service.state == "running" and service.target == "kubernetes"
    assert (service.address, service.port) == ("sq.ml.svc.cluster.local", 8500)
    assert service.info["connect"] == "kubectl port-forward -n ml svc/sq 8500:8500"
    assert service.info["namespace"] == "ml" and service.info["context"] == "fake"
    assert service.info["objects"] == [
        "Secret/sq-api-key",
        "Deployment/sq",
        "Service/sq",
        "PodDisruptionBudget/sq",
    ]
    assert service_status("sq", workspace).live == "running"
    logs = service_logs("sq", 5, workspace)
    assert logs.count("==> pod sq-5d8f7c9b4-") == 2 and "serving on 0.0.0.0:8500" in logs
    delete_service("sq", workspace)
    assert cluster.objects(selector=SELECTOR) == []
    assert cluster.objects("pods") == []
    assert workspace.list_services() == []


def test_load_balancer_address_autoscaler_and_gpu(workspace, image, tmp_path):
    with FakeKubeAPI(load_balancer_ip="203.0.113.10") as cluster:
        config = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        service = deploy(
            "sq", target="kubernetes", image=PUSHED_REF, workspace=workspace,
            kubeconfig=str(config), context="staging", expose="loadbalancer",
            autoscale="2:5", gpu=1, auth=False,
        )  # fmt: skip
        assert (service.address, service.port, service.key) == ("203.0.113.10", 8500, None)
        assert "connect" not in service.info
        assert service.info["context"] == "staging"
        assert cluster.names("horizontalpodautoscalers") == ["sq"]
        (deployment,) = cluster.objects("deployments")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["--insecure-no-auth"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert cluster.objects("secrets") == []
        delete_service("sq", workspace)
        assert cluster.objects(selector=SELECTOR) == []


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        (
            "ImagePullBackOff",
            [
                "the cluster cannot pull the image 127.0.0.1:5000/models/sq:1",
                "must be pushed to a registry the cluster can pull from",
                "imagePullSecrets in namespace default",
            ],
        ),
        (
            "FailedScheduling",
            ["cannot be scheduled (FailedScheduling): not enough cpu on any node"],
        ),
        (
            "CrashLoopBackOff",
            [
                "keeps crashing (CrashLoopBackOff, exit code 1, 4 restarts)",
                "onnxruntime: INVALID_GRAPH",
            ],
        ),
    ],
)
def test_a_stuck_rollout_is_explained_and_leaves_nothing(
    workspace, image, tmp_path, scenario, expected
):
    crash = "loading /srv/model/model.onnx\nTraceback (most recent call last):\n"
    crash += "onnxruntime: INVALID_GRAPH\n"
    with FakeKubeAPI(scenario=scenario, crash_logs=crash) as cluster:
        config = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        with pytest.raises(ServingError) as caught:
            deploy(
                "sq", target="kubernetes", image=PUSHED_REF, workspace=workspace,
                kubeconfig=str(config), replicas=2,
            )  # fmt: skip
        for text in expected:
            assert text in str(caught.value)
        assert cluster.objects(selector=SELECTOR) == []
        assert cluster.objects("pods") == []
        assert workspace.list_services() == []
        deletes = [c for c in cluster.writes() if c[0] == "DELETE"]
        assert len(deletes) == 4  # PDB, Service, Deployment, Secret


def test_a_rollout_that_never_finishes_times_out(workspace, image, tmp_path):
    with FakeKubeAPI(ready_after=10**6) as cluster:
        config = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        with pytest.raises(ServingError, match=r"had 0 of 1 replicas ready after 0 s"):
            deploy(
                "sq", target="kubernetes", image=PUSHED_REF, workspace=workspace,
                kubeconfig=str(config), ready_timeout=0.2,
            )  # fmt: skip
        assert cluster.objects(selector=SELECTOR) == []


def test_leftovers_of_ours_are_replaced_and_foreign_objects_refused(workspace, image, cluster):
    common = {"kubeconfig": str(cluster.kubeconfig), "image": PUSHED_REF, "workspace": workspace}
    deploy("sq", target="kubernetes", **common)
    workspace.remove_service("sq")  # the row is lost (a crash); the objects are still there
    deploy("sq", target="kubernetes", **common)
    puts = [c for c in cluster.writes() if c[0] == "PUT"]
    assert ("PUT", "/apis/apps/v1/namespaces/default/deployments/sq") in puts
    delete_service("sq", workspace)
    # Someone else's Service with the same name is not touched.
    cluster.handle(
        "POST",
        "/api/v1/namespaces/default/services",
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sq"}, "spec": {}},
    )
    with pytest.raises(ServingError, match=r"a Service named sq exists .* not made by accel"):
        deploy("sq", target="kubernetes", **common)
    assert cluster.names("services") == ["sq"]
    assert cluster.objects(selector=SELECTOR) == []


def test_status_when_the_deployment_is_gone_or_unhealthy(workspace, image, cluster):
    deploy("sq", target="kubernetes", image=PUSHED_REF, workspace=workspace,
           kubeconfig=str(cluster.kubeconfig))  # fmt: skip
    cluster.scenario = "CrashLoopBackOff"
    deployment = cluster.store[("/apis/apps/v1", "default", "deployments")]["sq"]
    cluster._gets.clear()
    assert service_status("sq", workspace).live == "unhealthy"
    cluster.handle("DELETE", "/apis/apps/v1/namespaces/default/deployments/sq", None)
    assert deployment["kind"] == "Deployment"
    assert service_status("sq", workspace).live == "dead"
    delete_service("sq", workspace)
    assert cluster.objects(selector=SELECTOR) == []


def test_the_target_declares_its_settings():
    target = get_target("kubernetes")
    described = target.describe()
    names = [s["name"] for s in described["settings"]]
    assert names == [
        "context", "kubeconfig", "namespace", "replicas", "autoscale", "gpu", "auth",
        "headless", "expose", "ready_timeout",
    ]  # fmt: skip
    assert described["needs_image"] is True
    assert target.setting("ready_timeout").default == 300.0


# -- the command line --------------------------------------------------------------------


def test_cli_writes_manifests_that_validate_and_deploys_with_the_connect_hint(
    workspace, image, cluster, tmp_path, capsys
):
    """`accel-widgets manifests --out` writes one file per object; `deploy` prints how to
    reach a service with no external address (the fake cluster has no load balancer)."""
    import yaml

    from accel_widgets.cli import main

    out = tmp_path / "k8s"
    common = ["--workspace", str(workspace.root)]
    code = main([*common, "manifests", "sq", "--image", PUSHED_REF, "--replicas", "2",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "01-secret-sq-api-key.yaml",
        "02-deployment-sq.yaml",
        "03-service-sq.yaml",
        "04-poddisruptionbudget-sq.yaml",
    ]
    for path in out.iterdir():
        validate(yaml.safe_load(path.read_text()))
    printed = capsys.readouterr().out
    assert f"kubectl apply -f {out}" in printed
    # The Secret holds a fresh key: readable by its owner only, and the user is told so.
    assert "01-secret-sq-api-key.yaml holds the service's new API key" in printed
    assert "keep it out of version control" in printed.lower()
    assert (out / "01-secret-sq-api-key.yaml").stat().st_mode & 0o077 == 0
    # Where it is written down, and how to read it back once applied, in the file too.
    assert "field stringData.api-keys of the Secret sq-api-key" in printed
    assert "kubectl get secret sq-api-key -n default -o jsonpath='{.data.api-keys}'" in printed
    secret_file = (out / "01-secret-sq-api-key.yaml").read_text()
    # The comment is wrapped to the line length wherever the path ends: read it as one line.
    header = " ".join(line[2:] for line in secret_file.splitlines() if line.startswith("# "))
    assert secret_file.startswith("# ") and "holds the service's new API key" in header

    # On stdout: the key's place is said on stderr and beside the Secret in the YAML.
    assert main([*common, "manifests", "sq", "--image", PUSHED_REF]) == 0
    captured = capsys.readouterr()
    documents = list(yaml.safe_load_all(captured.out))
    [secret] = [d for d in documents if d["kind"] == "Secret"]
    assert "# This Secret holds the service's new API key" in captured.out
    assert "The Secret in the output above holds the service's new API key" in captured.err
    assert "field stringData.api-keys of the Secret sq-api-key" in captured.err
    assert secret["stringData"]["api-keys"] not in captured.err

    code = main([*common, "deploy", "sq", "--target", "kubernetes", "--image", PUSHED_REF,
                 "--kubeconfig", str(cluster.kubeconfig), "--namespace", "ml"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "service   sq (kubernetes)" in printed
    assert "connect   kubectl port-forward -n ml svc/sq 8500:8500" in printed
    delete_service("sq", workspace)


def test_an_image_whose_server_reads_its_key_from_the_environment_is_refused(workspace, image):
    """Packaged before issue 22: it would not read the mounted key, and refuse to start."""
    labels = {k: v for k, v in image.info["labels"].items() if k != "io.accel-widgets.keys"}
    workspace.update_image(image, {**image.info, "labels": labels})
    with pytest.raises(ServingError, match="packaged by an older accel-widgets") as refused:
        manifests("sq", target="kubernetes", image=PUSHED_REF, workspace=workspace)
    assert "--name sq --no-cache --push REGISTRY/PATH" in str(refused.value)
    objects = manifests(  # without a key, any image serves
        "sq", target="kubernetes", image=PUSHED_REF, workspace=workspace, auth=False
    )
    assert "Secret" not in _by_kind(objects)
