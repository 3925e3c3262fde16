"""What every call to Azure Resource Manager shares: tokens only over HTTPS, no redirects,
Azure's error bodies, Retry-After, and waits a Cancel button can end.

Used by the quota check (``engine/targets/azure/quota.py``) and the Azure ML target's ARM
client (``engine/targets/azure/arm.py``), so both treat a token, a 429 and an error body alike;
the REST scoring client (``engine/clients/rest_client.py``) takes the same redirect and loopback
rules for its key.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any, Protocol

from accel_widgets.engine.clients.http import is_loopback
from accel_widgets.errors import AccelError, ServingError

DEFAULT_ARM = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"


class TokenCredential(Protocol):
    """What a caller needs from a credential: azure-identity's ``get_token``."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


def said(status: int, code: str | None, message: str | None) -> str:
    """'HTTP 403 AuthorizationFailed: The client ...' for every message built from an answer."""
    parts = [f"HTTP {status}"] if status else []
    if code:
        parts.append(code)
    text = " ".join(parts)
    if message:
        text = f"{text}: {message}" if text else message
    return text


def check_endpoint(
    endpoint: str, *, error: type[AccelError] = ServingError, setting: str = "arm_endpoint"
) -> urllib.parse.SplitResult:
    """Only HTTPS carries a bearer token, except to this machine (test stand-ins, proxies)."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme == "https" and parts.hostname:
        return parts
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return parts
    raise error(
        f"{setting} {endpoint!r} is not an https:// URL; the sign-in token is only sent over "
        f"HTTPS (plain http is allowed to 127.0.0.1 and localhost). The default is {DEFAULT_ARM}."
    )


def error_parts(body: bytes) -> tuple[str | None, str | None]:
    """The ``error.code`` and ``error.message`` of an Azure error body, when it has them."""
    try:
        data = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None, None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (str(code) if code else None), (str(message) if message else None)


def first_line(exc: BaseException) -> str:
    """azure-identity's messages run to many lines; the first says what happened."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
