"""The quota step: "do I have what a deployment needs?" before any time is spent on it.

Every deployment target names the capacity it draws on (``Target.capacity``), and each kind
of capacity is a check of its own (:mod:`~accel_widgets.engine.targets.capacity`): this
machine (:mod:`~accel_widgets.engine.targets.machine`) and a region's Azure vCPU quota
(:mod:`~accel_widgets.engine.targets.azure.quota`). A target may check what a deployment
with its settings needs where it runs instead (a cluster's free CPU, an Azure ML instance
type's family with its reserve: ``Target.check_capacity``). :func:`check_quota` finds the
check by name; it knows no kind, so a new target or a new check is one module and one
registration. All of them answer with one report shape (:class:`QuotaReport`), so the quota
widget and the ``accel-widgets quota`` command show the same table whichever the user picks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from accel_widgets.engine.targets import get_target, target_names
from accel_widgets.engine.targets.azure.quota import API_VERSION, AzureQuota
from accel_widgets.engine.targets.azure.rest import TokenCredential
from accel_widgets.engine.targets.capacity import (
    CapacityCheck,
    QuotaReport,
    QuotaRow,
    capacity_check,
    capacity_checks,
)
from accel_widgets.engine.targets.machine import (
    DEFAULT_MODEL_NEEDS,
    LOCAL_NEEDS,
    SERVE_BASE_MB,
    SERVE_MB_PER_MODEL_MB,
    MachineCapacity,
    ModelNeeds,
    others_sentence,
    serve_estimate_mb,
)
from accel_widgets.errors import QuotaError, ServingError
from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

__all__ = [
    "API_VERSION",
    "DEFAULT_MODEL_NEEDS",
    "LOCAL_NEEDS",
    "SERVE_BASE_MB",
    "SERVE_MB_PER_MODEL_MB",
    "TARGETS",
    "AzureQuota",
    "CapacityCheck",
    "MachineCapacity",
    "ModelNeeds",
    "QuotaReport",
    "QuotaRow",
    "TokenCredential",
    "check_for",
    "check_quota",
    "others_sentence",
    "quota_choices",
    "quota_targets",
    "serve_estimate_mb",
]

TARGETS: tuple[str, ...] = tuple(capacity_checks())
"""The capacity checks built in (``local``, ``azure``); ``check_quota`` also takes any
deployment target's name and runs the check that target draws on."""


def quota_choices() -> list[tuple[str, str]]:
    """What the quota step offers, as (title, name): every deployment target, then each
    capacity check that is not a target's name (Azure's regional quota)."""
    names = target_names()
    chosen = [(t.title, t.name) for t in (get_target(n) for n in names)]
    return chosen + [(c.title, c.name) for c in capacity_checks().values() if c.name not in names]


def quota_targets() -> tuple[str, ...]:
    """The names :func:`check_quota` takes: every deployment target, then the checks."""
    return tuple(name for _, name in quota_choices())


def check_for(name: str) -> CapacityCheck:
    """The capacity check ``check_quota(name)`` draws on: a target's, or the check itself."""
    if name in target_names() or name not in capacity_checks():
        return capacity_check(get_target(name).capacity)
    return capacity_check(name)


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
    target : str
        A deployment target's name (the check it draws on, or its own: a cluster's free
        CPU), or a capacity check's name (``"azure"``): :func:`quota_targets` lists them.
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
    name = target.strip().lower() if isinstance(target, str) else target
    report = as_reporter(progress, cancel)
    checks = capacity_checks()
    if name in target_names() or name not in checks:
        try:
            chosen = get_target(name)
            resolved = chosen.resolve(dict(settings or {}))
        except ServingError as exc:
            if "unknown target" not in str(exc):
                raise QuotaError(str(exc)) from None
            raise QuotaError(
                f"unknown target {target!r}; choose one of: {', '.join(quota_targets())}"
            ) from None
        # The target checks what it needs where it runs (a cluster's free CPU, an Azure ML
        # family quota with its reserve); else the capacity it draws on is checked as it is.
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
        check = capacity_check(chosen.capacity)
    else:
        check = checks[name]
    return check.check(
        report,
        region=region,
        family=family,
        needed=needed,
        subscription_id=subscription_id,
        credential=credential,
        endpoint=endpoint,
        timeout=timeout,
        workspace_dir=workspace_dir,
        models=models,
        model=model,
        workspace=workspace,
    )
