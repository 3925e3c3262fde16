"""A small Azure Resource Manager REST client: sign-in, JSON calls, 429s, long-running operations.

The same approach as the quota check (``engine/targets/azure/quota.py``): the standard
library's ``urllib`` speaks HTTP, ``azure-identity`` (imported only when a call needs it)
gives the token, and the bearer token is only sent over HTTPS, or plain http to this machine
(a test stand-in or a local proxy). Redirects are refused, so the token never follows one to
another host.

What ARM documents and this client does:

* Every call carries ``?api-version=``; error bodies are ``{"error": {"code", "message"}}``.
* **429** carries ``Retry-After`` (seconds): waited out (at most :data:`RETRY_AFTER_MAX_S`
  each time, :data:`MAX_THROTTLED` times in a row), then reported with how long to wait.
* **Long-running operations**: a PUT answers 200/201 and a DELETE or POST 202, with an
  ``Azure-AsyncOperation`` header (poll it until its ``status`` is ``Succeeded``, ``Failed``
  or ``Canceled``) or a ``Location`` header (poll it until it stops answering 202). Each poll
  honours the ``Retry-After`` of the previous answer, reports progress, and checks the
  Cancel button.
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from accel_widgets.engine.clients.http import NoRedirect, retry_after, sleep, throttle_wait
from accel_widgets.engine.targets.azure.rest import (
    ARM_SCOPE,
    TokenCredential,
    check_endpoint,
    error_parts,
    first_line,
    said,
)
from accel_widgets.errors import ServingError
from accel_widgets.progress import Reporter

RETRY_AFTER_MAX_S = 30.0  # a longer wait is handed back to the user instead of blocking
RETRY_AFTER_DEFAULT_S = 5.0  # a 429 without a usable Retry-After
POLL_DEFAULT_S = 10.0  # an LRO answer without Retry-After
MAX_THROTTLED = 3
TERMINAL = ("succeeded", "failed", "canceled", "cancelled")

NO_SIGN_IN_HELP = (
    "run `az login` (Azure CLI), or set AZURE_TENANT_ID, AZURE_CLIENT_ID and "
    "AZURE_CLIENT_SECRET for a service principal"
)


class ArmError(ServingError):
    """An ARM answer that is an error: the HTTP status, Azure's error code and message."""

    def __init__(self, status: int, code: str | None, message: str | None, what: str) -> None:
        self.status = status
        self.code = code or ""
        self.message = message or ""
        self.what = what
        super().__init__(f"{what}: {said(status, code, message)}")


def sign_in(credential: TokenCredential | None, purpose: str) -> str:
    """A bearer token for ARM, or a ServingError that says how to sign in."""
    try:
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import CredentialUnavailableError

        unavailable: tuple[type[BaseException], ...] = (CredentialUnavailableError,)
        failed: tuple[type[BaseException], ...] = (ClientAuthenticationError,)
    except ImportError:
        unavailable = failed = ()
    if credential is None:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise ServingError(
                f"{purpose} needs azure-identity: `pip install 'accel-widgets[engine]'` "
                "(or `pip install azure-identity`)"
            ) from exc
        credential = DefaultAzureCredential()
    try:
        token = credential.get_token(ARM_SCOPE)
    except unavailable as exc:
        raise ServingError(
            f"no Azure sign-in was found ({first_line(exc)}); for {purpose}, {NO_SIGN_IN_HELP}"
        ) from exc
    except failed as exc:
        raise ServingError(
            f"Azure sign-in failed ({first_line(exc)}); for {purpose}, {NO_SIGN_IN_HELP}"
        ) from exc
    value = getattr(token, "token", token)
    if not isinstance(value, str) or not value:
        raise ServingError(f"the credential returned no token; {NO_SIGN_IN_HELP}")
    return value


@dataclass
class ArmResponse:
    status: int
    headers: dict[str, str]
    body: Any = field(default=None)


