"""Frozen dataclasses for the resource model: what the store returns, never database rows."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from . import errors
from .errors import InvalidStateError, ModelBuilderError, TrainingError


class RunStatus(str, Enum):
    NOT_STARTED = "NotStarted"
    QUEUED = "Queued"
    PREPARING = "Preparing"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    CANCEL_REQUESTED = "CancelRequested"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return not self.is_terminal


TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED})

_ACTIVE = (RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.FINALIZING)

#: The one table of allowed run status transitions. Terminal states have no way out.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.NOT_STARTED: frozenset(
        {RunStatus.QUEUED, RunStatus.FAILED, RunStatus.CANCEL_REQUESTED, RunStatus.CANCELED}
    ),
    # Queued -> Canceled: nothing runs yet, so a cancel needs no worker to act on it.
    RunStatus.QUEUED: frozenset(
        {RunStatus.PREPARING, RunStatus.FAILED, RunStatus.CANCEL_REQUESTED, RunStatus.CANCELED}
    ),
    RunStatus.PREPARING: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCEL_REQUESTED}),
    RunStatus.RUNNING: frozenset({RunStatus.FINALIZING, RunStatus.FAILED, RunStatus.CANCEL_REQUESTED}),
    RunStatus.FINALIZING: frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCEL_REQUESTED}),
    RunStatus.CANCEL_REQUESTED: frozenset({RunStatus.CANCELED, RunStatus.FAILED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELED: frozenset(),
}


def check_run_transition(run_id: str, current: RunStatus, new: RunStatus) -> None:
    """Raise InvalidStateError unless ``current -> new`` is in RUN_TRANSITIONS."""
    if new not in RUN_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in RUN_TRANSITIONS[current])) or "none (terminal)"
        raise InvalidStateError(
            f"Run '{run_id}' cannot go from {current.value} to {new.value}; allowed: {allowed}.",
            hint="Terminal runs never change; start a new run instead."
            if current.is_terminal
            else None,
        )


class ProvisioningState(str, Enum):
    CREATING = "Creating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"


@dataclass(frozen=True, slots=True)
class ComputeSize:
    """A size from the catalog (the source's VM sizes and a few more)."""

    name: str
    vcpus: int
    memory_gib: float
    temp_storage_gib: int
    gpus: int
    gpu_memory_gib: int
    max_data_disks: int
    max_nics: int
    gpu_model: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class ResourceGroup:
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Workspace:
    name: str
    resource_group: str
    region: str
    store_url: str = field(repr=False)  # may hold a password: never in a repr (views mask it)
    artifact_root: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Experiment:
    id: str
    name: str
    workspace: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Compute:
    name: str
    workspace: str
    size: str
    backend: str
    state: ProvisioningState
    error: str | None = None
    min_nodes: int = 0
    max_nodes: int = 1
    idle_seconds_before_scaledown: int = 1800
    address: str | None = None
    created_at: datetime | None = None
    #: The name of the environment variable that holds the cluster's token (never the token itself).
    token_ref: str | None = None


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    value: float
    step: int
    timestamp: float


@dataclass(frozen=True, slots=True)
class Artifact:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class RunError:
    """Why a run failed, as data: the error's class name, its message and its hint (the fix).

    A run's error crosses process boundaries (worker -> store -> CLI, portal, Python API) as these three
    fields, so the caller can raise the same ``ModelBuilderError`` subclass the worker raised.
    """

    type: str
    message: str
    hint: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> RunError:
        """Our errors keep their class name, message and hint; anything else (a bug, an OSError) keeps
        its type name in the text, because the user needs it to make sense of the traceback."""
        if isinstance(exc, ModelBuilderError):
            return cls(type(exc).__name__, exc.message, exc.hint)
        text = str(exc).strip()
        return cls(type(exc).__name__, f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

    @property
    def is_expected(self) -> bool:
        """True for a ModelBuilderError subclass of ``modelbuilder.errors`` (raised on purpose)."""
        return self._error_class() is not None

    def _error_class(self) -> builtins.type[ModelBuilderError] | None:  # ``type`` is a field here
        found = getattr(errors, self.type, None)
        if isinstance(found, type) and issubclass(found, ModelBuilderError):
            return found
        return None

    def to_exception(self) -> ModelBuilderError:
        """The error as an exception of its own class; an unknown or unexpected type becomes a
        TrainingError with the same text."""
        cls = self._error_class() or TrainingError
        # Subclasses may take other constructor arguments; build it the way unpickling does.
        error = cls.__new__(cls)
        ModelBuilderError.__init__(error, self.message, hint=self.hint)
        return error

    def lines(self) -> list[str]:
        """``Error: ...`` and ``Hint: ...``: how every channel (console, run log, run show) shows it."""
        shown = [f"Error: {self.message}"]
        if self.hint:
            shown.append(f"Hint: {self.hint}")
        return shown

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    experiment_id: str
    experiment: str
    status: RunStatus
    compute: str | None = None
    parent_run_id: str | None = None
    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    dataset_fingerprint: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    heartbeat_at: datetime | None = None
    error: RunError | None = None
    phase: str | None = None
    latest_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a run's log; ``number`` counts from 0 in the order the lines were logged."""

    number: int
    timestamp: float
    text: str


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    """An experiment with its number of top-level runs and its most recent top-level run."""

    experiment: Experiment
    run_count: int
    latest_run: Run | None = None
