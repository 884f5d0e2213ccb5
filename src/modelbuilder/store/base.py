"""The metadata store contract: what every workspace store must do, whatever keeps the data.

A workspace's metadata store holds its experiments, runs (with params, metrics, log lines, artifact records
and child runs) and computes. Implementations return ``modelbuilder.entities`` dataclasses, never rows, and
enforce the rules of the resource model themselves, atomically:

- run status changes follow ``entities.RUN_TRANSITIONS`` (checked inside the write transaction, so two
  processes racing to change one run cannot both win); terminal runs never change, and accept no more
  params, metrics or artifact records (log lines are still accepted, to explain what happened);
- ``started_at`` is set when a run first enters Preparing or Running, ``ended_at`` when it ends;
- compute provisioning states follow ``COMPUTE_TRANSITIONS``; a compute name is taken whatever the state
  of the compute that holds it (the errored-compute rule);
- ``get_*`` raises a ``*NotFoundError`` with a hint, ``find_*`` returns None, ``list_*`` returns a list.

``tests/contracts/test_metadata_store.py`` is the executable form of this contract; a new implementation
passes it before it is used.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from types import EllipsisType
from typing import Any, TypeAlias

from .. import hints
from ..entities import (
    Artifact,
    Compute,
    Experiment,
    ExperimentSummary,
    LogLine,
    Metric,
    ProvisioningState,
    Run,
    RunError,
    RunStatus,
)
from ..errors import InvalidStateError

#: A metric to log: a Metric, or ``(key, value, step, timestamp)`` with ``timestamp`` None for "now".
MetricInput: TypeAlias = "Metric | tuple[str, float, int, float | None]"

#: ``parent_run_id`` filter of list_runs/count_runs: ``...`` any run, None top-level runs, an id its children.
ParentFilter: TypeAlias = "str | None | EllipsisType"

#: Fields that ``order_by`` accepts (each optionally followed by `` asc`` or `` desc``), plus
#: ``metric.<key>`` to order by a run's latest value of a metric (runs without it come last).
RUN_ORDER_FIELDS = ("created_at", "started_at", "ended_at", "name", "status", "number")
DEFAULT_RUN_ORDER = ("created_at desc",)

#: Statuses in which a worker process owns the run and must send heartbeats.
WORKER_STATUSES = frozenset(
    {RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.FINALIZING, RunStatus.CANCEL_REQUESTED}
)

#: Allowed provisioning state changes. A Failed compute keeps its error until it is deleted.
COMPUTE_TRANSITIONS: dict[ProvisioningState, frozenset[ProvisioningState]] = {
    ProvisioningState.CREATING: frozenset(
        {ProvisioningState.SUCCEEDED, ProvisioningState.FAILED, ProvisioningState.DELETING}
    ),
    ProvisioningState.SUCCEEDED: frozenset({ProvisioningState.FAILED, ProvisioningState.DELETING}),
    ProvisioningState.FAILED: frozenset({ProvisioningState.DELETING}),
    ProvisioningState.DELETING: frozenset({ProvisioningState.FAILED}),
}


def check_compute_transition(name: str, current: ProvisioningState, new: ProvisioningState) -> None:
    """Raise InvalidStateError unless ``current -> new`` is in COMPUTE_TRANSITIONS."""
    if new not in COMPUTE_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in COMPUTE_TRANSITIONS[current])) or "none"
        raise InvalidStateError(
            f"Compute '{name}' cannot go from {current.value} to {new.value}; allowed: {allowed}.",
            hint=f"Delete it and create it again: {hints.command('compute', 'delete', name)}"
            if current is ProvisioningState.FAILED
            else None,
        )


class MetadataStore(ABC):
    """Experiments, runs and computes of one workspace. Safe to use from several processes at once."""

    #: The workspace name, used in entities and messages ("" when the store is used on its own).
    workspace: str = ""

    # --- experiments ------------------------------------------------------------------------------

    @abstractmethod
    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment with this name, registered on first use.

        Raises:
            InvalidNameError: the name breaks the experiment name rule.
        """

    @abstractmethod
    def find_experiment(self, name: str) -> Experiment | None:
        """The experiment with this name, or None."""

    @abstractmethod
    def get_experiment(self, name: str) -> Experiment:
        """The experiment with this name.

        Raises:
            ExperimentNotFoundError: no experiment has this name.
        """

    @abstractmethod
    def get_experiment_by_id(self, experiment_id: str) -> Experiment:
        """The experiment with this id.

        Raises:
            ExperimentNotFoundError: no experiment has this id.
        """

    @abstractmethod
    def list_experiments(self) -> list[ExperimentSummary]:
        """All experiments by name, each with its number of top-level runs and its latest one."""

    # --- runs -------------------------------------------------------------------------------------

    @abstractmethod
    def create_run(
        self,
        experiment_id: str,
        *,
        compute: str | None = None,
        params: Mapping[str, Any] | None = None,
        dataset_fingerprint: str | None = None,
        parent_run_id: str | None = None,
        name: str | None = None,
        status: RunStatus = RunStatus.NOT_STARTED,
    ) -> Run:
        """Create a run (a child run when ``parent_run_id`` is given) in a non-terminal status.

        Raises:
            ExperimentNotFoundError: no experiment has this id.
            RunNotFoundError: the parent run does not exist.
            InvalidParameterError: the parent is in another experiment, the status is terminal, or
                a param value is not JSON-serialisable.
        """

    @abstractmethod
    def find_run(self, run_id: str) -> Run | None:
        """The run with this id or unique id prefix (at least 6 characters), or None."""

    @abstractmethod
    def get_run(self, run_id: str) -> Run:
        """The run with this id, or with this unique id prefix of at least 6 characters.

        Raises:
            RunNotFoundError: no run matches.
            InvalidParameterError: the prefix matches several runs.
        """

    @abstractmethod
    def list_runs(
        self,
        experiment_id: str | None = None,
        *,
        parent_run_id: ParentFilter = ...,
        statuses: Iterable[RunStatus] | None = None,
        offset: int = 0,
        limit: int | None = 100,
        order_by: Sequence[str] = DEFAULT_RUN_ORDER,
    ) -> list[Run]:
        """A page of runs, with their params and latest metrics.

        Raises:
            InvalidParameterError: an ``order_by`` entry or the offset/limit is invalid.
        """

    @abstractmethod
    def count_runs(
        self,
        experiment_id: str | None = None,
        *,
        parent_run_id: ParentFilter = ...,
        statuses: Iterable[RunStatus] | None = None,
    ) -> int:
        """How many runs ``list_runs`` would return without offset and limit."""

    def list_child_runs(self, parent_run_id: str) -> list[Run]:
        """Every child run (trial) of a run, in creation order."""
        return self.list_runs(parent_run_id=parent_run_id, limit=None, order_by=("number asc",))

    @abstractmethod
    def set_run_status(
        self, run_id: str, status: RunStatus, *, error: RunError | None = None, phase: str | None = None
    ) -> Run:
        """Move a run to ``status`` if the transition table allows it, and return the updated run.

        This is the store's compare-and-set primitive; everything else changes a run's status through
        ``store.lifecycle``, which knows the paths between states and what each change means.

        Raises:
            RunNotFoundError: no such run.
            InvalidStateError: the transition is not allowed (terminal runs never change).
        """

    @abstractmethod
    def set_run_phase(self, run_id: str, phase: str | None) -> Run:
        """Record what an active run is doing now (scanning, features, trial 3, export...).

        Raises:
            RunNotFoundError: no such run.
        """

    @abstractmethod
    def heartbeat(self, run_id: str) -> RunStatus:
        """Record that the run's worker is alive; return the run's status (so it can see a cancel).

        Terminal runs are not updated.

        Raises:
            RunNotFoundError: no such run.
        """

    @abstractmethod
    def find_stale_runs(self, older_than_seconds: float) -> list[Run]:
        """Runs in a worker status (``WORKER_STATUSES``) whose last sign of life (heartbeat, else start,
        else creation) is older than ``older_than_seconds``: their worker is presumably lost."""

    @abstractmethod
    def log_params(self, run_id: str, params: Mapping[str, Any], *, overwrite: bool = False) -> None:
        """Add params to a run. Logging a key again with another value needs ``overwrite=True``.

        Raises:
            RunNotFoundError: no such run.
            InvalidStateError: the run is terminal, or a key would change without ``overwrite``.
            InvalidParameterError: a value is not JSON-serialisable.
        """

    @abstractmethod
    def log_metrics(self, run_id: str, metrics: Iterable[MetricInput]) -> int:
        """Append metric values in one transaction; return how many were logged.

        Raises:
            RunNotFoundError: no such run.
            InvalidStateError: the run is terminal.
            InvalidParameterError: a key, value or step is invalid.
        """

    def log_metric(self, run_id: str, key: str, value: float, step: int = 0) -> None:
        """Append one metric value (see ``log_metrics``)."""
        self.log_metrics(run_id, [(key, value, step, None)])

    @abstractmethod
    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every value of one metric, by step then time.

        Raises:
            RunNotFoundError: no such run.
        """

    @abstractmethod
    def get_metric_histories(self, run_id: str) -> dict[str, list[Metric]]:
        """Every value of every metric of a run, by key.

        Raises:
            RunNotFoundError: no such run.
        """

    @abstractmethod
    def get_latest_metrics(self, run_id: str) -> dict[str, Metric]:
        """The latest value of each metric (highest step, then latest time).

        Raises:
            RunNotFoundError: no such run.
        """

    @abstractmethod
    def log_lines(self, run_id: str, lines: Iterable[str], *, timestamp: float | None = None) -> int:
        """Append log lines (text with newlines counts as several lines); return the new line count.

        Raises:
            RunNotFoundError: no such run.
        """

    @abstractmethod
    def get_log_lines(self, run_id: str, offset: int = 0, limit: int | None = 1000) -> list[LogLine]:
        """Log lines from line ``offset`` (a negative offset counts from the end: -50 is the tail).

        Raises:
            RunNotFoundError: no such run.
        """

    @abstractmethod
    def count_log_lines(self, run_id: str) -> int:
        """How many log lines the run has.

        Raises:
            RunNotFoundError: no such run.
        """

    @abstractmethod
    def log_artifact(self, run_id: str, path: str, size: int, sha256: str) -> Artifact:
        """Record a written and verified artifact file (the same path again replaces the record).

        Raises:
            RunNotFoundError: no such run.
            InvalidStateError: the run is terminal.
            InvalidParameterError: the size or sha256 is malformed.
        """

    @abstractmethod
    def list_artifacts(self, run_id: str) -> list[Artifact]:
        """The run's artifact records by path.

        Raises:
            RunNotFoundError: no such run.
        """

    # --- computes ---------------------------------------------------------------------------------

    @abstractmethod
    def create_compute(
        self,
        name: str,
        *,
        size: str,
        backend: str,
        state: ProvisioningState = ProvisioningState.CREATING,
        error: str | None = None,
        min_nodes: int = 0,
        max_nodes: int = 1,
        idle_seconds_before_scaledown: int = 1800,
        address: str | None = None,
        token_ref: str | None = None,
    ) -> Compute:
        """Record a new compute. ``token_ref`` is the name of the environment variable that holds the
        cluster's token; the token itself is never stored.

        Raises:
            InvalidNameError: the name breaks the compute name rule.
            InvalidParameterError: a field is out of range; ``token_ref`` is not a variable name.
            ComputeExistsError: a compute with this name exists, in whatever state; the message names
                its state and error, the hint gives both fixes.
        """

    @abstractmethod
    def find_compute(self, name: str) -> Compute | None:
        """The compute with this name, or None."""

    @abstractmethod
    def get_compute(self, name: str) -> Compute:
        """The compute with this name.

        Raises:
            ComputeNotFoundError: no compute has this name.
        """

    @abstractmethod
    def list_computes(self) -> list[Compute]:
        """Every compute by name."""

    @abstractmethod
    def set_compute_state(self, name: str, state: ProvisioningState, *, error: str | None = None) -> Compute:
        """Move a compute to ``state`` (``COMPUTE_TRANSITIONS``); ``error`` is kept (None clears it).

        Raises:
            ComputeNotFoundError: no such compute.
            InvalidStateError: the transition is not allowed.
        """

    @abstractmethod
    def delete_compute(self, name: str) -> Compute:
        """Remove a compute record and return it as it was. Runs keep the compute's name.

        Raises:
            ComputeNotFoundError: no such compute.
        """

    # --- lifecycle --------------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""

    def __enter__(self) -> MetadataStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
