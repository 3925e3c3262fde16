"""One error tree for the whole kit.

Every message names the bad input, the valid choices where there is a small set of them,
and what the user can do next. Widgets and the command line show ``str(error)`` as it is,
so a data scientist never needs a traceback to know what went wrong.
"""

from __future__ import annotations


class AccelError(Exception):
    """Base of every error the kit raises on purpose (the CLI maps it to exit code 1)."""


class CatalogError(AccelError):
    """An unknown model name or variant."""


class InvalidNameError(AccelError):
    """A model, service or image name that breaks the naming rules."""


class WeightsError(AccelError):
    """Weights that cannot be found or loaded."""


class BuildError(AccelError):
    """A TensorFlow model that cannot be built or saved."""


class ConversionError(AccelError):
    """TensorFlow to ONNX conversion, validation or quantization failed."""


class CancelledError(AccelError):
    """The user cancelled a long call; nothing half-done was kept."""


class WorkspaceError(AccelError):
    """The workspace catalog refused a change (missing entry, dependency, bad state)."""


class NotFoundError(WorkspaceError):
    """A model, version, artifact, image or service that is not in the workspace."""


class DependencyError(WorkspaceError):
    """A delete that would leave something depending on the deleted entry."""


class DiskSpaceError(WorkspaceError):
    """Not enough free disk space for the next write."""


class QuotaError(AccelError):
    """Capacity could not be checked (credentials, permissions, throttling)."""


class ServingError(AccelError):
    """A service could not be deployed, reached or stopped."""


class PackageError(AccelError):
    """A container image could not be built, pushed, pulled, saved or found."""


class DockerUnavailableError(PackageError):
    """No Docker engine answers: the message says what to install and how to start it."""


class ImageError(AccelError):
    """Bytes that cannot be scored as a picture (empty, not an image, corrupt or too large).

    ``kind`` lets the server pick the status without parsing the message: ``"too_large"``
    maps to RESOURCE_EXHAUSTED (the request asked for more memory than allowed), every other
    kind to INVALID_ARGUMENT (the request itself is wrong).
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


class ScoringError(AccelError):
    """A scoring call failed; ``code`` is the gRPC status name when there is one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(f"[{code}] {message}" if code else message)
        self.code = code
        self.details = message
