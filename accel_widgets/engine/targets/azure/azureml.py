"""The Azure ML target: a packaged image as an Azure ML managed online endpoint.

``deploy`` registers the pushed image as an Azure ML environment with our routes (liveness
and readiness ``GET /healthz``, scoring ``POST /v1/models/<model>:predict``, all on the REST
port 8501: managed online endpoints speak HTTP only), creates the endpoint (key auth,
system-assigned identity), reads its keys, creates one deployment of ``instance_count``
instances of ``instance_type`` running the image, and then, once the deployment exists, sends
100% of the endpoint's traffic to it. Clients score over HTTPS at the endpoint's scoring URI
with ``Authorization: Bearer <key>`` (``engine.rest_client.RestPredictionClient``).

Calls, in order (Azure Resource Manager REST, ``api-version`` :data:`API_VERSION`)::

    GET    .../workspaces/{ws}                                   location, and a 404 early
    GET    .../onlineEndpoints/{endpoint}                        must not exist yet (404)
    PUT    .../environments/{env}/versions/{version}             image + inferenceConfig
    PUT    .../onlineEndpoints/{endpoint}                        long-running
    POST   .../onlineEndpoints/{endpoint}/listKeys               primaryKey, secondaryKey
    PUT    .../onlineEndpoints/{endpoint}/deployments/{dep}      long-running
    PUT    .../onlineEndpoints/{endpoint}   traffic {dep: 100}   long-running, after the above
    GET    .../onlineEndpoints/{endpoint}                        scoringUri

Traffic is set with a PUT of the whole endpoint: the documented PATCH body
(``PartialMinimalTrackedResourceWithIdentity``) holds only identity and tags, not traffic;
``az ml online-endpoint update --traffic`` does the same. The keys are read before the
deployment because the server in the image checks a key itself (it refuses to listen beyond
loopback without one): the endpoint's two keys reach it as ``ACCEL_WIDGETS_API_KEYS`` in the
deployment's environment variables, so the key a client sends to the endpoint is the one the
server accepts. After ``regenerateKeys``, deploy again.

A failure after something was created deletes what this call created (the endpoint, which
takes its deployment with it, and an environment version registered just now) and the
workspace row; bad input fails before anything is created or signed in.

**SDK or REST.** The issue prefers the Azure SDK where it does the job. Measured here
(Python 3.11, pip, a fresh venv): ``pip install azure-ai-ml`` took 12.9 s and brought 65
packages, 136 MB of site-packages (azure-ai-ml alone 41 MB; with it opentelemetry,
azure-monitor, azure-storage-*, marshmallow), and importing ``MLClient`` and the endpoint
entities takes 2.3-2.6 s and 107 MB of memory; ``MLClient`` takes its ARM address from cloud
metadata (pointing it at a loopback stand-in needs a custom cloud registration) and makes
calls of its own (workspace, registries) that a stand-in would also have to speak.
``azure-mgmt-machinelearningservices`` (1.0.1, 54 MB with its dependencies) has no online
endpoint operations at all. The REST calls above are eight documented requests; this module
makes them with the Azure client the quota check uses too (``azure/arm.py``: azure-core's
pipeline, which ``azure-identity`` brings), so the target adds no dependency and is tested
against a loopback server that speaks the documented API (``tests/azure_ml_server.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from accel_widgets.engine.packaging.package_context import REST_PORT
from accel_widgets.engine.store.workspace import (
    ArtifactRecord,
    ImageRecord,
    ServiceRecord,
    Workspace,
    check_name,
)
from accel_widgets.engine.targets.azure import open_arm
from accel_widgets.engine.targets.azure.quota import AzureQuota
from accel_widgets.engine.targets.azure.rest import (
    DEFAULT_ARM,
    ArmError,
    check_endpoint,
    said,
)
from accel_widgets.engine.targets.base import Setting, Target, pushed_reference
from accel_widgets.engine.targets.capacity import QuotaReport, capacity_check
from accel_widgets.errors import AccelError, QuotaError, ServingError
from accel_widgets.progress import Reporter

if TYPE_CHECKING:
    from accel_widgets.engine.targets.azure.arm import ArmClient

API_VERSION = "2024-04-01"
"""The Microsoft.MachineLearningServices API version whose shapes this module sends."""

PROVIDER = "Microsoft.MachineLearningServices"
DEPLOYMENT = "main"
HEALTH_ROUTE = "/healthz"  # no key needed: Azure's probes send none
#: Azure ML keeps 20% of a deployment's vCPUs in reserve for upgrades (its quota docs).
RESERVE = 1.2

ENDPOINT_NAME_RULE = (
    "3-32 characters, letters, digits and '-', starting with a letter (Azure ML's rule for "
    "online endpoint names; they are unique within a region)"
)
_ENDPOINT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{2,31}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")
_AML_WORKSPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")
_INSTANCE_TYPE = re.compile(r"^Standard_[A-Za-z0-9_]+$", re.IGNORECASE)

#: vCPUs per instance and the quota family of the instance types Azure ML lists for managed
#: online endpoints (a subset: the common CPU and GPU sizes).
INSTANCE_TYPES: dict[str, tuple[int, str]] = {
    **{f"standard_ds{n}_v2": (c, "standardDSv2Family") for n, c in ((1, 1), (2, 2), (3, 4))},
    **{f"standard_ds{n}_v2": (c, "standardDSv2Family") for n, c in ((4, 8), (5, 16))},
    **{f"standard_f{c}s_v2": (c, "standardFSv2Family") for c in (2, 4, 8, 16, 32, 48, 64, 72)},
    **{f"standard_e{c}s_v3": (c, "standardESv3Family") for c in (2, 4, 8, 16, 32, 48, 64)},
    **{f"standard_nc{c}s_v3": (c, "standardNCSv3Family") for c in (6, 12, 24)},
    **{f"standard_nc{c}as_t4_v3": (c, "standardNCASv3_T4Family") for c in (4, 8, 16, 64)},
}


def quota_needs(instance_type: str, instance_count: int) -> dict[str, Any]:
    """What a deployment takes from the vCPU quota, the 20% reserve included.

    ``{"family": "standardDSv2Family", "vcpus_each": 4, "vcpus": 4, "needed": 5}`` for one
    Standard_DS3_v2 (``needed`` = ceil(count x vCPUs x 1.2)); family and counts are None for
    an instance type this table does not know.
    """
    known = INSTANCE_TYPES.get(instance_type.lower())
    if known is None:
        return {"family": None, "vcpus_each": None, "vcpus": None, "needed": None}
    each, family = known
    return {
        "family": family,
        "vcpus_each": each,
        "vcpus": each * instance_count,
        "needed": math.ceil(round(each * instance_count * RESERVE, 6)),
    }


def suggest_endpoint_name(name: str) -> str:
    """A valid endpoint name close to ``name``."""
    text = re.sub(r"[^A-Za-z0-9-]+", "-", str(name)).strip("-")
    if not text or not text[0].isalpha():
        text = f"ep-{text}".rstrip("-")
    if len(text) < 3:
        text = f"{text}-ep"
    return text[:32].rstrip("-")


def check_endpoint_name(name: str) -> str:
    if not isinstance(name, str) or not _ENDPOINT_NAME.fullmatch(name):
        raise ServingError(
            f"{name!r} cannot be an Azure ML endpoint name: use {ENDPOINT_NAME_RULE}; for "
            f"example {suggest_endpoint_name(name)!r} (--endpoint NAME, or that service name)"
        )
    return name


def _registry(reference: str) -> str:
    return reference.split("/", 1)[0]


class AzureMLTarget(Target):
    """Azure ML managed online endpoints, through Azure Resource Manager's REST API."""

    name = "azureml"
    title = "Azure ML online endpoint"
    description = (
        "the packaged image as an Azure ML managed online endpoint (HTTPS scoring with a key)"
    )
    capacity = AzureQuota.name
    needs_image = True
    settings = (
        Setting(
            "subscription", str, None, "Azure subscription id (default $AZURE_SUBSCRIPTION_ID)"
        ),
        Setting("resource_group", str, None, "resource group of the Azure ML workspace"),
        Setting("aml_workspace", str, None, "name of the Azure ML workspace"),
        Setting("instance_type", str, "Standard_DS3_v2", "VM size of each instance"),
        Setting("instance_count", int, 1, "number of instances"),
        Setting("endpoint", str, None, "endpoint name (default: the service name)"),
        Setting(
            "ready_timeout",
            float,
            1800.0,
            "seconds to wait for Azure to create everything",
            capacity=False,
        ),
        Setting("arm_endpoint", str, DEFAULT_ARM, "Azure Resource Manager address", ui=False),
        Setting("credential", object, None, "an azure-identity credential", ui=False),
    )

    def __init__(self, credential: Any = None) -> None:
        #: Used by status, logs and delete (and deploy when no ``credential`` setting is
        #: given); None means ``DefaultAzureCredential``.
        self.credential = credential

    def check_capacity(
        self, settings: dict[str, Any], report: Reporter, **options: Any
    ) -> QuotaReport | None:
        """The family quota the instance type draws on, with Azure ML's 20% reserve.

        ``Standard_DS3_v2`` x 2 needs ceil(2 x 4 x 1.2) = 10 free vCPUs in
        ``standardDSv2Family`` (and in the regional total), not 8.
        """
        needs = quota_needs(settings["instance_type"], settings["instance_count"])
        if needs["family"] is None:
            raise QuotaError(
                f"the quota family of instance type {settings['instance_type']!r} is not known "
                f"here ({', '.join(sorted(INSTANCE_TYPES)[:4])}...); check it with "
                "check_quota('azure', family=FAMILY, needed=VCPUS)"
            )
        answer = capacity_check(self.capacity).check(
            report,
            region=options.get("region") or "eastus",
            family=needs["family"],
            needed=needs["needed"],
            subscription_id=options.get("subscription_id") or settings.get("subscription"),
            credential=options.get("credential") or settings.get("credential"),
            endpoint=options.get("endpoint") or settings.get("arm_endpoint") or DEFAULT_ARM,
            timeout=options.get("timeout") or 30.0,
        )
        reserve = (
            f"{settings['instance_count']} x {settings['instance_type']} "
            f"({needs['vcpus']} vCPUs) needs {needs['needed']} free: Azure ML reserves 20% "
            "extra for upgrades."
        )
        return dataclasses.replace(
            answer,
            target=self.name,
            advice=f"{reserve} {answer.advice}",
            details={**answer.details, "reserve": RESERVE, **needs},
        )

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _paths(sub: str, group: str, workspace: str, endpoint: str) -> dict[str, str]:
        quote = urllib.parse.quote
        ws = (
            f"/subscriptions/{quote(sub, safe='')}/resourceGroups/{quote(group, safe='')}"
            f"/providers/{PROVIDER}/workspaces/{quote(workspace, safe='')}"
        )
        ep = f"{ws}/onlineEndpoints/{quote(endpoint, safe='')}"
        return {"workspace": ws, "endpoint": ep, "deployment": f"{ep}/deployments/{DEPLOYMENT}"}

    def _client(self, endpoint: str, credential: Any, report: Reporter, step: str) -> ArmClient:
        return open_arm(
            endpoint,
            credential or self.credential,
            API_VERSION,
            report,
            step=step,
            purpose=f"for the {self.name} target",
        )

    @staticmethod
    def _checked(settings: dict[str, Any], name: str) -> dict[str, Any]:
        """The settings, every one checked before anything is signed in or created."""
        sub = (
            settings.get("subscription") or os.environ.get("AZURE_SUBSCRIPTION_ID") or ""
        ).strip()
        if not sub:
            raise ServingError(
                "no Azure subscription was given: pass --subscription (subscription=...) or set "
                "AZURE_SUBSCRIPTION_ID; `az account show --query id -o tsv` prints the current one"
            )
        if not _GUID.match(sub):
            raise ServingError(
                f"subscription {sub!r} is not a GUID like 00000000-0000-0000-0000-000000000000; "
                "`az account list -o table` lists yours"
            )
        group = (settings.get("resource_group") or "").strip()
        if not group or not _RESOURCE_GROUP.match(group) or group.endswith("."):
            raise ServingError(
                f"resource group {group!r} is missing or not a resource group name (1-90 "
                "letters, digits, '-', '_', '.', '(', ')'): pass --resource-group; "
                "`az group list -o table` lists yours"
            )
        workspace = (settings.get("aml_workspace") or "").strip()
        if not workspace or not _AML_WORKSPACE.match(workspace):
            raise ServingError(
                f"Azure ML workspace {workspace!r} is missing or not a workspace name (3-33 "
                "letters, digits, '-' or '_', starting with a letter or digit): pass "
                f"--aml-workspace; `az ml workspace list -g {group} -o table` lists them"
            )
        instance_type = (settings.get("instance_type") or "").strip()
        if not _INSTANCE_TYPE.match(instance_type):
            raise ServingError(
                f"instance type {instance_type!r} is not an Azure VM size such as "
                "Standard_DS3_v2 or Standard_F4s_v2 (--instance-type)"
            )
        count = settings.get("instance_count")
        if not isinstance(count, int) or count < 1 or count > 50:
            raise ServingError(f"instance_count={count!r}: give 1 to 50 instances")
        timeout = settings.get("ready_timeout")
        if timeout is None or timeout <= 0:
            raise ServingError(f"ready_timeout={timeout!r}: give a number of seconds above 0")
        endpoint = check_endpoint_name(settings.get("endpoint") or name)
        arm = settings.get("arm_endpoint") or DEFAULT_ARM
        return {
            "subscription": sub.lower(),
            "resource_group": group,
            "aml_workspace": workspace,
            "instance_type": instance_type,
            "instance_count": count,
            "endpoint": endpoint,
            "ready_timeout": float(timeout),
            "arm_endpoint": arm,
        }

    # -- deploy ----------------------------------------------------------------------------

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
        check_name(name, "service")
        if image is None:
            raise ServingError("the azureml target needs an image: package and push the model")
        s = self._checked(settings, name)
        reference = pushed_reference(image, image_reference, artifact)
        if name in {x.name for x in workspace.list_services()}:
            raise ServingError(
                f"a service named {name!r} already exists; delete it first "
                f"(`accel-widgets delete service {name}`) or choose another name"
            )
        check_endpoint(s["arm_endpoint"])
        started = time.monotonic()
        deadline = started + s["ready_timeout"]
        paths = self._paths(
            s["subscription"], s["resource_group"], s["aml_workspace"], s["endpoint"]
        )
        ctx = {**s, "image": reference, "location": None, "principal": None}

        report("deploy", 0.0, "signing in to Azure")
        arm = self._client(s["arm_endpoint"], settings.get("credential"), report, "deploy")
        try:
            report("deploy", 0.03, f"reading Azure ML workspace {s['aml_workspace']}")
            ws = arm.call("GET", paths["workspace"], what="reading the workspace").body or {}
            location = str(ws.get("location") or "").replace(" ", "").lower()
            if not location:
                raise ServingError(f"workspace {s['aml_workspace']} has no location in its answer")
            ctx["location"] = location
            try:
                arm.call("GET", paths["endpoint"], what="looking for the endpoint")
            except ArmError as exc:
                if exc.status != 404:
                    raise
            else:
                raise ServingError(
                    f"an online endpoint named {s['endpoint']!r} already exists in workspace "
                    f"{s['aml_workspace']}; delete it (`az ml online-endpoint delete -n "
                    f"{s['endpoint']} -g {s['resource_group']} -w {s['aml_workspace']}`) or "
                    "choose another name with --endpoint"
                )
        except ArmError as exc:
            raise self._explain(exc, ctx) from None

        model = artifact.model_name
        service = workspace.add_service(
            name,
            artifact,
            target=self.name,
            image=image,
            state="starting",
            address="",
            port=443,
            info={
                "endpoint": s["endpoint"],
                "deployment": DEPLOYMENT,
                "subscription": s["subscription"],
                "resource_group": s["resource_group"],
                "aml_workspace": s["aml_workspace"],
                "arm_endpoint": s["arm_endpoint"],
                "location": location,
                "image": reference,
                "protocol": "rest",
                "model": model,
                "settings": {k: v for k, v in s.items() if k != "ready_timeout"},
            },
        )
        created: list[tuple[str, str]] = []  # (what, path) to delete on failure, newest last
        try:
            env_id = self._environment(arm, paths, reference, model, report, created)
            body = self._endpoint_body(location, name, model)
            report("deploy", 0.12, f"creating endpoint {s['endpoint']} in {location}")
            answer = arm.call("PUT", paths["endpoint"], body, what="creating the endpoint")
            created.append(("endpoint", paths["endpoint"]))
            answer = arm.wait(
                answer,
                what=f"creating endpoint {s['endpoint']}",
                deadline=deadline,
                fraction=(0.12, 0.35),
            )
            endpoint = arm.call("GET", paths["endpoint"], what="reading the endpoint").body or {}
            ctx["principal"] = (endpoint.get("identity") or {}).get("principalId")

            report("deploy", 0.37, f"reading the keys of endpoint {s['endpoint']}")
            keys = (
                arm.call(
                    "POST", f"{paths['endpoint']}/listKeys", what="reading the endpoint's keys"
                ).body
                or {}
            )
            primary, secondary = keys.get("primaryKey"), keys.get("secondaryKey")
            if not primary:
                raise ServingError("Azure returned no primaryKey for the endpoint")

            report(
                "deploy",
                0.4,
                f"creating deployment {DEPLOYMENT}: {s['instance_count']} x "
                f"{s['instance_type']} running {reference}",
            )
            deployment = self._deployment_body(location, s, env_id, [primary, secondary])
            answer = arm.call(
                "PUT", paths["deployment"], deployment, what="creating the deployment"
            )
            arm.wait(
                answer,
                what=f"creating deployment {DEPLOYMENT} (pulling the image, loading the model)",
                deadline=deadline,
                fraction=(0.4, 0.88),
            )

            report("deploy", 0.9, f"sending 100% of the traffic to deployment {DEPLOYMENT}")
            body["properties"]["traffic"] = {DEPLOYMENT: 100}
            answer = arm.call("PUT", paths["endpoint"], body, what="setting the traffic")
            arm.wait(answer, what="setting the traffic", deadline=deadline, fraction=(0.9, 0.97))
            endpoint = arm.call("GET", paths["endpoint"], what="reading the endpoint").body or {}
            scoring_uri = (endpoint.get("properties") or {}).get("scoringUri")
            if not scoring_uri:
                raise ServingError("Azure returned no scoringUri for the endpoint")
        except BaseException as exc:
            left = self._undo(arm, created, deadline)
            workspace.remove_service(name)
            if isinstance(exc, ArmError):
                raise self._explain(exc, ctx, left, undone=bool(created)) from None
            if left and isinstance(exc, AccelError):
                raise type(exc)(f"{exc}; {left}") from None
            raise
        uri = urllib.parse.urlsplit(scoring_uri)
        seconds = round(time.monotonic() - started, 2)
        report("deploy", 1.0, f"{name} ready at {scoring_uri} in {seconds:.0f} s (Azure ML)")
        return workspace.update_service(
            name,
            state="running",
            address=uri.hostname or "",
            port=uri.port or (443 if uri.scheme == "https" else 80),
            key=primary,
            info={
                **service.info,
                "scoring_uri": scoring_uri,
                "environment": env_id,
                "principal_id": ctx["principal"],
                "tls": uri.scheme == "https",
                "ready_seconds": seconds,
            },
        )

    def _environment(
        self,
        arm: ArmClient,
        paths: dict[str, str],
        reference: str,
        model: str,
        report: Reporter,
        created: list[tuple[str, str]],
    ) -> str:
        """Register the image with our routes as an environment version; its ARM id."""
        routes = {
            "livenessRoute": {"path": HEALTH_ROUTE, "port": REST_PORT},
            "readinessRoute": {"path": HEALTH_ROUTE, "port": REST_PORT},
            "scoringRoute": {"path": f"/v1/models/{model}:predict", "port": REST_PORT},
        }
        # Versions are immutable: one per (image, routes), so a second deploy reuses it.
        version = hashlib.sha256(f"{reference}|{sorted(routes.items())}".encode()).hexdigest()[:12]
        env_name = f"accel-widgets-{model}"[:255]
        path = f"{paths['workspace']}/environments/{env_name}/versions/{version}"
        report("deploy", 0.08, f"registering {reference} as environment {env_name}:{version}")
        body = {
            "properties": {
                "image": reference,
                "osType": "Linux",
                "inferenceConfig": routes,
                "description": f"{model} served by accel-widgets (TF Serving REST routes)",
            }
        }
        answer = arm.call("PUT", path, body, what="registering the environment")
        if answer.status == 201:
            created.append(("environment", path))
        return path

    @staticmethod
    def _endpoint_body(location: str, service: str, model: str) -> dict[str, Any]:
        return {
            "location": location,
            "kind": "Managed",
            "identity": {"type": "SystemAssigned"},
            "tags": {"created-by": "accel-widgets", "accel-widgets-service": service},
            "properties": {
                "authMode": "Key",
                "description": f"{model} served by accel-widgets",
                "publicNetworkAccess": "Enabled",
            },
        }

    @staticmethod
    def _deployment_body(
        location: str, s: dict[str, Any], env_id: str, keys: list[str | None]
    ) -> dict[str, Any]:
        probe = {
            "initialDelay": "PT10S",
            "period": "PT10S",
            "timeout": "PT2S",
            "failureThreshold": 30,
            "successThreshold": 1,
        }
        return {
            "location": location,
            "kind": "Managed",
            "sku": {"name": "Default", "capacity": s["instance_count"]},
            "properties": {
                "endpointComputeType": "Managed",
                "instanceType": s["instance_type"],
                "environmentId": env_id,
                "environmentVariables": {
                    "ACCEL_WIDGETS_API_KEYS": ",".join(k for k in keys if k),
                },
                "scaleSettings": {"scaleType": "Default"},
                "requestSettings": {
                    "requestTimeout": "PT30S",
                    "maxConcurrentRequestsPerInstance": 4,
                },
                "livenessProbe": probe,
                "readinessProbe": probe,
                "appInsightsEnabled": False,
            },
        }

    def _undo(self, arm: ArmClient, created: list[tuple[str, str]], deadline: float) -> str:
        """Delete what this deploy created, newest first; '' or what could not be deleted."""
        left = []
        # Clean-up runs to the end even after Cancel: progress still shows, cancel is ignored.
        arm.report = Reporter(arm.report.progress)
        for what, path in reversed(created):
            try:
                answer = arm.call("DELETE", path, what=f"deleting the {what}")
                arm.wait(
                    answer,
                    what=f"deleting the {what} made by this deploy",
                    deadline=max(deadline, time.monotonic() + 600),
                )
            except ArmError as exc:
                if exc.status != 404:
                    left.append(f"{what} {path.rsplit('/', 1)[-1]} ({exc})")
            except Exception as exc:  # reported to the user below
                left.append(f"{what} {path.rsplit('/', 1)[-1]} ({exc})")
        if not left:
            return ""
        return (
            "could not delete what this deploy created: "
            + "; ".join(left)
            + " -- delete it in Azure ML studio or with `az ml online-endpoint delete`"
        )

    def _explain(
        self, exc: ArmError, ctx: dict[str, Any], left: str = "", undone: bool = False
    ) -> ServingError:
        """An ARM error as a message that names the problem and the fix."""
        answer = f"{exc.what} ({said(exc.status, exc.code, exc.message)})"
        code = exc.code.lower()
        text = f"{exc.code} {exc.message}".lower()
        sub, group, ws = ctx["subscription"], ctx["resource_group"], ctx["aml_workspace"]
        if exc.status == 401 or code in (
            "invalidauthenticationtoken",
            "expiredauthenticationtoken",
        ):
            message = (
                f"Azure rejected the sign-in token while {answer}; sign in again with "
                "`az login` (or renew AZURE_CLIENT_SECRET for a service principal) and retry"
            )
        elif exc.status == 403 or code in ("authorizationfailed", "forbidden"):
            message = (
                f"the signed-in identity may not do this in Azure ML workspace {ws} (resource "
                f"group {group}, subscription {sub}) while {answer}; ask an owner for the "
                "'AzureML Data Scientist' role (or Contributor) on the workspace, or `az login` "
                "as a user who has it"
            )
        elif "quota" in text:
            needs = quota_needs(ctx["instance_type"], ctx["instance_count"])
            if needs["needed"] is not None:
                detail = (
                    f"{ctx['instance_count']} x {ctx['instance_type']} ({needs['vcpus_each']} "
                    f"vCPUs each) need {needs['needed']} free vCPUs of the {needs['family']} "
                    "quota"
                )
                check = (
                    f"`accel-widgets quota --target azure --region {ctx['location']} "
                    f"--family {needs['family']}`"
                )
            else:
                detail = f"{ctx['instance_count']} x {ctx['instance_type']} need that much more"
                check = f"`az vm list-usage --location {ctx['location']} -o table`"
            message = (
                f"not enough vCPU quota in {ctx['location']} while {answer}: Azure ML reserves "
                f"20% extra capacity for upgrades, so {detail} (instances x vCPUs x 1.2). "
                f"Check with {check}, request a quota increase, or choose a smaller "
                "--instance-type or --instance-count"
            )
        elif ("pull" in text and ("image" in text or "manifest" in text)) or code in (
            "imagepullfailure",
            "imagenotfound",
            "errimagepull",
        ):
            registry = _registry(ctx["image"])
            who = f"principal {ctx['principal']}" if ctx["principal"] else "the endpoint's identity"
            message = (
                f"the deployment could not pull the image {ctx['image']} ({answer}); grant the "
                f"endpoint's system-assigned identity ({who}) and the workspace's identity the "
                f"AcrPull role on the registry {registry} (`az role assignment create --assignee "
                f"<principal id> --role AcrPull --scope $(az acr show -n "
                f"{registry.split('.')[0]} --query id -o tsv)`), check that the image was pushed "
                "there, and deploy again"
            )
        elif exc.status == 404:
            if code == "resourcegroupnotfound":
                what = f"resource group {group} was not found in subscription {sub}"
                fix = "`az group list -o table` lists yours"
            elif code == "subscriptionnotfound":
                what = f"subscription {sub} was not found"
                fix = "`az account list -o table` lists yours"
            else:
                what = f"Azure ML workspace {ws} was not found in resource group {group}"
                fix = f"`az ml workspace list -g {group} -o table` lists them"
            message = f"{what} ({answer}); {fix}"
        elif "location" in code or "region" in text or "sku" in code or "notavailable" in code:
            message = (
                f"region {ctx['location']} of workspace {ws} cannot host this while {answer}; "
                "choose another --instance-type, or a workspace in another region"
            )
        elif exc.status == 409 or "namenotavailable" in code or "conflict" in code:
            message = (
                f"the endpoint name {ctx['endpoint']!r} is not available ({answer}); endpoint "
                "names are unique within a region: choose another with --endpoint "
                f"({ENDPOINT_NAME_RULE})"
            )
        elif exc.status >= 500:
            message = f"Azure failed while {answer}; this is on Azure's side, try again later"
        else:
            message = f"Azure refused {answer}"
        if left:
            message += f"; {left}"
        elif undone:
            message += "; what this deploy had created in Azure was deleted"
        return ServingError(message)

    # -- status, logs, delete --------------------------------------------------------------

    def _service_paths(self, service: ServiceRecord) -> dict[str, str]:
        info = service.info
        return self._paths(
            info["subscription"], info["resource_group"], info["aml_workspace"], info["endpoint"]
        )

    def _context(self, service: ServiceRecord) -> dict[str, Any]:
        info = service.info
        settings = info.get("settings", {})
        return {
            "subscription": info.get("subscription"),
            "resource_group": info.get("resource_group"),
            "aml_workspace": info.get("aml_workspace"),
            "endpoint": info.get("endpoint"),
            "location": info.get("location"),
            "instance_type": settings.get("instance_type", ""),
            "instance_count": settings.get("instance_count", 1),
            "image": info.get("image", ""),
            "principal": info.get("principal_id"),
        }

    def status(self, workspace: Workspace, service: ServiceRecord) -> str:
        arm = self._client(
            service.info.get("arm_endpoint", DEFAULT_ARM), None, Reporter(), "status"
        )
        paths = self._service_paths(service)
        states = []
        for what in ("endpoint", "deployment"):
            try:
                body = arm.call("GET", paths[what], what=f"reading the {what}").body or {}
            except ArmError as exc:
                if exc.status == 404:
                    return "dead"
                raise self._explain(exc, self._context(service)) from None
            states.append(str((body.get("properties") or {}).get("provisioningState", "")))
        lowered = {state.lower() for state in states}
        if lowered & {"failed", "canceled", "deleting"}:
            return "dead"
        if lowered - {"succeeded"}:
            return "starting"
        uri = service.info.get("scoring_uri")
        if not uri:
            return "starting"
        from accel_widgets.engine.clients.rest_client import RestPredictionClient

        with RestPredictionClient(uri, key=service.key, timeout=3.0, retries=0) as client:
            health = client.health()
        # Unreachable from here (a private network): Azure's own word stands.
        return "unhealthy" if health == "not_serving" else "running"

    def logs(self, workspace: Workspace, service: ServiceRecord, lines: int = 50) -> str:
        arm = self._client(service.info.get("arm_endpoint", DEFAULT_ARM), None, Reporter(), "logs")
        path = f"{self._service_paths(service)['deployment']}/getLogs"
        try:
            body = (
                arm.call(
                    "POST",
                    path,
                    {"containerType": "InferenceServer", "tail": int(lines)},
                    what="reading the deployment's logs",
                ).body
                or {}
            )
        except ArmError as exc:
            if exc.status == 404:
                return ""
            raise self._explain(exc, self._context(service)) from None
        return str(body.get("content") or "").rstrip()

    def delete(self, workspace: Workspace, service: ServiceRecord) -> ServiceRecord:
        arm = self._client(
            service.info.get("arm_endpoint", DEFAULT_ARM), None, Reporter(), "delete"
        )
        path = self._service_paths(service)["endpoint"]
        try:
            answer = arm.call("DELETE", path, what="deleting the endpoint")
            arm.wait(
                answer,
                what=f"deleting endpoint {service.info['endpoint']}",
                deadline=time.monotonic() + 1800,
            )
        except ArmError as exc:
            if exc.status != 404:
                raise self._explain(exc, self._context(service)) from None
        with contextlib.suppress(AccelError):
            return workspace.remove_service(service.name)
        return service


TARGET = AzureMLTarget()
