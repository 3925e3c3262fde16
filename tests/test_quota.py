"""Tests for the capacity check (``accel_widgets.engine.targets.quota``).

The Azure tests talk to a loopback ``http.server`` on 127.0.0.1 that stands in for Azure
Resource Manager's REST API, because the real one cannot be reached from these machines. The
stand-in speaks the documented API: it checks the path, the ``api-version`` and the bearer
token (401 ``InvalidAuthenticationToken`` JSON for a wrong one), pages results with an absolute
``nextLink`` back to itself, and answers 403/404/429/500 with Azure's ``{"error": {"code",
"message"}}`` body when a test asks it to. No test sends traffic anywhere but 127.0.0.1, and no
test lets ``DefaultAzureCredential`` run (it would probe the instance metadata address).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.core.credentials import AccessToken

from accel_widgets.engine.targets import quota
from accel_widgets.engine.targets.quota import (
    API_VERSION,
    ModelNeeds,
    QuotaReport,
    QuotaRow,
    check_quota,
)
from accel_widgets.errors import AccelError, CancelledError, QuotaError
from accel_widgets.progress import CancelToken, EventLog

SUB = "11111111-2222-3333-4444-555555555555"
TOKEN = "good-token"


def usage(value: str, localized: str, current: float, limit: float) -> dict:
    """One usage item as Azure returns it."""
    return {
        "unit": "Count",
        "currentValue": current,
        "limit": limit,
        "name": {"value": value, "localizedValue": localized},
    }


PBS_OK = usage("standardPBSFamily", "Standard PBS Family vCPUs", 0, 6)
CORES = usage("cores", "Total Regional vCPUs", 4, 100)
NCSV3 = usage("standardNCSv3Family", "Standard NCSv3 Family vCPUs", 0, 24)
NCAST4 = usage("standardNCASv3_T4Family", "Standard NCASv3_T4 Family vCPUs", 4, 16)
NVSV3 = usage("standardNVSv3Family", "Standard NVSv3 Family vCPUs", 10, 12)  # 2 free: too few
DSV3 = usage("standardDSv3Family", "Standard DSv3 Family vCPUs", 0, 100)  # not a GPU family


class StaticCredential:
    """A credential that hands out a fixed token and remembers the scopes it was asked for."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


class NoSignInCredential:
    """What azure-identity raises when no sign-in is available at all."""

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        from azure.identity import CredentialUnavailableError

        raise CredentialUnavailableError("no credential in this test")


class FakeArm(ThreadingHTTPServer):
    """State of the stand-in: usage pages, known subscription and regions, scripted errors."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ArmHandler)
        self.subscription = SUB
        self.regions = {"eastus", "westeurope"}
        self.token = TOKEN
        self.pages: list[list[dict]] = [[PBS_OK, CORES, NCSV3, DSV3]]
        self.forbidden = False
        self.delay = 0.0  # seconds to wait before answering
        # Answers served before the normal ones: (status, extra headers, error code, message).
        self.script: list[tuple[int, dict[str, str], str, str]] = []
        self.requests: list[dict] = []

    def handle_error(self, request, client_address) -> None:
        """Stay quiet when a client gave up first (the timeout test hangs up on purpose)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ArmHandler(BaseHTTPRequestHandler):
    """Answers ``GET .../providers/Microsoft.Compute/locations/{loc}/usages`` as ARM does."""

    server: FakeArm

    def log_message(self, format: str, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str, headers=None) -> None:
        self._send(status, {"error": {"code": code, "message": message}}, headers)

    def do_GET(self) -> None:
        arm = self.server
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        auth = self.headers.get("Authorization", "")
        arm.requests.append({"path": parts.path, "query": query, "auth": auth})
        time.sleep(arm.delay)

        if arm.script:
            status, headers, code, message = arm.script.pop(0)
            return self._error(status, code, message, headers)
        if auth != f"Bearer {arm.token}":
            return self._error(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
                {"WWW-Authenticate": 'Bearer authorization_uri="https://login.example"'},
            )
        if query.get("api-version") != [API_VERSION]:
            return self._error(
                400, "InvalidApiVersionParameter", f"The api-version '{query}' is invalid."
            )
        segments = parts.path.strip("/").split("/")
        if (
            len(segments) != 7
            or segments[0] != "subscriptions"
            or segments[2:5] != ["providers", "Microsoft.Compute", "locations"]
            or segments[6] != "usages"
        ):
            return self._error(404, "InvalidResourceType", f"No route for {parts.path}.")
        subscription, region = segments[1], segments[5]
        if subscription != arm.subscription:
            return self._error(
                404,
                "SubscriptionNotFound",
                f"The subscription '{subscription}' could not be found.",
            )
        if arm.forbidden:
            return self._error(
                403,
                "AuthorizationFailed",
                "The client 'someone' does not have authorization to perform action "
                "'Microsoft.Compute/locations/usages/read'.",
            )
        if region not in arm.regions:
            return self._error(
                404, "NoRegisteredProviderFound", f"No registered resource provider for '{region}'."
            )
        page = int(query.get("page", ["0"])[0])
        body: dict = {"value": arm.pages[page]}
        if page + 1 < len(arm.pages):
            body["nextLink"] = (
                f"{arm.url}{parts.path}?api-version={API_VERSION}&page={page + 1}&%24skiptoken=x"
            )
        return self._send(200, body)


