"""The KServe target: a ServingRuntime and an InferenceService, validated and deployed.

No Kubernetes API server (let alone KServe) can run on these machines, so:

- the ServingRuntime and InferenceService are validated with ``jsonschema`` against the
  ``openAPIV3Schema`` of KServe's own CRDs in ``../shared/schemas/kserve/`` (see SOURCES.md
  there), made strict by refusing unknown fields wherever the CRD lists an object's fields,
  and a broken manifest is shown to fail; the Secret is validated with ``kubernetes-validate``;
- deploy, status, logs and delete run the real ``kubernetes`` client against
  ``tests/k8s_api_server.py``, a fake API server on loopback that speaks the documented REST
  paths (KServe's custom resources included), stores the objects, records the calls, and
  turns the InferenceService's conditions Ready with a URL (or leaves its pods stuck).

The image record is made without Docker: these tests test the cluster path, not Docker.
"""

from __future__ import annotations

import copy
import shutil
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8s_api_server import PUSHED_REF, FakeKubeAPI, pushed_squeezenet

from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.engine.targets import (
    delete_service,
    deploy,
    manifests,
    service_logs,
    service_status,
)
from accel_widgets.engine.targets.k8s import common as kc
from accel_widgets.engine.targets.k8s import rollout
from accel_widgets.errors import ServingError
from accel_widgets.progress import EventLog

pytestmark = pytest.mark.timeout(60)

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "kserve"
CRDS = {
    "ServingRuntime": ("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    "InferenceService": ("serving.kserve.io_inferenceservices.yaml", "v1beta1"),
}
SELECTOR = "io.accel-widgets/service=sq"


def _strict(schema: dict) -> dict:
    """Refuse unknown fields where the CRD lists an object's fields (as the API server's
    strict field validation does); free-form objects stay free."""
    if isinstance(schema, dict):
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


@cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    filename, version = CRDS[kind]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(SCHEMAS / filename) as handle:
        crd = yaml.load(handle, Loader=loader)
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def validate(obj: dict) -> None:
    if obj["kind"] in CRDS:
        version = CRDS[obj["kind"]][1]
        assert obj["apiVersion"] == f"serving.kserve.io/{version}"
        crd_validator(obj["kind"]).validate(obj)
    else:
        kubernetes_validate.validate(copy.deepcopy(obj), "1.33.0", strict=True)


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch):
    monkeypatch.setattr(kc, "POLL_S", 0.01)
    monkeypatch.setattr(rollout, "UNSCHEDULABLE_GRACE_S", 0.0)  # where pod_trouble reads it


@pytest.fixture(scope="module")
def _registered(tmp_path_factory, weights_dir) -> Path:
    root = tmp_path_factory.mktemp("kserve-template")
    pushed_squeezenet(Workspace(root / "workspace"), weights_dir, root)
    return root / "workspace"


@pytest.fixture
def workspace(_registered, tmp_path) -> Workspace:
    shutil.copytree(_registered, tmp_path / "workspace")
    return Workspace(tmp_path / "workspace")


@pytest.fixture
def cluster(tmp_path):
    with FakeKubeAPI() as fake:
        fake.kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        yield fake


def _by_kind(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


# -- manifests, offline ------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [{}, {"mode": "raw"}, {"auth": False, "autoscale": "1:4"}, {"mode": "raw", "gpu": 1}],
    ids=["serverless", "raw", "no-auth-autoscale", "raw-gpu"],
)
def test_every_manifest_validates_against_the_crds(workspace, settings):
    objects = manifests("sq", target="kserve", image=PUSHED_REF, workspace=workspace, **settings)
    for obj in objects:
        validate(obj)
        assert obj["metadata"]["labels"]["io.accel-widgets/service"] == "sq"
    kinds = [o["kind"] for o in objects]
    auth = settings.get("auth", True)
    assert kinds == [*(["Secret"] if auth else []), "ServingRuntime", "InferenceService"]


