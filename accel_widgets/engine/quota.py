"""Capacity check: "do I have what a deployment needs?" before any time is spent on it.

Two targets share one report shape (:class:`QuotaReport`), so the quota widget and the
``accel-widgets quota`` command show the same table whichever target the user picks:

``local``
    This machine: usable CPU cores, available memory, free disk under the workspace and
    whether ONNX Runtime can use a GPU, plus a per-model verdict ("can I convert and serve
    VGG-16 here?"). It needs no account, so a workshop room on laptops can always use it.
``azure``
    The Compute usages of an Azure subscription in one region, read from Azure Resource
    Manager's REST API: the vCPU family the deployment needs and the regional vCPU total.
    The retired Hardware Accelerated Models service asked users to run ``az vm list-usage``
    and eyeball the "Standard PBS Family vCPUs" line; we read the same data and say what to
    do next when the answer is no, because a quota increase can take days.

Only the standard library talks HTTP here (``urllib``), so the check adds no dependency
beyond ``azure-identity`` for the sign-in, which is imported only when needed.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from accel_widgets.engine.azure_rest import (
    NoRedirect,
    TokenCredential,
    check_endpoint,
    error_parts,
    first_line,
    retry_after,
    sleep,
)
from accel_widgets.engine.azure_rest import said as server_says
from accel_widgets.errors import QuotaError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

__all__ = [
    "API_VERSION",
    "DEFAULT_MODEL_NEEDS",
    "LOCAL_NEEDS",
    "TARGETS",
    "ModelNeeds",
    "QuotaReport",
    "QuotaRow",
    "TokenCredential",
    "check_quota",
    "quota_targets",
]

TARGETS: tuple[str, ...] = ("local", "azure")
"""The two capacity checks; ``check_quota`` also takes any deployment target's name and runs
the check that target declares (``Target.capacity``: ``container`` checks this machine)."""


def quota_targets() -> tuple[str, ...]:
    """What the quota step offers: every deployment target, then Azure's regional quota."""
    from accel_widgets.engine.targets import target_names

    return tuple(dict.fromkeys((*target_names(), *TARGETS)))


API_VERSION = "2025-04-01"
"""The Microsoft.Compute API version whose ``usages`` shape this module reads."""

ARM_SCOPE = "https://management.azure.com/.default"
"""The token scope for Azure Resource Manager."""

_GIB = 1024**3
_STEP = "quota"
_MAX_PAGES = 100  # Azure returns a few pages at most; this only stops a nextLink loop.
_RETRY_AFTER_MAX_S = 10.0  # longer waits are handed back to the user instead of blocking.
_RETRY_AFTER_DEFAULT_S = 5.0  # when a 429 carries no usable Retry-After.
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
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


# --------------------------------------------------------------------------------------------
# Report shape
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaRow:
    """One line of the capacity table a widget or the command line shows.

    Every resource is expressed as "used of limit", so one table and one ``enough`` rule serve
    Azure vCPU quotas and this machine's memory alike.

    Parameters
    ----------
    name : str
        What is counted, as the user knows it: ``"Standard PBS Family vCPUs"``, ``"memory"``.
    current : float
        How much is in use now.
    limit : float
        How much there is in all (the quota, the installed memory, the disk size).
    unit : str
        ``"vCPUs"``, ``"GiB"``, ``"cores"``...
    needed : float
        What a deployment needs to be free.
    """

    name: str
    current: float
    limit: float
    unit: str
    needed: float

    @property
    def free(self) -> float:
        """What is left for a new deployment (``limit - current``)."""
        return self.limit - self.current

    @property
    def enough(self) -> bool:
        """Whether what is left covers what a deployment needs."""
        return self.free >= self.needed