@pytest.fixture
def arm(monkeypatch):
    """A running stand-in for Azure Resource Manager on 127.0.0.1, stopped after the test."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = FakeArm()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any test that would open a connection to anything but this machine."""
    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"a test tried to connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def no_default_credential(monkeypatch):
    """Make sure no test ever reaches DefaultAzureCredential (it probes 169.254.169.254)."""
    import azure.identity

    def forbidden(*args, **kwargs):
        raise AssertionError("a test tried to use DefaultAzureCredential")

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", forbidden)


def azure(arm: FakeArm, **kwargs) -> QuotaReport:
    """check_quota('azure') against the stand-in, with a good token unless a test says otherwise."""
    kwargs.setdefault("credential", StaticCredential())
    kwargs.setdefault("subscription_id", SUB)
    kwargs.setdefault("timeout", 5.0)
    return check_quota("azure", endpoint=arm.url, **kwargs)


# --------------------------------------------------------------------------------------------
# Report shape
# --------------------------------------------------------------------------------------------


def test_row_free_and_enough_follow_limit_minus_current():
    row = QuotaRow("Standard PBS Family vCPUs", current=2, limit=10, unit="vCPUs", needed=6)
    assert row.free == 8
    assert row.enough
    assert not QuotaRow("x", current=5, limit=10, unit="vCPUs", needed=6).enough


def test_to_table_has_header_and_string_cells():
    report = QuotaReport(
        target="azure",
        rows=[QuotaRow("memory", 2.25, 8, "GiB", 1)],
        verdict=True,
        advice="fine",
        details={},
    )
    table = report.to_table()
    assert table[0] == ["resource", "used", "limit", "free", "needed", "unit", "enough"]
    assert table[1] == ["memory", "2.2", "8", "5.8", "1", "GiB", "yes"]
    assert all(isinstance(cell, str) for line in table for cell in line)


# --------------------------------------------------------------------------------------------
# Azure: answers
# --------------------------------------------------------------------------------------------


def test_enough_quota_gives_true_verdict_with_the_numbers(arm):
    arm.pages = [[usage("standardPBSFamily", "Standard PBS Family vCPUs", 2, 10), CORES, DSV3]]
    credential = StaticCredential()
    report = azure(arm, credential=credential)

    assert report.target == "azure"
    assert report.verdict is True
    family, total = report.rows
    assert (family.name, family.current, family.limit, family.free) == (
        "Standard PBS Family vCPUs",
        2,
        10,
        8,
    )
    assert (family.needed, family.unit, family.enough) == (6, "vCPUs", True)
    assert (total.name, total.current, total.limit, total.free) == (
        "Total Regional vCPUs",
        4,
        100,
        96,
    )
    assert "deploy" in report.advice
    assert report.details["region"] == "eastus"
    assert report.details["family"] == "standardPBSFamily"
    assert report.details["subscription"] == SUB
    assert report.to_table()[1][:5] == ["Standard PBS Family vCPUs", "2", "10", "8", "6"]
    # What went over the wire is the documented request.
    assert credential.scopes == [("https://management.azure.com/.default",)]
    request = arm.requests[0]
    assert (
        request["path"]
        == f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/usages"
    )
    assert request["query"]["api-version"] == [API_VERSION]
    assert request["auth"] == f"Bearer {TOKEN}"


