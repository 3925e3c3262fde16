"""Azure: the ``azure`` capacity check, the ``azureml`` target, and the ARM client they share.

:func:`open_arm` is the way in to that client (``arm.py``): it needs azure-core, which the
``engine`` extra brings, so it is imported when a call needs it and the package imports
without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accel_widgets.engine.targets.azure.rest import TokenCredential
from accel_widgets.errors import AccelError, ServingError

if TYPE_CHECKING:
    from accel_widgets.engine.targets.azure.arm import ArmClient


def open_arm(
    endpoint: str,
    credential: TokenCredential | None,
    api_version: str,
    report: Any,
    *,
    error: type[AccelError] = ServingError,
    purpose: str,
    **options: Any,
) -> ArmClient:
    """The shared :class:`~.arm.ArmClient`, or ``error`` saying how to install what it needs."""
    try:
        from accel_widgets.engine.targets.azure.arm import ArmClient
    except ImportError as exc:
        raise error(
            f"{purpose}, azure-identity is needed: `pip install 'accel-widgets[engine]'` "
            "(or `pip install azure-identity`)"
            + (f", or {options['fallback']}" if options.get("fallback") else "")
        ) from exc
    return ArmClient(
        endpoint, credential, api_version, report, error=error, purpose=purpose, **options
    )