@dataclass(frozen=True)
class QuotaReport:
    """The answer to "can I deploy?", with the numbers behind it and what to do next.

    Parameters
    ----------
    target : str
        ``"local"`` or ``"azure"``.
    rows : list of QuotaRow
        The capacity table.
    verdict : bool
        True when every row has enough (for Azure: and the family was found).
    advice : str
        One or two sentences on what to do next, so a "no" is never a dead end.
    details : dict
        Extras for the widget: for ``local`` the ONNX Runtime providers, ``gpu`` and the
        per-model verdicts under ``"models"``; for ``azure`` the region, family, subscription
        and the GPU-family ``"alternatives"`` (a list of :class:`QuotaRow`).
    """

    target: str
    rows: list[QuotaRow]
    verdict: bool
    advice: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_table(self) -> list[list[str]]:
        """Header plus one list of strings per row, ready for a terminal table or a widget.

        Returns
        -------
        list of list of str
            ``[["resource", "used", "limit", "free", "needed", "unit", "enough"], ...]``.
        """
        table = [["resource", "used", "limit", "free", "needed", "unit", "enough"]]
        for row in self.rows:
            table.append(
                [
                    row.name,
                    _fmt(row.current),
                    _fmt(row.limit),
                    _fmt(row.free),
                    _fmt(row.needed),
                    row.unit,
                    "yes" if row.enough else "no",
                ]
            )
        return table


def _fmt(value: float) -> str:
    """Whole numbers without decimals (vCPU counts), others with one (GiB)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.1f}"


# --------------------------------------------------------------------------------------------
# Local target
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelNeeds:
    """What one model needs on this machine, so the check can say "VGG-16 will not fit here".

    Parameters
    ----------
    convert_gib : float
        Peak memory while building and converting to ONNX (TensorFlow plus tf2onnx), GiB.
    serve_gib : float
        Resident memory of the serving process with the model loaded, GiB.
    disk_mib : float
        Disk for the saved model, the ONNX file(s) and the image build context, MiB.
    """

    convert_gib: float
    serve_gib: float
    disk_mib: float


def catalog_needs() -> Mapping[str, ModelNeeds]:
    """What each catalog model needs, from the catalog's measured figures.

    Disk: the SavedModel, the Keras network kept for the converter, and the fp32 and INT8
    ONNX files.
    """
    from accel_widgets.engine.catalog import list_specs

    return MappingProxyType(
        {
            spec.name: ModelNeeds(
                convert_gib=spec.convert_gib,
                serve_gib=spec.serve_gib,
                disk_mib=3 * spec.fp32_mb + spec.int8_mb,
            )
            for spec in list_specs(include_quantized=False)
        }
    )


SERVE_BASE_MB = 130.0
"""Resident memory of a serving process before its model: Python, gRPC, numpy and one
runtime (ONNX Runtime alone measured 116-128 MB with the 2.4 MB sample loaded)."""

SERVE_MB_PER_MODEL_MB = 4.5
"""Resident memory per MB of ONNX file once loaded and run (weights, the runtime's packed
copies, arena). Fitted to the light services measured after 50 requests on an AMD EPYC
(docs/MEASUREMENTS.md, "Light services and idle stop"): the 2.4 MB sample 124-149 MB
(estimate 141), ResNet-50 INT8 26 MB 166-244 MB (estimate 247); ResNet-50 fp32 102 MB held 580
MB with both runtimes loaded (estimate 589), so for large files the estimate leans high."""


def serve_estimate_mb(file_bytes: int) -> float:
    """Memory a local service of an ONNX file of ``file_bytes`` will hold once it has
    served, MB: what the capacity check sets against what is left beside the others."""
    return SERVE_BASE_MB + SERVE_MB_PER_MODEL_MB * file_bytes / 2**20


DEFAULT_MODEL_NEEDS: Mapping[str, ModelNeeds] = catalog_needs()
"""The catalog models' needs, used when ``check_quota`` is given no ``models``."""

LOCAL_NEEDS: Mapping[str, float] = MappingProxyType({"cores": 2, "memory_gib": 1, "disk_gib": 1})
"""What the local rows need free: enough to serve one small model next to a notebook."""


