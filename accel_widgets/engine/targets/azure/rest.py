"""What every caller of Azure Resource Manager shares, importable without azure-core.

The client itself is ``engine/targets/azure/arm.py`` (azure-core's pipeline, the ``engine``
extra), opened with ``open_arm`` (this package's ``__init__``) when a call needs it; the quota
check and the Azure ML target use what is here at import time: the endpoint rule (a bearer
token only over HTTPS, or plain http to this machine), :class:`ArmError`, Azure's error bodies.
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


class ArmError(ServingError):
    """An ARM answer that is an error: the HTTP status, Azure's error code and message."""

    def __init__(self, status: int, code: str | None, message: str | None, what: str) -> None:
        self.status = status
        self.code = code or ""
        self.message = message or ""
        self.what = what
        super().__init__(f"{what}: {said(status, code, message)}")


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
