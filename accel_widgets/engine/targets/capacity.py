"""Capacity checks: what a deployment draws on, each kind checked by its own module.

A target names the kind of capacity it draws on (``Target.capacity``): ``local`` (this
machine's memory, disk and cores, :mod:`~accel_widgets.engine.targets.machine`) or ``azure``
(a region's vCPU quota, :mod:`~accel_widgets.engine.targets.azure.quota`). Each kind is a
:class:`CapacityCheck` registered here under its name, so the quota step
(:func:`~accel_widgets.engine.targets.quota.check_quota`) and the quota widget find the check
a target needs without knowing any kind: a new kind is one module and one
:func:`register_capacity_check`. Every check answers with the same :class:`QuotaReport`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from accel_widgets.errors import QuotaError
from accel_widgets.progress import Reporter

__all__ = [
    "STEP",
    "CapacityCheck",
    "QuotaReport",
    "QuotaRow",
    "capacity_check",
    "capacity_checks",
    "fmt_amount",
    "register_capacity_check",
]

#: The progress step every capacity check reports under.
STEP = "quota"


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
                    fmt_amount(row.current),
                    fmt_amount(row.limit),
                    fmt_amount(row.free),
                    fmt_amount(row.needed),
                    row.unit,
                    "yes" if row.enough else "no",
                ]
            )
        return table


def fmt_amount(value: float) -> str:
    """Whole numbers without decimals (vCPU counts), others with one (GiB)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.1f}"


class CapacityCheck(ABC):
    """One kind of capacity a deployment draws on, and how to check it.

    ``options`` names the quota step's own options this check reads beyond the progress
    reporter (``models``, ``region``, ``family``, ``credential``...): the quota widget shows
    fields for the ones a person types (``region``, ``family``), and passes only those.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def check(self, report: Reporter, **options: Any) -> QuotaReport:
        """Measure now and judge; ``options`` are the quota step's (``check_quota``'s)."""


_CHECKS: dict[str, CapacityCheck] = {}


def register_capacity_check(check: CapacityCheck) -> CapacityCheck:
    """Make ``check`` the one for its ``name`` (a later registration replaces an earlier)."""
    _CHECKS[check.name] = check
    return check


def capacity_check(name: str) -> CapacityCheck:
    """The check registered as ``name``, or an error naming the ones there are."""
    try:
        return _CHECKS[name]
    except KeyError:
        raise QuotaError(
            f"no capacity check called {name!r} is registered; there are: "
            f"{', '.join(_CHECKS) or 'none'}"
        ) from None


def capacity_checks() -> Mapping[str, CapacityCheck]:
    """Every registered check by name, in registration order."""
    return dict(_CHECKS)
