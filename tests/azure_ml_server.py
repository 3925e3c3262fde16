"""A loopback stand-in for Azure Resource Manager's Azure ML online endpoint REST API.

Azure cannot be reached from the machines these tests run on, so this threaded
``http.server`` on 127.0.0.1 speaks the documented protocol the ``azureml`` target calls:

* the paths under ``/subscriptions/{sub}/resourceGroups/{rg}/providers/
  Microsoft.MachineLearningServices/workspaces/{ws}`` (the workspace, environment versions,
  online endpoints, their deployments, ``listKeys`` and ``getLogs``), each with the
  ``api-version`` query parameter checked (400 ``InvalidApiVersionParameter`` otherwise) and a
  bearer token checked (401 ``InvalidAuthenticationToken``);
* request bodies validated for the fields Azure requires (400 ``BadRequest`` naming the
  missing field), and traffic that names a deployment which does not exist refused, as Azure
  refuses it;
* long-running operations: PUT answers 201 with ``Azure-AsyncOperation`` and ``Retry-After``,
  DELETE 202 with ``Location``; the operation reports ``InProgress`` for ``polls`` polls,
  then ``Succeeded``, or ``Failed`` with an error code when a test scripts a failure;
* the Compute ``usages`` of a region (``usages``), which the quota check reads from the same
  Azure Resource Manager;
* short-lived tokens (``expiry``): 401 ``ExpiredAuthenticationToken`` once one has expired;
* errors as ``{"error": {"code", "message"}}``; a scripted 429 with ``Retry-After``; 403
  ``AuthorizationFailed``; 404 ``SubscriptionNotFound`` / ``ResourceGroupNotFound`` /
  ``ResourceNotFound``.

Every call is recorded (method, path, query, body) in ``calls``; what exists is in ``store``
(ARM id, lower-cased -> resource), so a test can assert that nothing was left behind.
``GET /score`` answers as our model server answers a GET on its predict route (501, "predict
takes POST"), standing in for a deployment's scoring URI when a test does not point that URI
at a real server.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_VERSION = "2024-04-01"
COMPUTE_API_VERSION = "2025-04-01"  # the quota check's Microsoft.Compute usages
SUB = "11111111-2222-3333-4444-555555555555"
TOKEN = "fake-arm-token"
PROVIDER = "Microsoft.MachineLearningServices"

_WS = (
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    + PROVIDER
    + r"/workspaces/(?P<ws>[^/]+)"
)
ROUTES = [
    ("workspace", re.compile(_WS + r"$", re.IGNORECASE)),
    ("environment", re.compile(_WS + r"/environments/[^/]+/versions/[^/]+$", re.IGNORECASE)),
    ("endpoint", re.compile(_WS + r"/onlineEndpoints/(?P<ep>[^/]+)$", re.IGNORECASE)),
    ("keys", re.compile(_WS + r"/onlineEndpoints/(?P<ep>[^/]+)/listKeys$", re.IGNORECASE)),
    (
        "deployment",
        re.compile(_WS + r"/onlineEndpoints/(?P<ep>[^/]+)/deployments/(?P<dep>[^/]+)$", re.I),
    ),
    (
        "logs",
        re.compile(
            _WS + r"/onlineEndpoints/(?P<ep>[^/]+)/deployments/(?P<dep>[^/]+)/getLogs$", re.I
        ),
    ),
    (
        "usages",
        re.compile(
            r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft.Compute/locations/"
            r"(?P<region>[^/]+)/usages$",
            re.IGNORECASE,
        ),
    ),
    ("operation", re.compile(r"^/operations/(?P<op>\d+)$")),
    ("location", re.compile(r"^/locations/(?P<op>\d+)$")),
]


class FakeAzureML(ThreadingHTTPServer):
    """The stand-in's state; tests change the attributes to script what Azure does."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.subscription = SUB
        self.resource_group = "ml-rg"
        self.workspace = "ml-ws"
        self.location = "eastus"
        self.token = TOKEN
        #: Short-lived tokens a test handed out: token -> when it expires (time.time()).
        self.expiry: dict[str, float] = {}
        #: The Compute usages of the subscription's regions (the quota check reads them).
        self.usages: list[dict[str, Any]] = []
        self.forbidden = False
        self.polls = 1  # InProgress answers before an operation ends
        self.retry_after = "0"  # Retry-After on LRO answers (seconds)
        #: Where Azure-AsyncOperation URLs point (default: this server).
        self.operation_base: str | None = None
        #: (code, message) that the next deployment's operation fails with.
        self.deployment_failure: tuple[str, str] | None = None
        #: One-shot answers: (method, path fragment, status, headers, code, message).
        self.script: list[tuple[str, str, int, dict[str, str], str, str]] = []
        self.scoring_uri: str | None = None  # default: this server's /score
        self.keys = {"primaryKey": "primary-" + "k" * 20, "secondaryKey": "secondary-" + "s" * 20}
        self.log_text = "\n".join(f"log line {i}" for i in range(1, 101))
        self.calls: list[dict[str, Any]] = []
        self.store: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.lock = threading.Lock()
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> FakeAzureML:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address) -> None:
        """Quiet when a client hangs up first."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    # -- helpers for tests -----------------------------------------------------------------

    def workspace_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/workspaces/{self.workspace}"
        )

    def endpoint_id(self, name: str) -> str:
        return f"{self.workspace_id()}/onlineEndpoints/{name}"

    def resource(self, arm_id: str) -> dict[str, Any] | None:
        return self.store.get(arm_id.lower())

    def user_calls(self) -> list[tuple[str, str]]:
        """(method, what) of every call but operation polls, e.g. ('PUT', 'deployment')."""
        out = []
        for call in self.calls:
            if call["route"] in ("operation", "location"):
                continue
            what = call["route"]
            if what == "endpoint" and call["method"] == "PUT":
                traffic = (call["body"] or {}).get("properties", {}).get("traffic")
                what = "endpoint traffic" if traffic else "endpoint"
            out.append((call["method"], what))
        return out

    def kinds(self) -> set[str]:
        """What the store holds, by kind ('endpoint', 'deployment', 'environment')."""
        found = set()
        for arm_id in self.store:
            if "/deployments/" in arm_id:
                found.add("deployment")
            elif "/onlineendpoints/" in arm_id:
                found.add("endpoint")
            elif "/environments/" in arm_id:
                found.add("environment")
        return found

    def operation(self, done, failure: tuple[str, str] | None = None) -> str:
        op = str(next(self._ids))
        self.operations[op] = {"left": self.polls, "done": done, "failure": failure}
        return op


class _Handler(BaseHTTPRequestHandler):
    server: FakeAzureML
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args) -> None:
        pass

    # -- plumbing --------------------------------------------------------------------------

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str, headers=None) -> None:
        self._send(status, {"error": {"code": code, "message": message}}, headers)

    def _handle(self, method: str) -> None:
        fake = self.server
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._error(400, "BadRequest", "The request body is not valid JSON.")
        if parts.path == "/score":
            if method == "GET":
                return self._send(501, {"error": "predict takes POST with a JSON body"})
            return self._error(400, "BadRequest", "the stand-in does not score")
        route, match = next(
            ((name, m) for name, pattern in ROUTES if (m := pattern.match(parts.path))),
            (None, None),
        )
        with fake.lock:
            fake.calls.append(
                {
                    "method": method,
                    "path": parts.path,
                    "query": query,
                    "body": body,
                    "route": route or "?",
                    "auth": self.headers.get("Authorization", ""),
                    "agent": self.headers.get("User-Agent", ""),
                }
            )
        if query.get("api-version") != [COMPUTE_API_VERSION if route == "usages" else API_VERSION]:
            return self._error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{query.get('api-version')}' is invalid.",
            )
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if token in fake.expiry and time.time() >= fake.expiry[token]:
            return self._error(
                401, "ExpiredAuthenticationToken", "The access token expiry has passed."
            )
        if token != fake.token and token not in fake.expiry:
            return self._error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        for index, (m, fragment, status, headers, code, message) in enumerate(fake.script):
            if m == method and fragment in parts.path:
                del fake.script[index]
                return self._error(status, code, message, headers)
        if route is None:
            return self._error(404, "NoRoute", f"no route {method} {parts.path}")
        if fake.forbidden and route not in ("operation", "location"):
            return self._error(
                403,
                "AuthorizationFailed",
                "The client 'someone@example.com' does not have authorization to perform "
                f"action 'Microsoft.MachineLearningServices/workspaces/read' over scope "
                f"'/subscriptions/{fake.subscription}/resourceGroups/{fake.resource_group}'.",
            )
        if route in ("operation", "location"):
            return self._poll(route, match["op"])
        if route == "usages":
            return self._send(200, {"value": fake.usages})
        # The workspace must exist for every other route.
        if match["sub"].lower() != fake.subscription:
            return self._error(
                404,
                "SubscriptionNotFound",
                f"The subscription '{match['sub']}' could not be found.",
            )
        if match["rg"].lower() != fake.resource_group.lower():
            return self._error(
                404, "ResourceGroupNotFound", f"Resource group '{match['rg']}' could not be found."
            )
        if match["ws"].lower() != fake.workspace.lower():
            return self._error(
                404,
                "ResourceNotFound",
                f"The Resource '{PROVIDER}/workspaces/{match['ws']}' under resource group "
                f"'{match['rg']}' was not found.",
            )
        return getattr(self, f"_{route}")(method, parts.path, body, match)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # -- long-running operations -----------------------------------------------------------

    def _accepted(self, status: int, body: Any, done, failure=None, style: str = "async"):
        fake = self.server
        op = fake.operation(done, failure)
        base = (fake.operation_base or fake.url) if style == "async" else fake.url
        url = f"{base}/{'operations' if style == 'async' else 'locations'}/{op}"
        url += f"?api-version={API_VERSION}"
        headers = {"Retry-After": fake.retry_after}
        headers["Azure-AsyncOperation" if style == "async" else "Location"] = url
        self._send(status, body, headers)

    def _poll(self, route: str, op_id: str) -> None:
        fake = self.server
        op = fake.operations.get(op_id)
        if op is None:
            return self._error(404, "NotFound", f"no operation {op_id}")
        if op["left"] > 0:
            op["left"] -= 1
            headers = {"Retry-After": fake.retry_after}
            if route == "location":
                return self._send(202, None, headers)
            return self._send(200, {"status": "InProgress"}, headers)
        if not op.get("finished"):
            op["finished"] = True
            op["done"](op["failure"])
        if route == "location":
            return self._send(200 if op["failure"] is None else 500, None)
        if op["failure"] is None:
            return self._send(200, {"status": "Succeeded"})
        code, message = op["failure"]
        return self._send(200, {"status": "Failed", "error": {"code": code, "message": message}})

    # -- resources -------------------------------------------------------------------------

    @staticmethod
    def _missing(body: Any, *paths: str) -> str | None:
        for path in paths:
            node = body
            for part in path.split("."):
                if not isinstance(node, dict) or node.get(part) in (None, ""):
                    return path
                node = node[part]
        return None

    def _bad(self, field: str) -> None:
        self._error(400, "BadRequest", f"The request is invalid: '{field}' is required.")

    def _workspace(self, method, path, body, match) -> None:
        fake = self.server
        if method != "GET":
            return self._error(405, "MethodNotAllowed", method)
        return self._send(
            200,
            {
                "id": fake.workspace_id(),
                "name": fake.workspace,
                "location": fake.location,
                "properties": {"provisioningState": "Succeeded"},
            },
        )

    def _environment(self, method, path, body, match) -> None:
        fake = self.server
        key = path.lower()
        if method == "GET":
            found = fake.store.get(key)
            return self._send(200, found) if found else self._not_found(path)
        if method == "DELETE":
            fake.store.pop(key, None)
            return self._send(200, None)
        if method != "PUT":
            return self._error(405, "MethodNotAllowed", method)
        missing = self._missing(body, "properties.image", "properties.inferenceConfig")
        if missing:
            return self._bad(missing)
        config = body["properties"]["inferenceConfig"]
        for route in ("livenessRoute", "readinessRoute", "scoringRoute"):
            entry = config.get(route) or {}
            if not str(entry.get("path", "")).startswith("/") or not isinstance(
                entry.get("port"), int
            ):
                return self._bad(f"properties.inferenceConfig.{route}")
        existed = key in fake.store
        if existed and fake.store[key]["properties"]["image"] != body["properties"]["image"]:
            return self._error(409, "Conflict", "Environment versions are immutable.")
        fake.store[key] = {"id": path, **body}
        return self._send(200 if existed else 201, fake.store[key])

    def _not_found(self, path: str) -> None:
        kind, name = path.rstrip("/").split("/")[-2:]
        self._error(
            404, "ResourceNotFound", f"The resource '{kind}/{name}' was not found in the workspace."
        )

    def _endpoint(self, method, path, body, match) -> None:
        fake = self.server
        key = path.lower()
        existing = fake.store.get(key)
        if method == "GET":
            return self._send(200, existing) if existing else self._not_found(path)
        if method == "DELETE":
            if existing is None:
                return self._not_found(path)
            existing["properties"]["provisioningState"] = "Deleting"

            def done(failure):
                for arm_id in [k for k in fake.store if k == key or k.startswith(key + "/")]:
                    fake.store.pop(arm_id)

            return self._accepted(202, None, done, style="location")
        if method != "PUT":
            return self._error(405, "MethodNotAllowed", method)
        missing = self._missing(body, "location", "identity.type", "properties.authMode")
        if missing:
            return self._bad(missing)
        if body["properties"]["authMode"] not in ("Key", "AMLToken", "AADToken"):
            return self._bad("properties.authMode")
        for deployment, share in (body["properties"].get("traffic") or {}).items():
            dep = fake.store.get(f"{key}/deployments/{deployment}".lower())
            if dep is None or dep["properties"]["provisioningState"] != "Succeeded":
                return self._error(
                    400,
                    "BadArgument",
                    f"Traffic names deployment '{deployment}', which does not exist or has not "
                    "succeeded in this endpoint.",
                )
            if not isinstance(share, int):
                return self._bad("properties.traffic")
        name = match["ep"]
        resource = {
            "id": path,
            "name": name,
            **body,
            "identity": {**body["identity"], "principalId": "aaaa-principal-0001"},
            "properties": {
                **body["properties"],
                "provisioningState": "Updating" if existing else "Creating",
                "scoringUri": (existing or {}).get("properties", {}).get("scoringUri"),
                "traffic": body["properties"].get("traffic") or {},
            },
        }
        fake.store[key] = resource

        def done(failure):
            resource["properties"]["provisioningState"] = "Failed" if failure else "Succeeded"
            resource["properties"]["scoringUri"] = fake.scoring_uri or f"{fake.url}/score"

        return self._accepted(200 if existing else 201, resource, done)

    def _keys(self, method, path, body, match) -> None:
        fake = self.server
        endpoint = fake.store.get(path.lower().rsplit("/", 1)[0])
        if method != "POST":
            return self._error(405, "MethodNotAllowed", method)
        if endpoint is None:
            return self._not_found(path.rsplit("/", 1)[0])
        return self._send(200, dict(fake.keys))

    def _deployment(self, method, path, body, match) -> None:
        fake = self.server
        key = path.lower()
        endpoint_key = key.split("/deployments/")[0]
        if fake.store.get(endpoint_key) is None:
            return self._not_found(path.split("/deployments/")[0])
        existing = fake.store.get(key)
        if method == "GET":
            return self._send(200, existing) if existing else self._not_found(path)
        if method == "DELETE":
            if existing is None:
                return self._not_found(path)
            return self._accepted(202, None, lambda f: fake.store.pop(key, None), style="location")
        if method != "PUT":
            return self._error(405, "MethodNotAllowed", method)
        missing = self._missing(
            body,
            "location",
            "sku.capacity",
            "properties.endpointComputeType",
            "properties.instanceType",
            "properties.environmentId",
        )
        if missing:
            return self._bad(missing)
        if not isinstance(body["sku"]["capacity"], int) or body["sku"]["capacity"] < 1:
            return self._bad("sku.capacity")
        if body["properties"]["endpointComputeType"] != "Managed":
            return self._bad("properties.endpointComputeType")
        if fake.store.get(body["properties"]["environmentId"].lower()) is None:
            return self._error(
                400, "BadArgument", "The environment given by environmentId does not exist."
            )
        resource = {
            "id": path,
            "name": match["dep"],
            **body,
            "properties": {**body["properties"], "provisioningState": "Creating"},
        }
        fake.store[key] = resource

        def done(failure):
            resource["properties"]["provisioningState"] = "Failed" if failure else "Succeeded"

        failure, fake.deployment_failure = fake.deployment_failure, None
        return self._accepted(201, resource, done, failure)

    def _logs(self, method, path, body, match) -> None:
        fake = self.server
        if method != "POST":
            return self._error(405, "MethodNotAllowed", method)
        if fake.store.get(path.lower().rsplit("/", 1)[0]) is None:
            return self._not_found(path.rsplit("/", 1)[0])
        if not isinstance(body, dict) or body.get("containerType") not in (
            "InferenceServer",
            "StorageInitializer",
        ):
            return self._bad("containerType")
        tail = body.get("tail") or 100
        lines = fake.log_text.splitlines()[-int(tail) :]
        return self._send(200, {"content": "\n".join(lines) + "\n"})


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