@pytest.mark.parametrize(
    ("mode", "port_name", "annotation"),
    [("serverless", "h2c", "Serverless"), ("raw", "grpc-port", "RawDeployment")],
)
def test_runtime_and_inference_service(workspace, mode, port_name, annotation):
    objects = _by_kind(
        manifests("sq", target="kserve", image=PUSHED_REF, workspace=workspace, mode=mode)
    )
    runtime, isvc = objects["ServingRuntime"], objects["InferenceService"]
    assert runtime["metadata"]["name"] == "accel-widgets-sq"
    assert runtime["spec"]["protocolVersions"] == ["grpc-v1"]
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "accel-widgets-onnx"
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container" and container["image"] == PUSHED_REF
    assert container["ports"] == [{"name": port_name, "containerPort": 8500, "protocol": "TCP"}]
    assert container["readinessProbe"]["grpc"] == {"port": 8500}
    assert container["securityContext"]["runAsUser"] == 10001
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == annotation
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "accel-widgets-sq"
    assert model["modelFormat"]["name"] == "accel-widgets-onnx"
    assert model["protocolVersion"] == "grpc-v1"
    assert model["resources"]["requests"]["memory"] == "512Mi"
    assert "storageUri" not in model  # the model is in the image


def test_the_validator_rejects_broken_manifests(workspace):
    objects = _by_kind(manifests("sq", target="kserve", image=PUSHED_REF, workspace=workspace))
    typo = copy.deepcopy(objects["InferenceService"])
    typo["spec"]["predictor"]["model"]["runtimee"] = "accel-widgets-sq"
    with pytest.raises(jsonschema.ValidationError, match="runtimee"):
        validate(typo)
    wrong = copy.deepcopy(objects["ServingRuntime"])
    del wrong["spec"]["containers"][0]["name"]  # a container needs a name
    with pytest.raises(jsonschema.ValidationError, match="'name' is a required property"):
        validate(wrong)
    bad_priority = copy.deepcopy(objects["ServingRuntime"])
    bad_priority["spec"]["supportedModelFormats"][0]["priority"] = 0  # minimum 1
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_priority)