def _usable_cores() -> int:
    """Cores this process may run on: the affinity mask in containers and under taskset."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _existing_parent(path: Path) -> Path:
    """The nearest folder that exists, so a workspace not created yet still gets a disk check."""
    path = path.expanduser().absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or os.sep)


def _onnx_providers() -> list[str]:
    """ONNX Runtime's execution providers, or none if it cannot be imported here."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def _model_verdict(needs: ModelNeeds, mem_free_gib: float, disk_free_gib: float) -> dict:
    """Whether one model fits in the free memory and disk, and why not when it does not."""
    convert_ok = mem_free_gib >= needs.convert_gib
    serve_ok = mem_free_gib >= needs.serve_gib
    disk_ok = disk_free_gib * 1024 >= needs.disk_mib
    reasons = []
    if not convert_ok:
        reasons.append(
            f"converting needs {_fmt(needs.convert_gib)} GiB of memory, "
            f"{mem_free_gib:.1f} GiB is available"
        )
    if not serve_ok:
        reasons.append(
            f"serving needs {_fmt(needs.serve_gib)} GiB of memory, "
            f"{mem_free_gib:.1f} GiB is available"
        )
    if not disk_ok:
        reasons.append(
            f"its files need {_fmt(needs.disk_mib)} MiB of disk, "
            f"{disk_free_gib * 1024:.0f} MiB is free"
        )
    return {
        "ok": convert_ok and serve_ok and disk_ok,
        "convert": convert_ok,
        "serve": serve_ok,
        "disk": disk_ok,
        "reason": "; ".join(reasons),
    }


def _named_needs(
    model: Any, workspace: Any, workspace_dir: str | os.PathLike[str] | None
) -> tuple[str, ModelNeeds]:
    """What serving the one model a deployment names needs: from the file deploy would
    serve (a workspace model's recommended INT8, else fp32), or for a catalog name not
    converted yet, from the catalog's fp32 file size and conversion figures."""
    from accel_widgets.engine import catalog
    from accel_widgets.engine.workspace import ArtifactRecord, Workspace
    from accel_widgets.errors import AccelError, CatalogError

    if isinstance(model, ArtifactRecord):
        artifact = model
    else:
        name, artifact, problem = str(model), None, ""
        try:
            where = workspace if workspace is not None else workspace_dir
            book = where if isinstance(where, Workspace) else Workspace(where)
            if book.find_model(name) is not None:
                artifact = book.get_artifact(name)
        except AccelError as exc:  # not converted yet, an unreadable workspace: the catalog
            problem = f" ({exc})"
        if artifact is None:
            try:
                spec = catalog.get_spec(name)
            except CatalogError:
                raise QuotaError(
                    f"cannot estimate what model {name!r} needs: it is not a converted model "
                    f"in the workspace{problem} nor a catalog model; convert it first, or "
                    "check without naming a model"
                ) from None
            serve_mb = max(spec.serve_gib * 1024, serve_estimate_mb(spec.fp32_mb * 2**20))
            needs = ModelNeeds(
                convert_gib=spec.convert_gib,
                serve_gib=serve_mb / 1024,
                disk_mib=3 * spec.fp32_mb + spec.int8_mb,
            )
            return f"{spec.name} (not converted yet)", needs
    size = artifact.size_bytes or (artifact.file.stat().st_size if artifact.file.exists() else 0)
    label = f"{artifact.model_name}:{artifact.model_version} ({artifact.precision})"
    # Converted already: nothing left to convert, and its files are on disk.
    return label, ModelNeeds(convert_gib=0.0, serve_gib=serve_estimate_mb(size) / 1024, disk_mib=0)