def test_family_found_whatever_its_capitalisation(arm):
    arm.pages = [[usage("standardPbsFamily", "Standard PBS Family vCPUs", 0, 6), CORES]]
    report = azure(arm, family="STANDARDpbsFAMILY")
    assert report.verdict is True
    assert report.rows[0].name == "Standard PBS Family vCPUs"


def test_family_found_by_its_display_name(arm):
    report = azure(arm, family="standard pbs family vcpus")
    assert report.details["family_found"] is True
    assert report.rows[0].limit == 6


def test_region_display_name_is_accepted(arm):
    report = azure(arm, region="East US")
    assert report.verdict is True
    assert arm.requests[0]["path"].endswith("/locations/eastus/usages")


def test_paging_is_followed_to_find_the_family_on_page_two(arm):
    arm.pages = [[CORES, DSV3], [NCSV3, PBS_OK]]
    events = EventLog()
    report = azure(arm, progress=events)

    assert report.verdict is True
    assert report.rows[0].name == "Standard PBS Family vCPUs"
    assert report.details["pages"] == 2
    assert len(arm.requests) == 2
    assert arm.requests[1]["query"]["page"] == ["1"]
    assert arm.requests[1]["auth"] == f"Bearer {TOKEN}"
    assert any(e.message == "reading usages page 2" for e in events)


def test_not_enough_quota_advises_an_increase_and_lists_gpu_alternatives(arm):
    arm.pages = [
        [usage("standardPBSFamily", "Standard PBS Family vCPUs", 2, 6), CORES],
        [NVSV3, NCAST4, DSV3, NCSV3],
    ]
    report = azure(arm)

    assert report.verdict is False
    family = report.rows[0]
    assert (family.free, family.enough) == (4, False)
    assert "quota increase" in report.advice
    assert "eastus" in report.advice
    assert "Standard PBS Family vCPUs" in report.advice
    # GPU families with >= 6 free, most free first; NVSv3 (2 free) and DSv3 (not GPU) left out.
    names = [row.name for row in report.details["alternatives"]]
    assert names == ["Standard NCSv3 Family vCPUs", "Standard NCASv3_T4 Family vCPUs"]
    assert "Standard NCSv3 Family vCPUs: 24 free" in report.advice
    assert "NVSv3" not in report.advice
    assert "local" in report.advice


def test_regional_total_too_small_makes_verdict_false(arm):
    arm.pages = [[PBS_OK, usage("cores", "Total Regional vCPUs", 98, 100)]]
    report = azure(arm)
    assert report.verdict is False
    assert report.rows[0].enough and not report.rows[1].enough
    assert "Total Regional vCPUs" in report.advice


def test_family_absent_says_so_and_lists_alternatives(arm):
    arm.pages = [[CORES, NCSV3, NCAST4, NVSV3, DSV3]]
    report = azure(arm)

    assert report.verdict is False
    assert report.details["family_found"] is False
    assert "standardPBSFamily" in report.advice
    assert "not offered" in report.advice
    assert [r.name for r in report.rows] == ["Total Regional vCPUs"]
    alternatives = report.details["alternatives"]
    assert [r.name for r in alternatives] == [
        "Standard NCSv3 Family vCPUs",
        "Standard NCASv3_T4 Family vCPUs",
    ]
    assert [r.free for r in alternatives] == [24, 12]
    assert "Standard NCSv3 Family vCPUs" in report.advice


def test_alternatives_are_capped_at_five(arm):
    gpus = [
        usage(f"standardNC{i}Family", f"Standard NC{i} Family vCPUs", 0, 10 + i) for i in range(8)
    ]
    arm.pages = [[CORES, *gpus]]
    report = azure(arm)
    assert [r.free for r in report.details["alternatives"]] == [17, 16, 15, 14, 13]


# --------------------------------------------------------------------------------------------
# Azure: errors
# --------------------------------------------------------------------------------------------


