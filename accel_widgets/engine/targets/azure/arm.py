"""The one Azure Resource Manager client: the quota check and the Azure ML target both use it.

It is azure-core's pipeline (``azure.core.PipelineClient`` over ``requests``) with these
policies, in order:

* ``RequestIdPolicy``: an ``x-ms-client-request-id`` on every call, the id Azure support asks for.
* ``UserAgentPolicy``: :data:`USER_AGENT` (accel-widgets and azure-core), the same for every caller.
* ``RedirectPolicy(permit_redirects=False)``: a 3xx comes back as an answer (an error), so the
  bearer token never follows a redirect (the ``requests`` transport itself never follows one).
* :class:`_Throttled`, azure-core's ``RetryPolicy`` narrowed to 429: ``Retry-After`` honoured
  (seconds, ``retry-after-ms`` or a date), waits shown as progress and ended by Cancel.
* ``BearerTokenCredentialPolicy``: asks the credential for a token on the first call and again
  whenever the one it holds is within five minutes of expiring, so an operation that outlives
  a token keeps working. It refuses plain http; its ``enforce_https=False`` option is passed
  only for an endpoint on this machine (:func:`~.rest.check_endpoint`).

What stays hand-written, and why:

* :class:`_Throttled` (three overrides): azure-core's ``RetryPolicy`` also retries 408/5xx and
  connection errors and sleeps however long ``Retry-After`` says; the user is better served by
  an error that says what Azure said, and by a wait longer than ``max_wait_s`` handed back as
  "wait N seconds and try again" instead of a frozen progress bar.
* :class:`_Credential`: azure-core needs ``AccessToken(token, expires_on)``; a credential may
  return a bare string (tests, a token from elsewhere).
* :meth:`ArmClient.wait`, the long-running-operation loop: azure-core's algorithms
  (``OperationResourcePolling("azure-asyncoperation")``, ``LocationPolling``,
  ``StatusCheckPolling``) find the status URL and read the status; the loop is ours because
  ``LROBasePolling`` polls once before honouring the first answer's ``Retry-After`` (ARM asks
  clients to wait it), reads ``Retry-After: 0`` as "use the default interval" (10 s here),
  GETs the resource again after every PUT (a request the deploy does not use), and has no
  public hook for progress, the ready-timeout deadline or Cancel (only ``_delay``/``_sleep``).
* The same-host rule for URLs Azure sends (``nextLink``, operation URLs): the token stays with
  the endpoint the user named.

This module needs azure-core (the ``engine`` extra); callers import it through
:func:`accel_widgets.engine.targets.azure.open_arm`, so the package imports without it.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import weakref
from dataclasses import dataclass, field
from typing import Any

import azure.identity
from azure.core import PipelineClient
from azure.core import __version__ as azure_core_version
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    RedirectPolicy,
    RequestIdPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.core.polling.base_polling import (
    BadResponse,
    LocationPolling,
    OperationFailed,
    OperationResourcePolling,
    StatusCheckPolling,
)
from azure.core.rest import HttpRequest, HttpResponse

from accel_widgets import __version__
from accel_widgets.engine.clients.http import sleep
from accel_widgets.engine.targets.azure.rest import (
    ARM_SCOPE,
    ArmError,
    TokenCredential,
    check_endpoint,
    error_parts,
    first_line,
    said,
)
from accel_widgets.errors import AccelError, ServingError
from accel_widgets.progress import Reporter

USER_AGENT = f"accel-widgets/{__version__} azsdk-python-core/{azure_core_version}"
RETRY_AFTER_DEFAULT_S = 5.0  # a 429 without a usable Retry-After
POLL_DEFAULT_S = 10.0  # an operation answer without Retry-After
TERMINAL = ("succeeded", "failed", "canceled", "cancelled")

NO_SIGN_IN_HELP = (
    "run `az login` (Azure CLI), or set AZURE_TENANT_ID, AZURE_CLIENT_ID and "
    "AZURE_CLIENT_SECRET for a service principal"
)


@dataclass
class ArmResponse:
    """One answer: status, lower-cased headers, the JSON body; ``raw`` for the LRO algorithms."""

    status: int
    headers: dict[str, str]
    body: Any = field(default=None)
    raw: HttpResponse | None = field(default=None, repr=False)


class _Throttled(RetryPolicy):
    """azure-core's retry loop for 429 only, waits shown and cancellable, long ones refused."""

    def __init__(self, client: ArmClient) -> None:
        n = client.max_throttled
        super().__init__(retry_total=n, retry_status=n, retry_connect=0, retry_read=0)
        self.client = client

    def wait_for(self, response: PipelineResponse) -> float:
        """The wait a 429 asks for: its Retry-After, else :data:`RETRY_AFTER_DEFAULT_S`."""
        given = self.get_retry_after(response)
        return RETRY_AFTER_DEFAULT_S if given is None else given

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse) -> bool:
        status = response.http_response.status_code
        return status == 429 and self.wait_for(response) <= self.client.max_wait_s

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        if response is None:  # connection errors are not retried (retry_connect=0)
            return
        wait = self.wait_for(response)
        report = self.client.report
        report(self.client.step, None, f"throttled by Azure, waiting {wait:.0f} s")
        sleep(wait, report)