class ArmClient:
    """JSON calls to one ARM endpoint with one token; ``step`` names the progress events."""

    def __init__(
        self,
        endpoint: str,
        token: str,
        api_version: str,
        report: Reporter,
        *,
        step: str = "deploy",
        timeout: float = 60.0,
    ) -> None:
        self.base = check_endpoint(endpoint)
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.api_version = api_version
        self.report = report
        self.step = step
        self.timeout = timeout
        self.opener = urllib.request.build_opener(NoRedirect)

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        separator = "&" if "?" in path else "?"
        return f"{self.endpoint}{path}{separator}api-version={self.api_version}"

    def _same_host(self, url: str, what: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if (parts.scheme, parts.netloc) != (self.base.scheme, self.base.netloc):
            raise ServingError(
                f"{what}: Azure sent a URL on another host ({parts.scheme}://{parts.netloc}); "
                "not following it, so that the sign-in token stays with Azure Resource Manager."
            )

    def call(self, method: str, path: str, body: Any = None, *, what: str) -> ArmResponse:
        """One call (429s waited out): the answer, or :class:`ArmError` for 4xx/5xx."""
        url = self.url(path)
        self._same_host(url, what)
        data = None if body is None else json.dumps(body).encode()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            "User-Agent": "accel-widgets-azureml",
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        throttled = 0
        while True:
            self.report.check()
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with self.opener.open(request, timeout=self.timeout) as response:
                    raw = response.read()
                    status = response.status
                    answer_headers = dict(response.headers.items())
                break
            except urllib.error.HTTPError as exc:
                try:
                    raw = exc.read()
                except OSError:
                    raw = b""
                code, message = error_parts(raw)
                if exc.code != 429:
                    raise ArmError(exc.code, code, message, what) from None
                throttled += 1
                wait, again = throttle_wait(
                    exc.headers,
                    throttled=throttled,
                    max_retries=MAX_THROTTLED,
                    default_s=RETRY_AFTER_DEFAULT_S,
                    max_s=RETRY_AFTER_MAX_S,
                )
                if not again:
                    raise ServingError(
                        f"{what}: Azure is throttling requests ({said(429, code, message)}); "
                        f"wait {max(1, math.ceil(wait))} seconds and try again."
                    ) from None
                self.report(self.step, None, f"throttled by Azure, waiting {wait:.0f} s")
                sleep(wait, self.report)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise ServingError(
                    f"{what}: could not reach {self.endpoint} ({reason}); check the network "
                    "connection and any proxy settings (HTTPS_PROXY)."
                ) from None
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw.decode("utf-8"))
            except ValueError:
                raise ServingError(
                    f"{what}: {self.endpoint} answered with something that is not JSON."
                ) from None
        return ArmResponse(status, {k.lower(): v for k, v in answer_headers.items()}, parsed)

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
        async_url = response.headers.get("azure-asyncoperation")
        location = response.headers.get("location")
        if not async_url and not (location and response.status == 202):
            return response
        delay = retry_after(response.headers)
        low, high = fraction
        polls = 0
        while True:
            wait = POLL_DEFAULT_S if delay is None else delay
            if time.monotonic() + wait > deadline:
                raise ServingError(
                    f"{what} did not finish within the ready timeout "
                    f"({time.monotonic() - started:.0f} s so far); Azure keeps working on it: "
                    "look at the endpoint in Azure ML studio, or deploy again with a longer "
                    "--ready-timeout."
                )
            sleep(wait, self.report)
            polls += 1
            elapsed = time.monotonic() - started
            # The bar creeps towards ``high`` but never reaches it before the end.
            share = low + (high - low) * (1 - 0.8**polls)
            if async_url:
                answer = self.call("GET", async_url, what=what)
                status = str((answer.body or {}).get("status", "")).strip()
                self.report(self.step, share, f"{what}: {status or 'waiting'} ({elapsed:.0f} s)")
                if status.lower() in TERMINAL:
                    if status.lower() != "succeeded":
                        error = (answer.body or {}).get("error") or {}
                        raise ArmError(
                            0,
                            error.get("code") or status,
                            error.get("message") or f"the operation ended {status}",
                            what,
                        )
                    return answer
            else:
                answer = self.call("GET", location, what=what)
                self.report(self.step, share, f"{what}: waiting ({elapsed:.0f} s)")
                if answer.status != 202:
                    return answer
            delay = retry_after(answer.headers)