def test_rejected_token_says_sign_in_again(arm):
    with pytest.raises(QuotaError) as info:
        azure(arm, credential=StaticCredential("stale-token"))
    message = str(info.value)
    assert "InvalidAuthenticationToken" in message
    assert "The access token is invalid." in message
    assert "az login" in message
    assert isinstance(info.value, AccelError)


def test_a_credential_that_returns_a_bare_token_string_is_accepted(arm):
    class BareToken:
        def get_token(self, *scopes: str, **kwargs) -> str:
            return TOKEN

    assert azure(arm, credential=BareToken()).verdict is True
    assert arm.requests[0]["auth"] == f"Bearer {TOKEN}"


def test_forbidden_names_the_subscription_and_the_reader_role(arm):
    arm.forbidden = True
    with pytest.raises(QuotaError) as info:
        azure(arm)
    message = str(info.value)
    assert "AuthorizationFailed" in message
    assert "Microsoft.Compute/locations/usages/read" in message
    assert SUB in message
    assert "Reader" in message


def test_unknown_subscription_names_subscription_and_region(arm):
    other = "99999999-8888-7777-6666-555555555555"
    with pytest.raises(QuotaError) as info:
        azure(arm, subscription_id=other)
    message = str(info.value)
    assert "SubscriptionNotFound" in message
    assert other in message
    assert "eastus" in message
    assert "az account list" in message


def test_unknown_region_names_subscription_and_region(arm):
    with pytest.raises(QuotaError) as info:
        azure(arm, region="atlantis")
    message = str(info.value)
    assert "NoRegisteredProviderFound" in message
    assert "'atlantis'" in message
    assert SUB in message
    assert "list-locations" in message


def test_throttled_once_waits_retry_after_and_succeeds(arm):
    arm.script = [(429, {"Retry-After": "1"}, "TooManyRequests", "Slow down.")]
    events = EventLog()
    started = time.monotonic()
    report = azure(arm, progress=events)

    assert time.monotonic() - started >= 0.9
    assert report.verdict is True
    assert len(arm.requests) == 2
    assert any("throttled" in e.message for e in events)


def test_throttled_twice_tells_how_long_to_wait(arm):
    arm.script = [(429, {"Retry-After": "1"}, "TooManyRequests", "Slow down.")] * 2
    with pytest.raises(QuotaError) as info:
        azure(arm)
    message = str(info.value)
    assert "TooManyRequests" in message
    assert "wait 1 seconds" in message
    assert len(arm.requests) == 2


def test_long_retry_after_is_not_slept_but_reported(arm):
    arm.script = [(429, {"Retry-After": "120"}, "TooManyRequests", "Slow down.")]
    started = time.monotonic()
    with pytest.raises(QuotaError, match="wait 120 seconds"):
        azure(arm)
    assert time.monotonic() - started < 5
    assert len(arm.requests) == 1


def test_cancel_during_a_throttle_wait_ends_it_promptly(arm):
    arm.script = [(429, {"Retry-After": "8"}, "TooManyRequests", "Slow down.")]
    token = CancelToken()
    pressed: list[float] = []

    def press_cancel_soon(event) -> None:
        if event.message.startswith("throttled by Azure, waiting 8 s"):
            timer = threading.Timer(0.3, lambda: (pressed.append(time.monotonic()), token.cancel()))
            timer.start()

    with pytest.raises(CancelledError):
        azure(arm, progress=press_cancel_soon, cancel=token)
    ended = time.monotonic()
    assert pressed, "the wait was never shown"
    assert ended - pressed[0] < 0.25  # not the 8 s Azure asked for
    assert len(arm.requests) == 1


def test_server_error_carries_code_and_message(arm):
    arm.script = [(500, {}, "InternalServerError", "Something broke on our side.")]
    with pytest.raises(QuotaError) as info:
        azure(arm)
    message = str(info.value)
    assert "HTTP 500" in message
    assert "InternalServerError" in message
    assert "Something broke on our side." in message


def test_unreachable_endpoint_says_it_could_not_be_reached():
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(QuotaError) as info:
        check_quota(
            "azure",
            endpoint=f"http://127.0.0.1:{port}",
            subscription_id=SUB,
            credential=StaticCredential(),
            timeout=2,
        )
    assert "could not reach" in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


