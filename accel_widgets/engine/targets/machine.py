"""The ``local`` capacity check: this machine, before anything is converted or served here.

Usable CPU cores, available memory, free disk under the workspace and whether ONNX Runtime
can use a GPU, plus a per-model verdict ("can I convert and serve VGG-16 here?"), beside the
accel-widgets services already running on this machine. It needs no account, so a workshop
room on laptops can always use it. The local and container targets draw on it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

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

_GIB = 1024**3


_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


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
    from accel_widgets.engine.models.catalog import list_specs

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
            f"converting needs {fmt_amount(needs.convert_gib)} GiB of memory, "
            f"{mem_free_gib:.1f} GiB is available"
        )
    if not serve_ok:
        reasons.append(
            f"serving needs {fmt_amount(needs.serve_gib)} GiB of memory, "
            f"{mem_free_gib:.1f} GiB is available"
        )
    if not disk_ok:
        reasons.append(
            f"its files need {fmt_amount(needs.disk_mib)} MiB of disk, "
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
    from accel_widgets.engine.models import catalog
    from accel_widgets.engine.store.workspace import ArtifactRecord, Workspace
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
    from accel_widgets.engine.store.workspace import Workspace
    from accel_widgets.engine.targets.room import room_services

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

    report(STEP, 0.0, "counting CPU cores")
    cores = _usable_cores()

    report(STEP, 0.25, "reading memory")
    memory = psutil.virtual_memory()
    mem_total = memory.total / _GIB
    mem_free = memory.available / _GIB

    report(STEP, 0.5, "reading free disk")
    folder = _existing_parent(Path(workspace_dir) if workspace_dir is not None else Path.home())
    disk = shutil.disk_usage(folder)
    disk_total = disk.total / _GIB
    disk_free = disk.free / _GIB

    report(STEP, 0.75, "asking ONNX Runtime for execution providers")
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
    report(STEP, 0.85, "looking for other accel-widgets services on this machine")
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
            f"{r.name} ({fmt_amount(r.free)} of {fmt_amount(r.needed)} {r.unit})" for r in short
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

    report(STEP, 1.0, "local check done")
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


class MachineCapacity(CapacityCheck):
    """This machine's cores, memory, disk and runtimes, and each model's verdict."""

    name = "local"
    title = "This machine"
    options = ("workspace_dir", "models", "model", "workspace")

    def check(self, report: Reporter, **options: Any) -> QuotaReport:
        return _check_local(
            report,
            options.get("workspace_dir"),
            options.get("models"),
            model=options.get("model"),
            workspace=options.get("workspace"),
        )


register_capacity_check(MachineCapacity())
