"""Reads that the JSON API and the pages share: one function per thing shown, returning API schemas."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ..entities import Metric, Run
from ..errors import InvalidParameterError, ModelBuilderError
from ..services import experiments as experiment_service
from ..services import runs as run_service
from ..services import workspaces as workspace_service
from .context import EVALUATION_NAME, MODEL_BUNDLE_NAME, PortalState
from .schemas import (
    ExperimentOut,
    LogLineOut,
    LogPageOut,
    ResourceGroupOut,
    RunDetailOut,
    RunPageOut,
    TrialOut,
    WorkspaceOut,
)
from .views import (
    choose_best_child,
    experiment_out,
    run_detail,
    run_summary,
    trial_histories,
    trial_rows,
    workspace_out,
)

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Friendly sort keys of the experiment page -> the store's ``order_by`` fields.
SORT_KEYS = {
    "created": "created_at",
    "started": "started_at",
    "ended": "ended_at",
    "name": "name",
    "status": "status",
    "number": "number",
    "accuracy": "metric.accuracy",
}


@dataclass
class Trials:
    """A run's trials (child runs) with their per-epoch metrics and the one the run kept."""

    children: list[Run]
    histories: dict[str, dict[str, list[Metric]]]
    best_child_id: str | None
    rows: list[TrialOut] = field(default_factory=list)


def run_trials(state: PortalState, workspace: str, run: Run, now: float | None = None) -> Trials:
    session = state.session(workspace)
    children = run_service.list_trials(session, run.id)
    histories = trial_histories(lambda run_id: run_service.metric_histories(session, run_id), children)
    best = choose_best_child(run, children, histories)
    return Trials(children, histories, best, trial_rows(workspace, children, histories, best, now))


def has_results(state: PortalState, workspace: str, run_id: str) -> bool:
    return any(
        state.artifact_path(workspace, run_id, name) is not None
        for name in (EVALUATION_NAME, MODEL_BUNDLE_NAME)
    )


def get_run_detail(state: PortalState, workspace: str, run_id: str) -> tuple[Run, RunDetailOut]:
    """A run and everything its page header shows.

    Raises:
        WorkspaceNotFoundError, RunNotFoundError: no such workspace or run.
    """
    now = time.time()
    run = state.run(workspace, run_id)  # reaps lost runs first: a killed worker's run shows as lost
    trials = run_trials(state, workspace, run, now)
    detail = run_detail(
        workspace,
        run,
        child_count=len(trials.children),
        has_results=has_results(state, workspace, run.id),
        best_child_id=trials.best_child_id,
        now=now,
    )
    return run, detail


def store_order(order_by: str) -> str:
    """``order_by`` as the store takes it: a friendly key (``accuracy desc``) or a store field.

    Raises:
        InvalidParameterError: neither.
    """
    parts = order_by.split()
    if not parts or len(parts) > 2:
        parts = ["?"]
    key = SORT_KEYS.get(parts[0], parts[0])
    if key not in run_service.SORT_FIELDS and not key.startswith("metric."):
        raise InvalidParameterError(
            f"The 'order_by' parameter {order_by!r} is not a sort key: expected one of "
            f"{', '.join(sorted(SORT_KEYS))}, {', '.join(run_service.SORT_FIELDS)} or metric.<key>, "
            "optionally followed by asc or desc.",
            hint="For example: order_by=accuracy desc",
        )
    return " ".join([key, *parts[1:]])


def list_experiment_runs(
    state: PortalState,
    workspace: str,
    experiment: str,
    *,
    offset: int = 0,
    limit: int = DEFAULT_PAGE_SIZE,
    order_by: str = "created desc",
) -> RunPageOut:
    """One page of an experiment's top-level runs.

    Raises:
        WorkspaceNotFoundError, ExperimentNotFoundError: no such workspace or experiment.
        InvalidParameterError: a bad sort key, offset or limit.
    """
    order = store_order(order_by)
    now = time.time()
    runs, total = run_service.list_runs_page(
        state.session(workspace), experiment, offset=offset, limit=limit, order_by=order
    )
    return RunPageOut(
        items=[run_summary(workspace, run, now) for run in runs],
        total=total,
        offset=offset,
        limit=limit,
        order_by=order,
    )


def get_experiment(state: PortalState, workspace: str, name: str) -> ExperimentOut:
    """One experiment with its run count and latest run.

    Raises:
        WorkspaceNotFoundError, ExperimentNotFoundError: no such workspace or experiment.
    """
    summary = experiment_service.get_experiment_summary(state.session(workspace), name)
    return experiment_out(workspace, summary)


def list_experiments(state: PortalState, workspace: str) -> list[ExperimentOut]:
    now = time.time()
    summaries = experiment_service.list_experiments(state.session(workspace))
    return [experiment_out(workspace, s, now) for s in summaries]


@dataclass
class WorkspaceTree:
    """A workspace as the home page shows it: its experiments, or why they cannot be read."""

    workspace: WorkspaceOut
    experiments: list[ExperimentOut]
    error: str | None = None


def home_tree(state: PortalState) -> list[tuple[ResourceGroupOut, list[WorkspaceTree]]]:
    """Resource groups -> workspaces -> experiments; a workspace whose store fails shows its error."""
    tree = []
    for group, held in workspace_service.list_resource_groups(catalog=state.catalog):
        rows = []
        for workspace in held:
            try:
                rows.append(WorkspaceTree(workspace_out(workspace), list_experiments(state, workspace.name)))
            except ModelBuilderError as exc:
                logger.warning("Cannot read workspace %s: %s", workspace.name, exc)
                rows.append(WorkspaceTree(workspace_out(workspace), [], f"{exc.message} {exc.hint or ''}"))
        tree.append(
            (
                ResourceGroupOut(
                    name=group.name, created_at=group.created_at, workspaces=[r.workspace for r in rows]
                ),
                rows,
            )
        )
    return tree


def log_page(state: PortalState, workspace: str, run_id: str, offset: int, limit: int) -> LogPageOut:
    """Log lines from ``offset`` (negative: from the end) and where to continue.

    Raises:
        WorkspaceNotFoundError, RunNotFoundError: no such workspace or run.
    """
    lines, total = run_service.log_lines(state.session(workspace), run_id, offset, limit)
    next_offset = lines[-1].number + 1 if lines else max(0, total if offset < 0 else min(offset, total))
    return LogPageOut(
        lines=[LogLineOut(number=ln.number, timestamp=ln.timestamp, text=ln.text) for ln in lines],
        total=total,
        next_offset=next_offset,
    )