def test_slow_endpoint_times_out_with_a_clear_error(arm):
    arm.delay = 1.0
    started = time.monotonic()
    with pytest.raises(QuotaError, match="could not reach"):
        azure(arm, timeout=0.2)
    assert time.monotonic() - started < 1.0


def test_plain_http_to_another_host_is_refused_before_signing_in():
    credential = StaticCredential()
    with pytest.raises(QuotaError, match="https"):
        check_quota(
            "azure", endpoint="http://example.invalid", subscription_id=SUB, credential=credential
        )
    assert credential.scopes == []


def test_next_link_to_another_host_is_not_followed(arm):
    arm.pages = [[CORES], [PBS_OK]]
    original = ArmHandler._send

    def send_foreign_next_link(self, status, body, headers=None):
        if "nextLink" in body:
            body["nextLink"] = "http://127.0.0.2:1/elsewhere"
        original(self, status, body, headers)

    ArmHandler._send = send_foreign_next_link
    try:
        with pytest.raises(QuotaError, match="another host"):
            azure(arm)
    finally:
        ArmHandler._send = original
    assert len(arm.requests) == 1


def test_no_credentials_tells_to_run_az_login(monkeypatch):
    from azure.identity import EnvironmentCredential

    for name in (
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_USERNAME",
        "AZURE_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(QuotaError) as info:
        check_quota("azure", subscription_id=SUB, credential=EnvironmentCredential())
    message = str(info.value)
    assert "no Azure sign-in" in message
    assert "az login" in message
    assert "AZURE_CLIENT_SECRET" in message
    assert "local" in message


def test_credential_unavailable_error_is_a_quota_error():
    with pytest.raises(QuotaError, match="az login"):
        check_quota("azure", subscription_id=SUB, credential=NoSignInCredential())


def test_refused_sign_in_says_it_failed():
    from azure.core.exceptions import ClientAuthenticationError

    class ExpiredCredential:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("AADSTS700082: The refresh token has expired.\nmore")

    with pytest.raises(QuotaError) as info:
        check_quota("azure", subscription_id=SUB, credential=ExpiredCredential())
    message = str(info.value)
    assert "sign-in failed" in message
    assert "AADSTS700082: The refresh token has expired." in message
    assert "more" not in message
    assert "az login" in message


def test_missing_subscription_says_how_to_give_it(monkeypatch):
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    credential = StaticCredential()
    with pytest.raises(QuotaError) as info:
        check_quota("azure", credential=credential)
    message = str(info.value)
    assert "AZURE_SUBSCRIPTION_ID" in message
    assert "subscription_id" in message
    assert credential.scopes == []  # failed before signing in


def test_subscription_comes_from_the_environment(arm, monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    report = check_quota("azure", endpoint=arm.url, credential=StaticCredential())
    assert report.details["subscription"] == SUB


def test_malformed_subscription_is_rejected_early():
    with pytest.raises(QuotaError, match="GUID"):
        check_quota("azure", subscription_id="my-sub", credential=StaticCredential())


def test_progress_events_for_azure(arm):
    arm.pages = [[CORES], [PBS_OK]]
    events = EventLog()
    azure(arm, progress=events)
    assert events.steps() == ["quota"]
    messages = [e.message for e in events]
    assert messages[:3] == ["signing in", "reading usages page 1", "reading usages page 2"]
    assert events[-1].fraction == 1.0


def test_cancel_stops_the_check(arm):
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        azure(arm, cancel=token)
    assert arm.requests == []


# --------------------------------------------------------------------------------------------
# Local
# --------------------------------------------------------------------------------------------


def test_local_report_has_cores_memory_disk_and_model_verdicts(tmp_path):
    report = check_quota("local", workspace_dir=tmp_path / "not" / "created" / "yet")

    assert report.target == "local"
    rows = {row.name: row for row in report.rows}
    assert set(rows) == {"cores", "memory", "disk"}
    for row in rows.values():
        assert row.limit > 0
        assert row.free > 0
        assert row.current >= 0
    assert rows["cores"].unit == "cores"
    assert rows["memory"].unit == rows["disk"].unit == "GiB"
    assert report.verdict == all(row.enough for row in report.rows)
    assert report.details["workspace_dir"] == str(tmp_path)
    assert isinstance(report.details["gpu"], bool)
    assert "CPUExecutionProvider" in report.details["providers"]
    assert set(report.details["models"]) == {
        "resnet50",
        "resnet152",
        "densenet121",
        "vgg16",
        "ssd_vgg",
    }
    for verdict in report.details["models"].values():
        assert isinstance(verdict["ok"], bool)
        assert verdict["ok"] == (verdict["reason"] == "")
    assert len(report.to_table()) == 4
    assert report.advice


def test_local_absurd_model_need_is_not_enough_with_a_reason(tmp_path):
    models = {
        "giant": ModelNeeds(convert_gib=10_000, serve_gib=0.1, disk_mib=1),
        "tiny": ModelNeeds(convert_gib=0.001, serve_gib=0.001, disk_mib=0.001),
    }
    report = check_quota("local", workspace_dir=tmp_path, models=models)

    giant = report.details["models"]["giant"]
    assert giant["ok"] is False
    assert giant["convert"] is False
    assert giant["serve"] is True and giant["disk"] is True
    assert "10000 GiB" in giant["reason"]
    assert "memory" in giant["reason"]
    assert report.details["models"]["tiny"]["ok"] is True
    assert "giant" in report.advice


def test_local_cores_row_uses_the_affinity_mask(monkeypatch, tmp_path):
    monkeypatch.setattr(quota.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    report = check_quota("local", workspace_dir=tmp_path)
    cores = report.rows[0]
    assert (cores.name, cores.limit, cores.needed, cores.enough) == ("cores", 1, 2, False)
    assert report.verdict is False
    assert "short of cores" in report.advice


def test_local_gpu_is_read_from_onnxruntime_providers(monkeypatch, tmp_path):
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    report = check_quota("local", workspace_dir=tmp_path)
    assert report.details["gpu"] is True
    assert report.details["gpu_providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]


def test_progress_events_for_local(tmp_path):
    events = EventLog()
    check_quota("local", workspace_dir=tmp_path, progress=events)
    assert events.steps() == ["quota"]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(QuotaError) as info:
        check_quota("aks")
    message = str(info.value)
    assert "'aks'" in message
    assert "local" in message and "azure" in message


# --------------------------------------------------------------------------------------------
# Per deployment target
# --------------------------------------------------------------------------------------------


def test_azureml_target_checks_its_instance_family_with_the_20_percent_reserve(arm):
    """2 x Standard_DS3_v2 = 8 vCPUs, but Azure ML needs 10 free: 9 free is not enough."""
    arm.pages = [[usage("standardDSv2Family", "Standard DSv2 Family vCPUs", 11, 20), CORES]]
    report = check_quota(
        "azureml",
        endpoint=arm.url,
        credential=StaticCredential(),
        subscription_id=SUB,
        settings={"instance_type": "Standard_DS3_v2", "instance_count": 2},
    )
    assert report.target == "azureml"
    family = report.rows[0]
    assert (family.name, family.free, family.needed) == ("Standard DSv2 Family vCPUs", 9, 10)
    assert report.verdict is False
    assert "needs 10 free: Azure ML reserves 20% extra" in report.advice
    one = check_quota(
        "azureml",
        endpoint=arm.url,
        credential=StaticCredential(),
        subscription_id=SUB,
        settings={"instance_type": "Standard_DS3_v2", "instance_count": 1},
    )
    assert one.rows[0].needed == 5 and one.verdict is True


def test_azureml_target_with_an_unknown_instance_type_says_how_to_check(arm):
    with pytest.raises(QuotaError, match="quota family of instance type 'Standard_Z9'"):
        check_quota(
            "azureml",
            endpoint=arm.url,
            credential=StaticCredential(),
            subscription_id=SUB,
            settings={"instance_type": "Standard_Z9"},
        )
    assert arm.requests == []


def test_a_setting_the_target_does_not_take_is_a_quota_error():
    with pytest.raises(QuotaError, match="the local target has no setting replicas"):
        check_quota("local", settings={"replicas": 3})
