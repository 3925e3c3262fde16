"""The Azure ML online endpoint target, as a user meets it: deploy, score, status, logs, delete.

Azure cannot be reached from these machines, so every test talks to ``tests/azure_ml_server.py``:
a loopback server on 127.0.0.1 that is a fake speaking the documented Azure Resource Manager
REST protocol for Azure ML (paths, ``api-version``, bearer token, required body fields,
long-running operations with ``Azure-AsyncOperation`` / ``Location`` and ``Retry-After``,
429s, and Azure's error bodies). These tests test the Azure path, not Docker: the workspace
image record is registered without building anything, as if it had been packaged and pushed
to ``myacr.azurecr.io``. The model is the real SqueezeNet 1.1 from ``../shared/weights``, and
one test points the recorded scoring URI at our real server's REST port (plain http on
loopback there, where Azure would give HTTPS) to show that scoring with the key works.
"""

from __future__ import annotations

import math
import shutil
import time

import numpy as np
import pytest
from azure.core.credentials import AccessToken
from azure_ml_server import API_VERSION, SUB, TOKEN, FakeAzureML
from serving_fixtures import CAT_CLASSES, running_server, squeezenet_model, write_config

from accel_widgets.engine.checks.samples import sample_photos
from accel_widgets.engine.clients.rest_client import RestPredictionClient
from accel_widgets.engine.models.register import register_onnx
from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.engine.targets import (
    delete_service,
    deploy,
    get_target,
    service_logs,
    service_status,
    target_names,
)
from accel_widgets.engine.targets.azure import azureml, open_arm
from accel_widgets.engine.targets.azure.rest import ArmError
from accel_widgets.engine.targets.quota import check_quota
from accel_widgets.errors import CancelledError, ScoringError, ServingError
from accel_widgets.progress import CancelToken, EventLog, Reporter

pytestmark = pytest.mark.timeout(120)

ACR_REF = "myacr.azurecr.io/models/sq:1"
SQUEEZENET_PRE = {"channel_order": "BGR", "layout": "NCHW", "dtype": "float16"}


class StaticCredential:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


class ShortLivedCredential:
    """Tokens that expire ``lifetime`` seconds after they are handed out; the stand-in answers
    401 ExpiredAuthenticationToken to one used later, as Azure does."""

    def __init__(self, fake: FakeAzureML, lifetime: int = 2) -> None:
        self.fake = fake
        self.lifetime = lifetime
        self.issued: list[str] = []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        token = f"short-lived-{len(self.issued)}"
        expires = int(time.time()) + self.lifetime
        self.fake.expiry[token] = expires
        self.issued.append(token)
        return AccessToken(token, expires)


@pytest.fixture
def fake():
    server = FakeAzureML().start()
    yield server
    server.stop()


@pytest.fixture
def credential(monkeypatch):
    cred = StaticCredential()
    monkeypatch.setattr(azureml.TARGET, "credential", cred)
    return cred


@pytest.fixture(scope="module")
def template(tmp_path_factory, weights_dir):
    """A workspace holding the real SqueezeNet and an image record "pushed" to an ACR."""
    workspace = Workspace(tmp_path_factory.mktemp("azureml-template") / "workspace")
    tmp_path = tmp_path_factory.mktemp("azureml-context")
    register_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        "squeezenet",
        workspace=workspace,
        preprocessing=SQUEEZENET_PRE,
        labels="imagenet",
    )
    artifact = workspace.get_artifact("squeezenet")
    staged = tmp_path / "context"
    staged.mkdir()
    (staged / "Dockerfile").write_text("FROM scratch\n")
    workspace.register_image(
        "sq",
        artifact,
        staged,
        info={
            "tag": "accel-widgets/sq:1",
            "image_id": "sha256:" + "1" * 64,
            "labels": {"io.accel-widgets.model": "squeezenet"},
            "pushed": [{"ref": ACR_REF, "digest": "sha256:" + "2" * 64}],
        },
    )
    return workspace.root


@pytest.fixture
def ws(template, tmp_path):
    """A copy of the template workspace (registering the model once per module is faster)."""
    shutil.copytree(template, tmp_path / "workspace")
    return Workspace(tmp_path / "workspace")


def _deploy(ws, fake, name="sqz", progress=None, cancel=None, **settings):
    given = {
        "subscription": SUB,
        "resource_group": fake.resource_group,
        "aml_workspace": fake.workspace,
        "arm_endpoint": fake.url,
        **settings,
    }
    return deploy(
        "squeezenet",
        name=name,
        target="azureml",
        image="sq",
        workspace=ws,
        progress=progress,
        cancel=cancel,
        **given,
    )


