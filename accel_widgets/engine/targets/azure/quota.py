"""The ``azure`` capacity check: a region's vCPU quota in an Azure subscription.

The Compute usages of an Azure subscription in one region, read from Azure Resource
Manager's REST API: the vCPU family the deployment needs and the regional vCPU total. The
retired Hardware Accelerated Models service asked users to run ``az vm list-usage`` and
eyeball the "Standard PBS Family vCPUs" line; we read the same data and say what to do next
when the answer is no, because a quota increase can take days. The Azure ML target draws on
it (its instance type's family, with Azure ML's 20% reserve).

The calls go through the Azure client the Azure ML target uses too (``azure/arm.py``:
azure-core's pipeline, token refresh, 429s), opened only when a check runs.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from accel_widgets.engine.targets.azure import open_arm
from accel_widgets.engine.targets.azure.rest import ArmError, TokenCredential, check_endpoint
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


_MAX_PAGES = 100  # Azure returns a few pages at most; this only stops a nextLink loop.


_RETRY_AFTER_MAX_S = 10.0  # longer waits are handed back to the user instead of blocking.


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


_REGION = re.compile(r"^[a-z0-9]+$")


# GPU series are named standard<N?><C|D|V>...Family (NC, ND, NV). A bare "contains NC/ND/NV"
# test would match every family, because "standard" itself contains "nd".
_GPU_FAMILY = re.compile(r"^standard\s*n[cdv]", re.IGNORECASE)


_LOCAL = "use the 'local' target, which needs no Azure account"


def _arm_error(exc: ArmError, *, subscription: str, region: str, endpoint: str) -> QuotaError:
    """Turn an ARM error answer into a message that names the problem and the fix."""
    said = server_says(exc.status, exc.code, exc.message)
    if exc.status == 401:
        return QuotaError(
            f"Azure rejected the sign-in token ({said}); sign in again with `az login` (or "
            "renew the service principal secret in AZURE_CLIENT_SECRET) and retry."
        )
    if exc.status == 403:
        return QuotaError(
            f"the signed-in identity may not read Compute usages of subscription "
            f"{subscription} ({said}); ask an owner of that subscription for the Reader role "
            "on it, or sign in with `az login` as a user who has it."
        )
    if exc.status == 404:
        return QuotaError(
            f"Azure found no Compute usages for subscription {subscription} in region "
            f"{region!r} ({said}); the subscription id or the region is wrong: list yours with "
            "`az account list -o table` and the regions with `az account list-locations -o table`."
        )
    if 300 <= exc.status < 400:
        return QuotaError(
            f"{endpoint} answered with a redirect ({said}), which is not followed so that the "
            "sign-in token stays with Azure Resource Manager; check the endpoint."
        )
    if exc.status >= 500:
        return QuotaError(
            f"Azure Resource Manager failed to answer ({said}); this is on Azure's side, try "
            "again in a few minutes."
        )
    return QuotaError(
        f"Azure refused the usages request for subscription {subscription} in region "
        f"{region!r} ({said})."
    )


def _read_usages(
    arm: Any, *, endpoint: str, subscription: str, region: str, report: Reporter
) -> tuple[list[dict[str, Any]], int]:
    """Every usage item of the region, following ``nextLink`` from page to page."""
    url: str | None = (
        f"/subscriptions/{urllib.parse.quote(subscription, safe='')}"
        f"/providers/Microsoft.Compute/locations/{urllib.parse.quote(region, safe='')}/usages"
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
        try:
            data = arm.call("GET", url, what="reading the Compute usages").body
        except ArmError as exc:
            raise _arm_error(
                exc, subscription=subscription, region=region, endpoint=endpoint
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("value", []), list):
            raise QuotaError(f"{endpoint} answered the usages request without a 'value' list.")
        items.extend(item for item in data.get("value", []) if isinstance(item, dict))
        url = data.get("nextLink") or None
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

    report(STEP, None, "signing in")
    with open_arm(
        endpoint,
        credential,
        API_VERSION,
        report,
        step=STEP,
        error=QuotaError,
        purpose="to check Azure quota",
        fallback=_LOCAL,
        timeout=timeout,
        max_wait_s=_RETRY_AFTER_MAX_S,
        max_throttled=1,
    ) as arm:
        items, pages = _read_usages(
            arm, endpoint=endpoint, subscription=subscription, region=region_key, report=report
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