def _others(workspace: Any, workspace_dir: str | os.PathLike[str] | None) -> list[Any]:
    """The accel-widgets services already running on this machine that this user can see
    and that are not the checked workspace's own (all of them when no workspace is named):
    what this deployment will have to live beside."""
    from accel_widgets.engine.targets.room import room_services
    from accel_widgets.engine.workspace import Workspace

    mine: set[str] = set()
    if isinstance(workspace, Workspace):
        mine = {str(workspace.root.resolve()), workspace.ident}
    elif workspace is not None or workspace_dir is not None:
        mine = {
            str(Path(workspace if workspace is not None else workspace_dir).expanduser().resolve())
        }
    return [s for s in room_services() if s.workspace not in mine]


def _megabytes(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def others_sentence(others: list[Any], *, named: bool) -> str:
    """``3 other services use 1.1 GB (cats in ~/ws-bob, ...)``; empty when there are none."""
    if not others:
        return ""
    home = str(Path.home())
    shown = []
    for service in others[:4]:
        where = service.workspace
        if service.target == "container":
            where = f"container {service.address}"
        elif where.startswith(home):
            where = "~" + where[len(home) :]
        shown.append(f"{service.name} in {where}")
    if len(others) > 4:
        shown.append(f"{len(others) - 4} more")
    total = sum(service.rss_mb for service in others)
    many = len(others) != 1
    what = "other service" if named else "accel-widgets service"
    return (
        f"{len(others)} {what}{'s' if many else ''} on this machine "
        f"use{'' if many else 's'} {_megabytes(total)} ({', '.join(shown)})"
    )


def _check_local(
    report: Reporter,
    workspace_dir: str | os.PathLike[str] | None,
    models: Mapping[str, ModelNeeds] | None,
    *,
    model: Any = None,
    workspace: Any = None,
) -> QuotaReport:
    """Measure this machine and judge every model (or the one named) against what is free
    right now, beside the accel-widgets services already running here."""
    import psutil

    report(_STEP, 0.0, "counting CPU cores")
    cores = _usable_cores()

    report(_STEP, 0.25, "reading memory")
    memory = psutil.virtual_memory()
    mem_total = memory.total / _GIB
    mem_free = memory.available / _GIB

    report(_STEP, 0.5, "reading free disk")
    folder = _existing_parent(Path(workspace_dir) if workspace_dir is not None else Path.home())
    disk = shutil.disk_usage(folder)
    disk_total = disk.total / _GIB
    disk_free = disk.free / _GIB

    report(_STEP, 0.75, "asking ONNX Runtime for execution providers")
    providers = _onnx_providers()
    gpu_providers = [p for p in providers if p in _GPU_PROVIDERS]

    rows = [
        QuotaRow("cores", 0.0, float(cores), "cores", float(LOCAL_NEEDS["cores"])),
        # used = total - available, so that ``free`` is what the OS says is available.
        QuotaRow(
            "memory", mem_total - mem_free, mem_total, "GiB", float(LOCAL_NEEDS["memory_gib"])
        ),
        QuotaRow("disk", disk_total - disk_free, disk_total, "GiB", LOCAL_NEEDS["disk_gib"]),
    ]
    report(_STEP, 0.85, "looking for other accel-widgets services on this machine")
    others = _others(workspace, workspace_dir)
    named = model is not None and model != ""
    others_text = others_sentence(others, named=named or workspace is not None)
    if named:
        needs = dict([_named_needs(model, workspace, workspace_dir)])
    else:
        needs = dict(DEFAULT_MODEL_NEEDS if models is None else models)
    verdicts = {name: _model_verdict(n, mem_free, disk_free) for name, n in needs.items()}
    for name, judged in verdicts.items():
        judged["serve_mb"] = round(needs[name].serve_gib * 1024)
        if not judged["serve"] and others_text:
            judged["reason"] += f"; {others_text}"
    verdict = all(row.enough for row in rows) and (
        not named or all(v["ok"] for v in verdicts.values())
    )

    short = [row for row in rows if not row.enough]
    misfits = [name for name, v in verdicts.items() if not v["ok"]]
    device = (
        f"ONNX Runtime will use the GPU ({', '.join(gpu_providers)})"
        if gpu_providers
        else "no GPU provider was found, so models run on the CPU"
    )
    if short:
        lacking = ", ".join(
            f"{r.name} ({_fmt(r.free)} of {_fmt(r.needed)} {r.unit})" for r in short
        )
        advice = (
            f"This machine is short of {lacking}: close other programs or free disk space, "
            "or use the 'azure' target."
        )
    elif misfits:
        fits = [name for name in verdicts if name not in misfits]
        can = f"can deploy {', '.join(fits)} but not" if fits else "cannot deploy"
        advice = (
            f"This machine {can} {', '.join(misfits)} (see the per-model reasons): free memory "
            f"or disk, pick a smaller model, or use the 'azure' target. "
            f"{device[0].upper()}{device[1:]}."
        )
    elif named:
        (label,) = verdicts
        advice = (
            f"This machine has room for {label} (about {_megabytes(verdicts[label]['serve_mb'])} "
            f"to serve); {device}."
        )
    else:
        advice = f"This machine has room for every listed model; {device}."
    if others_text:
        stop = (
            " Stopping the idle ones frees their memory (accel-widgets room --stop-idle SECONDS)."
            if misfits or short
            else ""
        )
        advice += f" {others_text[0].upper()}{others_text[1:]}.{stop}"

    report(_STEP, 1.0, "local check done")
    return QuotaReport(
        target="local",
        rows=rows,
        verdict=verdict,
        advice=advice,
        details={
            "providers": providers,
            "gpu": bool(gpu_providers),
            "gpu_providers": gpu_providers,
            "cores": cores,
            "memory_available_gib": mem_free,
            "memory_total_gib": mem_total,
            "disk_free_gib": disk_free,
            "workspace_dir": str(folder),
            "models": verdicts,
            "others": [service.to_dict() for service in others],
            "others_mb": round(sum(service.rss_mb for service in others), 1),
        },
    )


# --------------------------------------------------------------------------------------------
# Azure target
# --------------------------------------------------------------------------------------------


def _sign_in(credential: TokenCredential | None, report: Reporter) -> str:
    """A bearer token for Azure Resource Manager, or a QuotaError that says how to sign in."""
    report(_STEP, None, "signing in")
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
            given = retry_after(exc.headers)
            wait = _RETRY_AFTER_DEFAULT_S if given is None else given
            if attempt == 2 or wait > _RETRY_AFTER_MAX_S:
                raise QuotaError(
                    f"Azure is throttling requests ({said}); wait {max(1, math.ceil(wait))} "
                    "seconds and try again."
                ) from None
            report(_STEP, None, f"throttled by Azure, waiting {wait:.0f} s before one retry")
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
        report(_STEP, None, f"reading usages page {pages}")
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
    alt_text = ", ".join(f"{r.name}: {_fmt(r.free)} free" for r in alternatives)
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
            f"{family_row.name} in {region_key} has {_fmt(family_row.free)} free vCPUs "
            f"(a deployment needs {needed}); go ahead and deploy."
        )
    else:
        short = [r for r in rows if not r.enough]
        asks = " and ".join(
            f"{r.name} to at least {_fmt(r.current + needed)} (limit {_fmt(r.limit)}, "
            f"{_fmt(r.free)} free)"
            for r in short
        )
        advice = (
            f"Request a quota increase in {region_key} for {asks} in the Azure portal "
            f"(Subscriptions > Usage + quotas; it can take days). Meanwhile, {fallback}."
        )
    report(_STEP, 1.0, "azure check done")
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


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def check_quota(
    target: str = "local",
    *,
    region: str = "eastus",
    family: str = "standardPBSFamily",
    needed: int = 6,
    subscription_id: str | None = None,
    credential: TokenCredential | None = None,
    endpoint: str = "https://management.azure.com",
    workspace_dir: str | os.PathLike[str] | None = None,
    models: Mapping[str, ModelNeeds] | None = None,
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
    timeout: float = 30.0,
    settings: Mapping[str, Any] | None = None,
    model: Any = None,
    workspace: Any = None,
) -> QuotaReport:
    """Check the capacity a deployment needs on a target, before any time is spent on it.

    Parameters
    ----------
    target : {"local", "azure"}
        Where the model would be deployed.
    region : str
        Azure region (``"eastus"``; ``"East US"`` is accepted too). Azure only.
    family : str
        vCPU family to check, matched case-insensitively against the usage's ``name.value``
        or its display name. The retired FPGA service used ``standardPBSFamily``. Azure only.
    needed : int
        vCPUs a deployment needs free in the family and in the regional total. Azure only.
    subscription_id : str, optional
        Azure subscription; defaults to the ``AZURE_SUBSCRIPTION_ID`` environment variable.
    credential : TokenCredential, optional
        Anything with azure-identity's ``get_token``; defaults to ``DefaultAzureCredential``
        (Azure CLI login, environment variables, managed identity...).
    endpoint : str
        Azure Resource Manager; other clouds (or a test stand-in on 127.0.0.1) go here.
    workspace_dir : path, optional
        Where models will be written; its disk (or its nearest existing parent's) is checked.
        Defaults to the home folder. Local only.
    models : mapping of str to ModelNeeds, optional
        Models to judge one by one; defaults to :data:`DEFAULT_MODEL_NEEDS`. Local only.
    progress, cancel
        The kit's progress protocol: events are ``("quota", fraction or None, message)``.
    timeout : float
        Seconds to wait for each HTTP answer. Azure only.
    settings : mapping, optional
        The deployment target's settings (``replicas``, ``instance_type``...), for targets
        that check what a deployment with them needs (``Target.check_capacity``).
    model, workspace : optional
        The model a deployment would serve (a workspace model or catalog name) and the
        workspace it is in (a ``Workspace`` or its folder; default: ``workspace_dir``), passed
        to the target's ``check_capacity``: a cluster target sizes its pods from the model.

    Returns
    -------
    QuotaReport
        The table, the verdict and the advice on what to do next.

    Raises
    ------
    QuotaError
        The target is unknown or the capacity could not be read (no sign-in, no permission,
        wrong subscription or region, throttling, network); the message says what to do.
    CancelledError
        ``cancel`` was set during the check.
    """
    kind = target.strip().lower() if isinstance(target, str) else target
    report = as_reporter(progress, cancel)
    if kind != "azure":
        from accel_widgets.engine.targets import get_target
        from accel_widgets.errors import ServingError

        try:
            chosen = get_target(kind)
            resolved = chosen.resolve(dict(settings or {}))
        except ServingError as exc:
            if "unknown target" not in str(exc):
                raise QuotaError(str(exc)) from None
            raise QuotaError(
                f"unknown target {target!r}; choose one of: {', '.join(quota_targets())}"
            ) from None
        # The target checks what it needs where it runs (a cluster's free CPU, an Azure ML
        # family quota with its reserve); else its capacity kind is checked as it is.
        answer = chosen.check_capacity(
            resolved,
            report,
            region=region,
            subscription_id=subscription_id,
            credential=credential,
            endpoint=endpoint,
            timeout=timeout,
            model=model,
            workspace=workspace,
            workspace_dir=workspace_dir,
        )
        if answer is not None:
            return answer
        kind = chosen.capacity
    if kind == "local":
        return _check_local(report, workspace_dir, models, model=model, workspace=workspace)
    return _check_azure(
        report,
        region=region,
        family=family,
        needed=needed,
        subscription_id=subscription_id,
        credential=credential,
        endpoint=endpoint,
        timeout=timeout,
    )