def _nothing_left(ws, fake):
    assert fake.kinds() == set(), fake.store.keys()
    assert ws.list_services() == []


# -- the target in the registry ----------------------------------------------------------


def test_registered_with_its_settings():
    assert "azureml" in target_names()
    target = get_target("azureml")
    described = target.describe()
    assert described["title"] == "Azure ML online endpoint"
    assert described["capacity"] == "azure" and described["needs_image"] is True
    names = [s["name"] for s in described["settings"]]
    assert names == [
        "subscription",
        "resource_group",
        "aml_workspace",
        "instance_type",
        "instance_count",
        "endpoint",
        "ready_timeout",
    ]
    assert target.setting("aml_workspace").flag == "--aml-workspace"
    assert target.setting("instance_type").default == "Standard_DS3_v2"


def test_quota_needs_include_the_20_percent_reserve():
    assert azureml.quota_needs("Standard_DS3_v2", 1) == {
        "family": "standardDSv2Family",
        "vcpus_each": 4,
        "vcpus": 4,
        "needed": 5,
    }
    assert azureml.quota_needs("standard_ds3_v2", 2)["needed"] == 10
    assert azureml.quota_needs("Standard_F4s_v2", 5)["needed"] == math.ceil(5 * 4 * 1.2)
    assert azureml.quota_needs("Standard_Unknown", 1)["needed"] is None


# -- deploy ------------------------------------------------------------------------------


def test_deploy_creates_endpoint_deployment_then_traffic_and_records_the_service(
    ws, fake, credential
):
    events = EventLog()
    service = _deploy(ws, fake, progress=events, instance_count=2)

    assert fake.user_calls() == [
        ("GET", "workspace"),
        ("GET", "endpoint"),  # must not exist yet
        ("PUT", "environment"),
        ("PUT", "endpoint"),
        ("GET", "endpoint"),
        ("POST", "keys"),
        ("PUT", "deployment"),
        ("PUT", "endpoint traffic"),  # only once the deployment exists
        ("GET", "endpoint"),
    ]
    assert all(c["query"]["api-version"] == [API_VERSION] for c in fake.calls)
    polls = [c for c in fake.calls if c["route"] == "operation"]
    assert len(polls) == 3 * (fake.polls + 1)  # endpoint, deployment, traffic

    bodies = {(c["method"], c["route"]): c["body"] for c in fake.calls if c["body"]}
    env = bodies[("PUT", "environment")]["properties"]
    assert env["image"] == ACR_REF
    assert env["inferenceConfig"] == {
        "livenessRoute": {"path": "/healthz", "port": 8501},
        "readinessRoute": {"path": "/healthz", "port": 8501},
        "scoringRoute": {"path": "/v1/models/squeezenet:predict", "port": 8501},
    }
    dep = bodies[("PUT", "deployment")]
    assert dep["sku"]["capacity"] == 2
    assert dep["properties"]["instanceType"] == "Standard_DS3_v2"
    assert (
        dep["properties"]["environmentId"]
        .lower()
        .endswith(f"/environments/accel-widgets-squeezenet/versions/{env_version(fake)}")
    )
    assert dep["properties"]["environmentVariables"]["ACCEL_WIDGETS_API_KEYS"] == (
        f"{fake.keys['primaryKey']},{fake.keys['secondaryKey']}"
    )
    traffic = [c for c in fake.calls if c["route"] == "endpoint" and c["method"] == "PUT"][-1]
    assert traffic["body"]["properties"]["traffic"] == {"main": 100}
    assert credential.scopes == [("https://management.azure.com/.default",)]

    assert service.target == "azureml" and service.state == "running"
    assert service.key == fake.keys["primaryKey"]
    assert service.address == "127.0.0.1" and service.port == fake.server_address[1]
    info = service.info
    assert info["scoring_uri"] == f"{fake.url}/score"
    assert info["protocol"] == "rest"
    assert (info["endpoint"], info["deployment"]) == ("sqz", "main")
    assert (info["subscription"], info["resource_group"], info["aml_workspace"]) == (
        SUB,
        "ml-rg",
        "ml-ws",
    )
    assert info["image"] == ACR_REF
    assert ws.get_service("sqz").image_id == ws.get_image("sq").id

    messages = [e.message for e in events]
    assert messages[0] == "signing in to Azure"
    assert any(m.startswith("creating endpoint sqz in eastus") for m in messages)
    assert any("creating endpoint sqz: InProgress" in m for m in messages)
    assert any(m.startswith("creating deployment main: 2 x Standard_DS3_v2") for m in messages)
    assert any("sending 100% of the traffic" in m for m in messages)
    assert events[-1].fraction == 1.0
    fractions = [e.fraction for e in events if e.fraction is not None]
    assert fractions == sorted(fractions)


