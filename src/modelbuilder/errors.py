"""The one exception hierarchy of modelbuilder.

Every error raised on purpose carries a message (what, expected, given) and a ``hint`` (the fix)::

    ModelBuilderError                      base; .code, .hint
    ├── InvalidParameterError(ValueError)  bad argument or config value
    ├── InvalidNameError(ValueError)       a resource name breaks its rule
    ├── NotFoundError(LookupError)
    │   ├── WorkspaceNotFoundError · ExperimentNotFoundError · RunNotFoundError
    │   ├── ComputeNotFoundError · ResourceGroupNotFoundError · BackboneNotFoundError
    │   └── ArtifactNotFoundError
    ├── AlreadyExistsError
    │   └── ComputeExistsError             same-name compute, any state (errored-compute rule)
    ├── InvalidStateError                  e.g. cancel a finished run, illegal status transition
    ├── DatasetError(ValueError)           empty folder, <2 labels, bad image with --on-bad-image fail
    ├── ImageError(ValueError)             one image cannot be decoded / is unsafe
    ├── WeightsError(FileNotFoundError)    pretrained weights cannot be resolved
    ├── TrainingError(RuntimeError)        the training worker failed
    ├── ExportError(RuntimeError)          ONNX export or parity failure
    ├── BundleError(ValueError)            corrupt MLModel.zip, unknown format_version
    ├── ComputeError(RuntimeError)
    │   └── BackendUnavailableError        extra not installed / cluster down
    ├── OfflineModeError(ConnectionError)  would need network while offline
    ├── MissingDependencyError(ImportError) optional extra not installed
    └── WorkspaceError(RuntimeError)
        ├── WorkspaceBusyError             sqlite locked past the busy timeout
        └── SchemaVersionError             store written by a newer modelbuilder
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class ModelBuilderError(Exception):
    """Base class for all errors raised on purpose by modelbuilder."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Picklable across process boundaries (worker -> parent, Ray) whatever the subclass signature.
        return (_rebuild_error, (type(self), self.message, self.hint))

    def __str__(self) -> str:
        return self.message


def _rebuild_error(cls: type[ModelBuilderError], message: str, hint: str | None) -> ModelBuilderError:
    error = cls.__new__(cls)
    ModelBuilderError.__init__(error, message, hint=hint)
    return error


class InvalidParameterError(ModelBuilderError, ValueError):
    """A function argument or config value is out of its allowed range or type."""

    code = ErrorCode.INVALID_ARGUMENT


class InvalidNameError(ModelBuilderError, ValueError):
    """A workspace, experiment, compute or resource-group name breaks its naming rule."""

    code = ErrorCode.INVALID_ARGUMENT


class NotFoundError(ModelBuilderError, LookupError):
    """Something asked for by name or id does not exist."""

    code = ErrorCode.NOT_FOUND


class WorkspaceNotFoundError(NotFoundError):
    """No workspace has the given name."""


class ResourceGroupNotFoundError(NotFoundError):
    """No resource group has the given name."""


class ExperimentNotFoundError(NotFoundError):
    """No experiment has the given name in the workspace."""


class RunNotFoundError(NotFoundError):
    """No run has the given id in the workspace."""


class ComputeNotFoundError(NotFoundError):
    """No compute has the given name in the workspace."""


class BackboneNotFoundError(NotFoundError):
    """The backbone name is not in the registry."""


class ArtifactNotFoundError(NotFoundError):
    """The artifact path does not exist in the run's artifact folder."""


class AlreadyExistsError(ModelBuilderError):
    """A resource with that name already exists."""

    code = ErrorCode.ALREADY_EXISTS


class ComputeExistsError(AlreadyExistsError):
    """A compute with that name exists, in whatever provisioning state (including Failed)."""


class InvalidStateError(ModelBuilderError):
    """The operation is not allowed in the object's current state."""

    code = ErrorCode.FAILED_PRECONDITION


class DatasetError(ModelBuilderError, ValueError):
    """The training data cannot be used as given (missing folder, too few labels or images, ...)."""

    code = ErrorCode.INVALID_ARGUMENT


class ImageError(ModelBuilderError, ValueError):
    """One image cannot be decoded, is not an image, or is unsafe (decompression bomb)."""

    code = ErrorCode.INVALID_ARGUMENT


class WeightsError(ModelBuilderError, FileNotFoundError):
    """Pretrained weights for a backbone cannot be found or loaded."""

    code = ErrorCode.FAILED_PRECONDITION


class TrainingError(ModelBuilderError, RuntimeError):
    """Training failed (in this process or in a worker)."""

    code = ErrorCode.INTERNAL


class ExportError(ModelBuilderError, RuntimeError):
    """Exporting or verifying the ONNX model failed."""

    code = ErrorCode.INTERNAL


class BundleError(ModelBuilderError, ValueError):
    """An MLModel.zip is corrupt, tampered with, or of an unknown format version."""

    code = ErrorCode.INVALID_ARGUMENT


class ComputeError(ModelBuilderError, RuntimeError):
    """A compute cannot be provisioned or used."""

    code = ErrorCode.FAILED_PRECONDITION


class BackendUnavailableError(ComputeError):
    """The compute backend is not installed or not reachable."""

    code = ErrorCode.UNAVAILABLE


class OfflineModeError(ModelBuilderError, ConnectionError):
    """The operation needs the network, but modelbuilder runs offline."""

    code = ErrorCode.UNAVAILABLE


class MissingDependencyError(ModelBuilderError, ImportError):
    """An optional dependency (extra) is not installed."""

    code = ErrorCode.FAILED_PRECONDITION


class WorkspaceError(ModelBuilderError, RuntimeError):
    """The workspace store cannot be used."""

    code = ErrorCode.INTERNAL


class WorkspaceBusyError(WorkspaceError):
    """The workspace database stayed locked past the busy timeout."""

    code = ErrorCode.UNAVAILABLE


class SchemaVersionError(WorkspaceError):
    """The workspace was written by a newer modelbuilder (or has an unknown schema)."""

    code = ErrorCode.FAILED_PRECONDITION


def require(module: str, extra: str) -> None:
    """Raise MissingDependencyError with the exact install command if ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"This feature needs the Python package '{module}', which is not installed.",
            hint=f'Install it with: pip install "modelbuilder[{extra}]"',
        )
