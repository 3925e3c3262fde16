"""The ``azure`` capacity check: a region's vCPU quota in an Azure subscription.

The Compute usages of an Azure subscription in one region, read from Azure Resource
Manager's REST API: the vCPU family the deployment needs and the regional vCPU total. The
retired Hardware Accelerated Models service asked users to run ``az vm list-usage`` and
eyeball the "Standard PBS Family vCPUs" line; we read the same data and say what to do next
when the answer is no, because a quota increase can take days. The Azure ML target draws on
it (its instance type's family, with Azure ML's 20% reserve).

Only the standard library talks HTTP here (``urllib``), so the check adds no dependency
beyond ``azure-identity`` for the sign-in, which is imported only when needed.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from accel_widgets.engine.clients.http import NoRedirect, sleep, throttle_wait
from accel_widgets.engine.targets.azure.rest import (
    TokenCredential,
    check_endpoint,
    error_parts,
    first_line,
)
from accel_widgets.engine.targets.azure.rest import said as server_says
from accel_widgets.engine.targets.capacity import (
    STEP,
    CapacityCheck,
    QuotaReport,
    QuotaRow,
    fmt_amount,
    register_capacity_check,
)
from accel_widgets.errors import QuotaError
from accel_widgets.progress import Reporter

API_VERSION = "2025-04-01"
"""The Microsoft.Compute API version whose ``usages`` shape this module reads."""


ARM_SCOPE = "https://management.azure.com/.default"
"""The token scope for Azure Resource Manager."""


_MAX_PAGES = 100  # Azure returns a few pages at most; this only stops a nextLink loop.


_RETRY_AFTER_MAX_S = 10.0  # longer waits are handed back to the user instead of blocking.


_RETRY_AFTER_DEFAULT_S = 5.0  # when a 429 carries no usable Retry-After.


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


_REGION = re.compile(r"^[a-z0-9]+$")


# GPU series are named standard<N?><C|D|V>...Family (NC, ND, NV). A bare "contains NC/ND/NV"
# test would match every family, because "standard" itself contains "nd".
_GPU_FAMILY = re.compile(r"^standard\s*n[cdv]", re.IGNORECASE)


_NO_SIGN_IN_HELP = (
    "run `az login` (Azure CLI), or set AZURE_TENANT_ID, AZURE_CLIENT_ID and "
    "AZURE_CLIENT_SECRET for a service principal, or use the 'local' target, which needs no "
    "Azure account"
)


def _sign_in(credential: TokenCredential | None, report: Reporter) -> str:
    """A bearer token for Azure Resource Manager, or a QuotaError that says how to sign in."""
    report(STEP, None, "signing in")
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
            raise QuotaError(
                "the azure target needs azure-identity: `pip install 'accel-widgets[engine]'` "
                "(or `pip install azure-identity`), or use the 'local' target"
            ) from exc
        credential = DefaultAzureCredential()
    try:
        token = credential.get_token(ARM_SCOPE)
    except unavailable as exc:  # nothing to sign in with at all
        raise QuotaError(
            f"no Azure sign-in was found ({first_line(exc)}); to check Azure quota, "
            f"{_NO_SIGN_IN_HELP}"
        ) from exc
    except failed as exc:  # a sign-in exists but Azure AD refused it (expired, wrong secret)
        raise QuotaError(
            f"Azure sign-in failed ({first_line(exc)}); to check Azure quota, {_NO_SIGN_IN_HELP}"
        ) from exc
    value = getattr(token, "token", token)
    if not isinstance(value, str) or not value:
        raise QuotaError(f"the credential returned no token; {_NO_SIGN_IN_HELP}")
    return value


def _http_error(
    exc: urllib.error.HTTPError, *, subscription: str, region: str, endpoint: str
) -> QuotaError:
    """Turn an ARM error answer into a message that names the problem and the fix."""
    try:
        body = exc.read()
    except OSError:
        body = b""
    code, message = error_parts(body)
    said = server_says(exc.code, code, message)
    if exc.code == 401:
        return QuotaError(
            f"Azure rejected the sign-in token ({said}); sign in again with `az login` (or "
            "renew the service principal secret in AZURE_CLIENT_SECRET) and retry."
        )
    if exc.code == 403:
        return QuotaError(
            f"the signed-in identity may not read Compute usages of subscription "
            f"{subscription} ({said}); ask an owner of that subscription for the Reader role "
            "on it, or sign in with `az login` as a user who has it."
        )
    if exc.code == 404:
        return QuotaError(
            f"Azure found no Compute usages for subscription {subscription} in region "
            f"{region!r} ({said}); the subscription id or the region is wrong: list yours with "
            "`az account list -o table` and the regions with `az account list-locations -o table`."
        )
    if 300 <= exc.code < 400:
        return QuotaError(
            f"{endpoint} answered with a redirect ({said}), which is not followed so that the "
            "sign-in token stays with Azure Resource Manager; check the endpoint."
        )
    if exc.code >= 500:
        return QuotaError(
            f"Azure Resource Manager failed to answer ({said}); this is on Azure's side, try "
            "again in a few minutes."
        )
    return QuotaError(
        f"Azure refused the usages request for subscription {subscription} in region "
        f"{region!r} ({said})."
    )


def _get_page(
    opener: urllib.request.OpenerDirector,
    url: str,
    token: str,
    timeout: float,
    report: Reporter,
    *,
    subscription: str,
    region: str,
    endpoint: str,
) -> dict[str, Any]:
    """GET one page of usages, waiting out one 429 when Azure says how long to wait."""
    request = urllib.request.Request(
        url,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": "accel-widgets-quota",
        },
        method="GET",
    )
    for attempt in (1, 2):
        try:
            with opener.open(request, timeout=timeout) as response:
                body = response.read()
            break
        except urllib.error.HTTPError as exc:
            if exc.code != 429:
                raise _http_error(
                    exc, subscription=subscription, region=region, endpoint=endpoint
                ) from None
            code, message = error_parts(exc.read())
            said = server_says(429, code, message)
            wait, again = throttle_wait(
                exc.headers,
                throttled=attempt,
                max_retries=1,
                default_s=_RETRY_AFTER_DEFAULT_S,
                max_s=_RETRY_AFTER_MAX_S,
            )
            if not again:
                raise QuotaError(
                    f"Azure is throttling requests ({said}); wait {max(1, math.ceil(wait))} "
                    "seconds and try again."
                ) from None
            report(STEP, None, f"throttled by Azure, waiting {wait:.0f} s before one retry")
            sleep(wait, report)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise QuotaError(
                f"could not reach {endpoint} ({reason}); check the network connection and any "
                "proxy settings (HTTPS_PROXY), or use the 'local' target, which needs no network."
            ) from None
    try:
        data = json.loads(body.decode("utf-8"))
    except ValueError as exc:
        raise QuotaError(
            f"{endpoint} answered the usages request with something that is not JSON ({exc})."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("value", []), list):
        raise QuotaError(f"{endpoint} answered the usages request without a 'value' list.")
    return data


def _read_usages(
    *,
    endpoint: str,
    subscription: str,
    region: str,
    token: str,
    timeout: float,
    report: Reporter,
) -> tuple[list[dict[str, Any]], int]:
    """Every usage item of the region, following ``nextLink`` from page to page."""
    base = check_endpoint(endpoint, error=QuotaError, setting="endpoint")
    opener = urllib.request.build_opener(NoRedirect)
    url: str | None = (
        f"{endpoint.rstrip('/')}/subscriptions/{urllib.parse.quote(subscription, safe='')}"
        f"/providers/Microsoft.Compute/locations/{urllib.parse.quote(region, safe='')}"
        f"/usages?api-version={API_VERSION}"
    )
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    pages = 0
    while url:
        if url in seen or pages >= _MAX_PAGES:
            raise QuotaError(f"{endpoint} kept sending more usage pages ({pages} read); giving up.")
        seen.add(url)
        pages += 1
        report(STEP, None, f"reading usages page {pages}")
        data = _get_page(
            opener,
            url,
            token,
            timeout,
            report,
            subscription=subscription,
            region=region,
            endpoint=endpoint,
        )
        items.extend(item for item in data.get("value", []) if isinstance(item, dict))
        url = data.get("nextLink") or None
        if url is not None:
            nxt = urllib.parse.urlsplit(url)
            if (nxt.scheme, nxt.netloc) != (base.scheme, base.netloc):
                raise QuotaError(
                    f"{endpoint} sent a nextLink to another host ({nxt.scheme}://{nxt.netloc}); "
                    "not following it, so that the sign-in token stays with the endpoint."
                )
    return items, pages


def _usage_row(item: Mapping[str, Any], needed: float) -> QuotaRow:
    name = item.get("name") or {}
    label = name.get("localizedValue") or name.get("value") or "?"
    unit = item.get("unit") or "Count"
    return QuotaRow(
        name=str(label),
        current=float(item.get("currentValue") or 0),
        limit=float(item.get("limit") or 0),
        unit="vCPUs" if unit == "Count" else str(unit),
        needed=float(needed),
    )


def _names(item: Mapping[str, Any]) -> tuple[str, str]:
    name = item.get("name") or {}
    return str(name.get("value") or ""), str(name.get("localizedValue") or "")


def _check_azure(
    report: Reporter,
    *,
    region: str,
    family: str,
    needed: int,
    subscription_id: str | None,
    credential: TokenCredential | None,
    endpoint: str,
    timeout: float,
) -> QuotaReport:
    """Read the region's Compute usages and judge the family and the regional total."""
    subscription = (subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID") or "").strip()
    if not subscription:
        raise QuotaError(
            "no Azure subscription was given: pass subscription_id=... (--subscription on the "
            "command line) or set AZURE_SUBSCRIPTION_ID; `az account show --query id -o tsv` "
            "prints the current one."
        )
    if not _GUID.match(subscription):
        raise QuotaError(
            f"subscription id {subscription!r} is not a GUID like "
            "00000000-0000-0000-0000-000000000000; `az account list -o table` lists yours."
        )
    region_key = region.replace(" ", "").lower()
    if not _REGION.match(region_key):
        raise QuotaError(
            f"region {region!r} is not an Azure region name such as 'eastus' or 'westeurope'; "
            "`az account list-locations -o table` lists them."
        )
    if not family.strip():
        raise QuotaError("family is empty; give a vCPU family such as 'standardPBSFamily'.")
    if needed < 0:
        raise QuotaError(f"needed={needed} vCPUs is negative; give 0 or more.")
    check_endpoint(endpoint, error=QuotaError, setting="endpoint")

    token = _sign_in(credential, report)
    items, pages = _read_usages(
        endpoint=endpoint,
        subscription=subscription,
        region=region_key,
        token=token,
        timeout=timeout,
        report=report,
    )

    wanted = family.strip().casefold()
    family_item = next(
        (i for i in items if wanted in {n.casefold() for n in _names(i) if n}),
        None,
    )
    cores_item = next((i for i in items if _names(i)[0].casefold() == "cores"), None)
    family_row = _usage_row(family_item, needed) if family_item is not None else None
    cores_row = _usage_row(cores_item, needed) if cores_item is not None else None
    if cores_row is not None and cores_row.name == "cores":
        cores_row = replace(cores_row, name="Total Regional vCPUs")
    rows = [r for r in (family_row, cores_row) if r is not None]

    own = _names(family_item)[0].casefold() if family_item is not None else None
    alternatives = sorted(
        (
            _usage_row(i, needed)
            for i in items
            if _GPU_FAMILY.match(_names(i)[0]) and _names(i)[0].casefold() != own
        ),
        key=lambda r: r.free,
        reverse=True,
    )
    alternatives = [r for r in alternatives if r.enough][:5]
    alt_text = ", ".join(f"{r.name}: {fmt_amount(r.free)} free" for r in alternatives)
    fallback = (
        f"try a GPU family with {needed} free vCPUs there ({alt_text}) or the 'local' target, "
        "which needs no quota"
        if alternatives
        else "use the 'local' target, which needs no quota"
    )

    verdict = family_row is not None and all(r.enough for r in rows)
    if family_row is None:
        advice = (
            f"The {family} vCPU family is not offered to subscription {subscription} in "
            f"{region_key}; check the family name or another region, or {fallback}."
        )
    elif verdict:
        advice = (
            f"{family_row.name} in {region_key} has {fmt_amount(family_row.free)} free vCPUs "
            f"(a deployment needs {needed}); go ahead and deploy."
        )
    else:
        short = [r for r in rows if not r.enough]
        asks = " and ".join(
            f"{r.name} to at least {fmt_amount(r.current + needed)} (limit {fmt_amount(r.limit)}, "
            f"{fmt_amount(r.free)} free)"
            for r in short
        )
        advice = (
            f"Request a quota increase in {region_key} for {asks} in the Azure portal "
            f"(Subscriptions > Usage + quotas; it can take days). Meanwhile, {fallback}."
        )
    report(STEP, 1.0, "azure check done")
    return QuotaReport(
        target="azure",
        rows=rows,
        verdict=verdict,
        advice=advice,
        details={
            "region": region_key,
            "family": family,
            "family_found": family_row is not None,
            "subscription": subscription,
            "endpoint": endpoint,
            "pages": pages,
            "alternatives": alternatives,
        },
    )


class AzureQuota(CapacityCheck):
    """A region's vCPU family and regional total in an Azure subscription."""

    name = "azure"
    title = "Azure quota"
    options = ("region", "family", "needed", "subscription_id", "credential", "endpoint", "timeout")

    def check(self, report: Reporter, **options: Any) -> QuotaReport:
        return _check_azure(
            report,
            region=options.get("region", "eastus"),
            family=options.get("family", "standardPBSFamily"),
            needed=options.get("needed", 6),
            subscription_id=options.get("subscription_id"),
            credential=options.get("credential"),
            endpoint=options.get("endpoint", "https://management.azure.com"),
            timeout=options.get("timeout", 30.0),
        )


register_capacity_check(AzureQuota())