def env_version(fake) -> str:
    env = next(k for k in fake.store if "/environments/" in k)
    return env.rsplit("/", 1)[-1]


def test_scoring_through_the_recorded_uri_with_the_key(ws, fake, credential, tmp_path, monkeypatch):
    """The fake's scoring URI points at our real server's REST port (plain http on loopback;
    Azure gives an HTTPS URI), which checks the endpoint key handed to it as Azure ML would
    hand the deployment's environment variables to the container."""
    monkeypatch.setenv("ACCEL_WIDGETS_API_KEYS", fake.keys["primaryKey"])
    config = write_config(tmp_path, [squeezenet_model()])
    with running_server(tmp_path, config) as server:
        fake.scoring_uri = f"http://127.0.0.1:{server.rest_port}/v1/models/squeezenet:predict"
        service = _deploy(ws, fake)
        cat = sample_photos(["chelsea"])[0].data
        with RestPredictionClient(service.info["scoring_uri"], key=service.key) as client:
            scores = client.score_image(cat)
        assert int(np.argmax(scores)) in CAT_CLASSES
        assert service_status("sqz", ws).live == "running"
        with (
            RestPredictionClient(service.info["scoring_uri"], key="wrong") as client,
            pytest.raises(ScoringError, match="HTTP 401"),
        ):
            client.score_image(cat)


def test_throttled_call_waits_retry_after_then_goes_on(ws, fake, credential):
    fake.script = [("PUT", "/onlineEndpoints/", 429, {"Retry-After": "1"}, "TooManyRequests", "")]
    events = EventLog()
    started = time.monotonic()
    service = _deploy(ws, fake, progress=events)
    assert time.monotonic() - started >= 0.9
    assert service.state == "running"
    assert [m for m, w in fake.user_calls()].count("PUT") == 5  # 429 + endpoint, env, dep, traffic
    assert any("throttled by Azure, waiting 1 s" in e.message for e in events)


def test_a_token_that_expires_during_the_deploy_is_renewed_and_the_deploy_succeeds(
    ws, fake, monkeypatch
):
    credential = ShortLivedCredential(fake, lifetime=2)
    monkeypatch.setattr(azureml.TARGET, "credential", credential)
    fake.polls, fake.retry_after = 2, "0.4"  # three operations of 1.2 s each
    service = _deploy(ws, fake)
    assert service.state == "running"
    first = credential.issued[0]
    assert time.time() > fake.expiry[first]  # the deploy outlived its first token
    used = [c["auth"] for c in fake.calls]
    assert used[0] == f"Bearer {first}"
    assert len(set(used)) > 1  # later calls carried renewed tokens
    # The stand-in does refuse the expired token: without renewal the deploy would fail.
    arm = open_arm(
        fake.url, StaticCredential(first), API_VERSION, Reporter(), step="status", purpose=""
    )
    with pytest.raises(ArmError, match="ExpiredAuthenticationToken"):
        arm.call("GET", fake.workspace_id(), what="reading the workspace")


def test_quota_and_azure_ml_share_one_client_user_agent_and_429_handling(ws, fake, credential):
    fake.usages = [
        {
            "unit": "Count",
            "currentValue": 0,
            "limit": 24,
            "name": {"value": "standardDSv2Family", "localizedValue": "Standard DSv2 Family"},
        }
    ]
    throttle = (429, {"Retry-After": "1"}, "TooManyRequests", "Slow down.")
    fake.script = [("GET", "/usages", *throttle), ("PUT", "/onlineEndpoints/", *throttle)]
    quota_events, deploy_events = EventLog(), EventLog()
    started = time.monotonic()
    report = check_quota(
        "azureml",
        endpoint=fake.url,
        credential=credential,
        subscription_id=SUB,
        settings={"instance_type": "Standard_DS3_v2"},
        progress=quota_events,
    )
    assert time.monotonic() - started >= 0.9
    assert report.verdict is True
    started = time.monotonic()
    _deploy(ws, fake, progress=deploy_events)
    assert time.monotonic() - started >= 0.9
    for events in (quota_events, deploy_events):
        assert any(e.message == "throttled by Azure, waiting 1 s" for e in events)
    routes = {c["route"] for c in fake.calls}
    assert {"usages", "workspace", "endpoint", "deployment", "operation"} <= routes
    agents = {c["agent"] for c in fake.calls}
    assert len(agents) == 1, agents
    assert agents.pop().startswith("accel-widgets/0.")