# -- bad settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kubeconfig": "/nonexistent/kubeconfig"}, "no kubeconfig at /nonexistent/kubeconfig"),
        ({"context": "prod"}, "kubeconfig; its contexts: fake, staging"),
        ({"namespace": "missing"}, "namespace 'missing' does not exist in context fake"),
        ({"autoscale": "10:2"}, "autoscale '10:2': MIN must be at least 1 and at most MAX"),
        ({"gpu": -1}, "gpu=-1 must be 0 (none) or a number of GPUs per pod"),
        ({"mode": "knative"}, "must be one of serverless, raw"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_made(workspace, cluster, settings, message):
    given = {"kubeconfig": str(cluster.kubeconfig), **settings}
    with pytest.raises(ServingError) as caught:
        deploy("sq", target="kserve", image=PUSHED_REF, workspace=workspace, **given)
    assert message in str(caught.value)
    assert cluster.writes() == []
    assert workspace.list_services() == []


def test_a_never_pushed_image_is_refused(workspace, cluster):
    image = workspace.get_image("sq")
    workspace.update_image(image, {**image.info, "pushed": []})
    with pytest.raises(ServingError, match=r"was never pushed, and a remote target cannot pull"):
        deploy("sq", target="kserve", workspace=workspace, kubeconfig=str(cluster.kubeconfig))
    assert cluster.calls == []


# -- the client path against the fake API server ------------------------------------------


def test_deploy_status_logs_delete_serverless(workspace, cluster):
    events = EventLog()
    service = deploy(
        "sq", target="kserve", image=PUSHED_REF, workspace=workspace, progress=events,
        kubeconfig=str(cluster.kubeconfig), namespace="ml",
    )  # fmt: skip
    assert cluster.writes() == [
        ("POST", "/api/v1/namespaces/ml/secrets"),
        ("POST", "/apis/serving.kserve.io/v1alpha1/namespaces/ml/servingruntimes"),
        ("POST", "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices"),
    ]
    messages = [e.message for e in events]
    assert any("PredictorReady: Unknown" in m for m in messages)
    assert messages[-1].startswith("sq ready at sq.ml.example.com:80")
    fractions = [e.fraction for e in events if e.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (service.address, service.port, service.use_ssl) == ("sq.ml.example.com", 80, False)
    assert service.info["url"] == "http://sq.ml.example.com"
    assert service.info["in_cluster"] == "http://sq-predictor.ml.svc.cluster.local"
    assert "connect" not in service.info
    (secret,) = cluster.objects("secrets")
    assert secret["stringData"]["api-keys"] == service.key
    assert service_status("sq", workspace).live == "running"
    logs = service_logs("sq", 10, workspace)
    assert logs.startswith("==> pod sq-predictor-5d8f7c9b4-00000 <==")
    assert ("GET", "/api/v1/namespaces/ml/pods/sq-predictor-5d8f7c9b4-00000/log") in cluster.calls
    delete_service("sq", workspace)
    assert cluster.objects(selector=SELECTOR) == []
    assert cluster.objects("pods") == []
    assert workspace.list_services() == []
    assert cluster.names("inferenceservices") == cluster.names("servingruntimes") == []


def test_raw_mode_records_the_in_cluster_url_and_a_port_forward(workspace, cluster):
    service = deploy(
        "sq", target="kserve", image=PUSHED_REF, workspace=workspace, mode="raw",
        kubeconfig=str(cluster.kubeconfig), auth=False,
    )  # fmt: skip
    assert (service.address, service.port) == ("sq-predictor.default.svc.cluster.local", 80)
    assert service.info["connect"] == "kubectl port-forward -n default svc/sq-predictor 8500:80"
    assert service.key is None and cluster.objects("secrets") == []
    (runtime,) = cluster.objects("servingruntimes")
    assert runtime["spec"]["containers"][0]["args"] == ["--insecure-no-auth"]
    assert runtime["spec"]["containers"][0]["ports"][0]["name"] == "grpc-port"
    cluster.handle("DELETE", "/apis/serving.kserve.io/v1beta1/namespaces/default/"
                   "inferenceservices/sq", None)  # fmt: skip
    assert service_status("sq", workspace).live == "dead"
    delete_service("sq", workspace)
    assert cluster.objects(selector=SELECTOR) == []


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("ImagePullBackOff", "the cluster cannot pull the image 127.0.0.1:5000/models/sq:1"),
        ("FailedScheduling", "not enough cpu on any node"),
        ("CrashLoopBackOff", "Its last log lines:\nValueError: no model at /srv/model"),
    ],
)
def test_a_stuck_inference_service_is_explained_and_leaves_nothing(
    workspace, tmp_path, scenario, expected
):
    with FakeKubeAPI(scenario=scenario, crash_logs="ValueError: no model at /srv/model\n") as fake:
        config = fake.write_kubeconfig(tmp_path / "kubeconfig")
        with pytest.raises(ServingError) as caught:
            deploy("sq", target="kserve", image=PUSHED_REF, workspace=workspace,
                   kubeconfig=str(config))  # fmt: skip
        assert expected in str(caught.value)
        assert fake.objects(selector=SELECTOR) == []
        assert fake.objects("pods") == []
        assert workspace.list_services() == []


def test_an_inference_service_that_never_gets_ready_times_out(workspace, tmp_path):
    with FakeKubeAPI(ready_after=10**6) as fake:
        config = fake.write_kubeconfig(tmp_path / "kubeconfig")
        with pytest.raises(ServingError, match=r"was not Ready after 0 s \(PredictorReady"):
            deploy("sq", target="kserve", image=PUSHED_REF, workspace=workspace,
                   kubeconfig=str(config), ready_timeout=0.2)  # fmt: skip
        assert fake.objects(selector=SELECTOR) == []