class _Credential:
    """Whatever the credential returns, as the ``AccessToken`` azure-core's policy reads."""

    def __init__(self, credential: TokenCredential, client: ArmClient) -> None:
        self.credential = credential
        self.client = client

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token = self.credential.get_token(*scopes, **kwargs)
        value = getattr(token, "token", token)
        if not isinstance(value, str) or not value:
            raise self.client.error(f"the credential returned no token; {self.client.help}")
        expires = getattr(token, "expires_on", None) or time.time() + 3600
        return AccessToken(value, int(expires))


class ArmClient:
    """JSON calls to one ARM endpoint, in the caller's words.

    ``error`` is the caller's error class (``QuotaError``, ``ServingError``) and ``purpose``
    and ``fallback`` finish its sign-in messages ("to check Azure quota, run `az login` ...,
    or use the 'local' target"); ``step`` names the progress events. A 429 is waited out up
    to ``max_throttled`` times in a row when it asks for at most ``max_wait_s`` seconds.
    """

    def __init__(
        self,
        endpoint: str,
        credential: TokenCredential | None,
        api_version: str,
        report: Reporter,
        *,
        step: str,
        purpose: str,
        error: type[AccelError] = ServingError,
        fallback: str = "",
        timeout: float = 60.0,
        max_wait_s: float = 30.0,
        max_throttled: int = 3,
    ) -> None:
        self.error = error
        self.base = check_endpoint(endpoint, error=error)
        self.endpoint = endpoint.rstrip("/")
        self.api_version = api_version
        self.report = report
        self.step = step
        self.purpose = purpose
        self.fallback = f", or {fallback}" if fallback else ""
        self.help = f"{NO_SIGN_IN_HELP}{self.fallback}"
        self.max_wait_s = max_wait_s
        self.max_throttled = max_throttled
        if credential is None:
            credential = azure.identity.DefaultAzureCredential()
        # The policies see this client through a weak proxy, so that dropping the client
        # (status, logs and delete do not close theirs) closes its connections (finalize).
        me = weakref.proxy(self)
        self._throttled = _Throttled(me)
        self._client = PipelineClient(
            self.endpoint,
            policies=[
                RequestIdPolicy(),
                UserAgentPolicy(base_user_agent=USER_AGENT),
                RedirectPolicy(permit_redirects=False),
                self._throttled,
                BearerTokenCredentialPolicy(_Credential(credential, me), ARM_SCOPE),
            ],
            transport=RequestsTransport(connection_timeout=timeout, read_timeout=timeout),
        )
        # The token policy refuses plain http; this machine (a stand-in, a proxy) may have it.
        self._options = {} if self.base.scheme == "https" else {"enforce_https": False}
        weakref.finalize(self, self._client.close)

    def __enter__(self) -> ArmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        separator = "&" if "?" in path else "?"
        return f"{self.endpoint}{path}{separator}api-version={self.api_version}"

    def _same_host(self, url: str, what: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if (parts.scheme, parts.netloc) != (self.base.scheme, self.base.netloc):
            raise self.error(
                f"{what}: Azure sent a URL on another host ({parts.scheme}://{parts.netloc}); "
                "not following it, so that the sign-in token stays with Azure Resource Manager."
            )

    def call(self, method: str, path: str, body: Any = None, *, what: str) -> ArmResponse:
        """One call (429s waited out): the answer, or :class:`ArmError` for 3xx/4xx/5xx."""
        self.report.check()
        url = self.url(path)
        self._same_host(url, what)
        request = HttpRequest(method, url, json=body, headers={"Accept": "application/json"})
        try:
            response = self._client.send_request(request, **self._options)
        except azure.identity.CredentialUnavailableError as exc:  # nothing to sign in with
            raise self.error(
                f"no Azure sign-in was found ({first_line(exc)}); {self.purpose}, {self.help}"
            ) from exc
        except ClientAuthenticationError as exc:  # a sign-in Azure AD refused (expired, wrong)
            raise self.error(
                f"Azure sign-in failed ({first_line(exc)}); {self.purpose}, {self.help}"
            ) from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise self.error(
                f"{what}: could not reach {self.endpoint} ({first_line(exc)}); check the network "
                f"connection and any proxy settings (HTTPS_PROXY){self.fallback}."
            ) from None
        raw = response.content or b""
        status = response.status_code
        if status == 429:  # waited out max_throttled times, or asked for too long a wait
            wait = self._throttled.wait_for(PipelineResponse(request, response, None))
            raise self.error(
                f"{what}: Azure is throttling requests ({said(429, *error_parts(raw))}); "
                f"wait {max(1, math.ceil(wait))} seconds and try again."
            )
        if status >= 300:
            raise ArmError(status, *error_parts(raw), what)
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw.decode("utf-8"))
            except ValueError:
                raise self.error(
                    f"{what}: {self.endpoint} answered with something that is not JSON."
                ) from None
        headers = {k.lower(): v for k, v in response.headers.items()}
        return ArmResponse(status, headers, parsed, response)

    def wait(
        self,
        response: ArmResponse,
        *,
        what: str,
        deadline: float,
        fraction: tuple[float, float] = (0.0, 1.0),
    ) -> ArmResponse:
        """Follow a long-running operation to its end; ArmError when it failed.

        Progress messages say what is being waited for, the status Azure reports and the
        seconds so far; ``fraction`` is the span of the progress bar this wait may fill.
        """
        started = time.monotonic()
        answer = PipelineResponse(None, response.raw, None)
        algorithm = next(
            a
            for a in (
                OperationResourcePolling("azure-asyncoperation"),
                LocationPolling(),
                StatusCheckPolling(),
            )
            if a.can_poll(answer)
        )
        try:
            status = algorithm.set_initial_status(answer)
        except OperationFailed:
            return response
        low, high = fraction
        polls = 0
        while status.lower() not in TERMINAL:
            given = self._throttled.get_retry_after(answer)
            wait = POLL_DEFAULT_S if given is None else given
            if time.monotonic() + wait > deadline:
                raise self.error(
                    f"{what} did not finish within the ready timeout "
                    f"({time.monotonic() - started:.0f} s so far); Azure keeps working on it: "
                    "look at the endpoint in Azure ML studio, or deploy again with a longer "
                    "--ready-timeout."
                )
            sleep(wait, self.report)
            response = self.call("GET", algorithm.get_polling_url(), what=what)
            answer = PipelineResponse(None, response.raw, None)
            try:
                status = algorithm.get_status(answer)
            except BadResponse as exc:
                raise self.error(
                    f"{what}: Azure's operation status is unreadable ({exc})."
                ) from None
            polls += 1
            # The bar creeps towards ``high`` but never reaches it before the end.
            share = low + (high - low) * (1 - 0.8**polls)
            elapsed = time.monotonic() - started
            self.report(self.step, share, f"{what}: {status} ({elapsed:.0f} s)")
        if status.lower() != "succeeded":
            error = (response.body or {}).get("error") or {}
            raise ArmError(
                0,
                error.get("code") or status,
                error.get("message") or f"the operation ended {status}",
                what,
            )
        return response