def test_long_running_operation_honours_retry_after(ws, fake, credential):
    fake.retry_after = "0.3"
    fake.polls = 2
    started = time.monotonic()
    _deploy(ws, fake)
    # three operations, each answered at once, then polled three times 0.3 s apart
    assert time.monotonic() - started >= 3 * 3 * 0.3 - 0.1


# -- failures: clear errors, nothing left behind -------------------------------------------


def test_out_of_quota_explains_the_reserve_and_deletes_what_was_made(ws, fake, credential):
    fake.deployment_failure = (
        "OutOfQuota",
        "Not enough quota available for Standard_DS3_v2 in SubscriptionId "
        f"{SUB}. Current usage/limit: 4/10. Additional needed: 10",
    )
    with pytest.raises(ServingError) as info:
        _deploy(ws, fake, instance_count=2)
    message = str(info.value)
    assert "not enough vCPU quota in eastus" in message
    assert "OutOfQuota" in message
    assert "reserves 20% extra" in message
    assert "2 x Standard_DS3_v2 (4 vCPUs each) need 10 free vCPUs" in message
    assert "standardDSv2Family" in message
    assert "quota increase" in message
    assert "deleted" in message
    assert ("DELETE", "endpoint") in fake.user_calls()
    assert ("DELETE", "environment") in fake.user_calls()
    _nothing_left(ws, fake)


def test_image_the_workspace_cannot_pull_says_grant_acrpull(ws, fake, credential):
    fake.deployment_failure = (
        "ImagePullFailure",
        f"Failed to pull image {ACR_REF}: unauthorized: authentication required",
    )
    with pytest.raises(ServingError) as info:
        _deploy(ws, fake)
    message = str(info.value)
    assert f"could not pull the image {ACR_REF}" in message
    assert "AcrPull" in message
    assert "myacr.azurecr.io" in message
    assert "aaaa-principal-0001" in message  # the endpoint's identity
    _nothing_left(ws, fake)


def test_an_operation_url_on_another_host_is_not_followed(ws, fake, credential):
    fake.operation_base = "http://127.0.0.2:1"
    with pytest.raises(ServingError, match=r"another host \(http://127.0.0.2:1\); not following"):
        _deploy(ws, fake)
    assert not [c for c in fake.calls if c["route"] == "operation"]
    _nothing_left(ws, fake)


def test_forbidden_names_the_role_and_creates_nothing(ws, fake, credential):
    fake.forbidden = True
    with pytest.raises(ServingError) as info:
        _deploy(ws, fake)
    message = str(info.value)
    assert "AuthorizationFailed" in message
    assert "AzureML Data Scientist" in message
    assert "ml-ws" in message and SUB in message
    assert "az login" in message
    assert [m for m, _ in fake.user_calls()] == ["GET"]
    _nothing_left(ws, fake)


def test_rejected_token_says_sign_in_again(ws, fake):
    azureml.TARGET.credential = StaticCredential("stale")
    try:
        with pytest.raises(ServingError) as info:
            _deploy(ws, fake)
    finally:
        azureml.TARGET.credential = None
    assert "InvalidAuthenticationToken" in str(info.value)
    assert "az login" in str(info.value)
    _nothing_left(ws, fake)


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("resource_group", "no-such-rg", "resource group no-such-rg was not found in subscription"),
        ("aml_workspace", "other-ws", "Azure ML workspace other-ws was not found in resource"),
        ("subscription", "99999999-8888-7777-6666-555555555555", "SubscriptionNotFound"),
    ],
)
def test_what_was_not_found_is_named(ws, fake, credential, setting, value, expected):
    with pytest.raises(ServingError, match=expected) as info:
        _deploy(ws, fake, **{setting: value})
    assert "HTTP 404" in str(info.value)
    assert [m for m, _ in fake.user_calls()] == ["GET"]
    _nothing_left(ws, fake)


def test_an_existing_endpoint_is_never_overwritten(ws, fake, credential):
    fake.store[fake.endpoint_id("sqz").lower()] = {"properties": {"provisioningState": "Succeeded"}}
    with pytest.raises(ServingError, match="already exists in workspace ml-ws"):
        _deploy(ws, fake)
    assert [m for m, _ in fake.user_calls()] == ["GET", "GET"]
    assert ws.list_services() == []


