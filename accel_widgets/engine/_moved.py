"""The engine's old flat module names, still importable: ``accel_widgets.engine.workspace`` is
``accel_widgets.engine.store.workspace``, the same module object.

The engine was regrouped by the walk's steps (docs/ARCHITECTURE.md). Notebooks, scripts,
pickles and ``python -m accel_widgets.engine.convert_worker`` command lines written before that
name the flat modules; a finder at the end of :data:`sys.meta_path` answers those names (and
only those) with the module's new home, so none of them breaks and no module is loaded twice.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import CodeType, ModuleType

_ENGINE = "accel_widgets.engine."

#: Old name below ``accel_widgets.engine`` -> its new name there.
MOVED: dict[str, str] = {
    "workspace": "store.workspace",
    "cleanup": "store.cleanup",
    "keys": "store.keys",
    "catalog": "models.catalog",
    "build": "models.build",
    "ssd": "models.ssd",
    "ssd_anchors": "models.ssd_anchors",
    "ssd_decode": "models.ssd_decode",
    "register": "models.register",
    "sample_model": "models.sample_model",
    "known_files": "models.known_files",
    "labels": "models.labels",
    "train": "training.train",
    "train_data": "training.train_data",
    "featurize": "training.featurize",
    "convert": "conversion.convert",
    "convert_worker": "conversion.convert_worker",
    "ssd_convert": "conversion.ssd_convert",
    "quantize": "conversion.quantize",
    "validate": "conversion.validate",
    "reports": "conversion.reports",
    "lowmem": "conversion.lowmem",
    "bf16_check": "conversion.bf16_check",
    "evaluate": "checks.evaluate",
    "accuracy": "checks.accuracy",
    "labelled": "checks.labelled",
    "samples": "checks.samples",
    "check_photos": "checks.check_photos",
    "verdicts": "checks.verdicts",
    "suite_files": "checks.suite_files",
    "package": "packaging.package",
    "package_context": "packaging.package_context",
    "docker_engine": "packaging.docker_engine",
    "service_config": "packaging.service_config",
    "rest_client": "clients.rest_client",
    "scoring": "clients.scoring",
    "benchmark": "clients.benchmark",
    "detection": "clients.detection",
    "timing": "clients.timing",
    "choices": "walk.choices",
    "prepare": "walk.prepare",
    "notebooks": "walk.notebooks",
    "client": "clients.grpc_client",
    "quota": "targets.quota",
    "azure_rest": "targets.azure.rest",
    "targets.azure_arm": "targets.azure.arm",
    "targets.azureml": "targets.azure.azureml",
    "targets.k8s_common": "targets.k8s.common",
    "targets.kserve": "targets.k8s.kserve",
    "targets.kubernetes": "targets.k8s.kubernetes",
}


def new_name(old: str) -> str | None:
    """The current dotted name of an engine module once called ``old``, or None."""
    if not old.startswith(_ENGINE):
        return None
    new = MOVED.get(old[len(_ENGINE) :])
    return _ENGINE + new if new else None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name, loads it as the new module itself (one object, two names)."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=new)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(spec.origin)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias spec on the real module; give it back its own,
        # so the module keeps one name everywhere (pickles, reprs, reloads).
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)

    def get_code(self, fullname: str) -> CodeType | None:
        """For ``python -m OLD_NAME``: runpy runs the new module's code as ``__main__``."""
        spec = importlib.util.find_spec(new_name(fullname) or fullname)
        return spec.loader.get_code(spec.name)  # type: ignore[union-attr]


def install() -> None:
    """Put the finder last on :data:`sys.meta_path`, once: real files always win."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