def test_cancel_while_the_deployment_is_created_deletes_everything(ws, fake, credential):
    token = CancelToken()
    fake.polls = 3

    def progress(event):
        if event.message.startswith("creating deployment main ("):
            token.cancel()

    with pytest.raises(CancelledError):
        _deploy(ws, fake, progress=progress, cancel=token)
    assert ("DELETE", "endpoint") in fake.user_calls()
    _nothing_left(ws, fake)


@pytest.mark.parametrize(
    ("name", "settings", "expected"),
    [
        ("ab", {}, r"'ab' cannot be an Azure ML endpoint name: use 3-32 characters.*'ab-ep'"),
        ("sqz", {"endpoint": "my_endpoint"}, "starting with a letter.*'my-endpoint'"),
        ("sqz", {"endpoint": "9lives"}, "'ep-9lives'"),
        ("sqz", {"endpoint": "e" * 33}, "3-32 characters"),
        ("sqz", {"subscription": "my-sub"}, "not a GUID"),
        ("sqz", {"resource_group": None}, "--resource-group"),
        ("sqz", {"aml_workspace": None}, "--aml-workspace"),
        ("sqz", {"instance_type": "big"}, "not an Azure VM size"),
        ("sqz", {"instance_count": 0}, "1 to 50 instances"),
        ("sqz", {"instance_count": "two"}, "must be a int"),
        ("sqz", {"ready_timeout": -1}, "above 0"),
        ("sqz", {"arm_endpoint": "http://example.com"}, "https"),
        ("sqz", {"replicas": 2}, "no setting replicas"),
    ],
)
def test_bad_input_is_refused_before_anything_is_created(
    ws, fake, credential, name, settings, expected
):
    with pytest.raises(ServingError, match=expected):
        _deploy(ws, fake, name=name, **settings)
    assert fake.calls == []
    assert credential.scopes == []  # not even signed in
    assert ws.list_services() == []


def test_an_image_never_pushed_is_refused(ws, fake, credential, tmp_path):
    artifact = ws.get_artifact("squeezenet")
    staged = tmp_path / "ctx2"
    staged.mkdir()
    ws.register_image("local-only", artifact, staged, info={"tag": "accel-widgets/local-only:1"})
    with pytest.raises(ServingError, match="was never pushed"):
        deploy(
            "squeezenet",
            name="sqz",
            target="azureml",
            image="local-only",
            workspace=ws,
            subscription=SUB,
            resource_group="ml-rg",
            aml_workspace="ml-ws",
            arm_endpoint=fake.url,
        )
    assert fake.calls == []


def test_subscription_comes_from_the_environment(ws, fake, credential, monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    service = deploy(
        "squeezenet",
        name="sqz",
        target="azureml",
        image="sq",
        workspace=ws,
        resource_group="ml-rg",
        aml_workspace="ml-ws",
        arm_endpoint=fake.url,
    )
    assert service.info["subscription"] == SUB


# -- status, logs, delete ------------------------------------------------------------------


def test_status_logs_and_delete(ws, fake, credential):
    _deploy(ws, fake)
    assert service_status("sqz", ws).live == "running"

    deployment = fake.resource(f"{fake.endpoint_id('sqz')}/deployments/main")
    deployment["properties"]["provisioningState"] = "Updating"
    assert service_status("sqz", ws).live == "starting"
    deployment["properties"]["provisioningState"] = "Failed"
    assert service_status("sqz", ws).live == "dead"
    deployment["properties"]["provisioningState"] = "Succeeded"

    fake.calls.clear()
    assert service_logs("sqz", 5, ws) == "\n".join(f"log line {i}" for i in range(96, 101))
    (call,) = fake.calls
    assert call["path"].endswith("/onlineEndpoints/sqz/deployments/main/getLogs")
    assert call["body"] == {"containerType": "InferenceServer", "tail": 5}

    fake.calls.clear()
    delete_service("sqz", ws)
    assert fake.user_calls() == [("DELETE", "endpoint")]
    assert [c["route"] for c in fake.calls].count("location") == fake.polls + 1
    assert fake.kinds() == {"environment"}  # kept: an asset other deployments may reuse
    assert ws.list_services() == []


def test_status_of_an_endpoint_deleted_elsewhere_is_dead_and_delete_still_works(
    ws, fake, credential
):
    _deploy(ws, fake)
    for key in [k for k in fake.store if "/onlineendpoints/" in k]:
        del fake.store[key]
    assert service_status("sqz", ws).live == "dead"
    delete_service("sqz", ws)
    assert ws.list_services() == []


def test_status_without_sign_in_is_unknown(ws, fake, credential):
    _deploy(ws, fake)
    fake.token = "rotated"
    assert service_status("sqz", ws).live == "unknown"
