"""From entities to what the API and the pages show: run summaries, timings, trials, computes, comparisons.

Pure functions of entities (follow-up reads come in as functions, e.g. ``services.runs.metric_histories``),
shared by the JSON routers and the HTML pages so both always say the same thing.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from .. import hints
from ..compute.sizes import find_size
from ..entities import (
    Compute,
    ComputeSize,
    ExperimentSummary,
    Metric,
    ProvisioningState,
    Run,
    RunStatus,
    Workspace,
)
from ..services.computes import ClusterResources
from ..services.runs import status_label
from .schemas import (
    CompareOut,
    CompareRowOut,
    ComputeOut,
    ComputeResourcesOut,
    ExperimentOut,
    NodeOut,
    RunDetailOut,
    RunSummary,
    SizeSpecOut,
    TrialOut,
    WorkspaceOut,
)

#: Metrics of a trial (child run) per epoch, in the order the chart draws them.
TRIAL_METRICS = ("train_accuracy", "val_accuracy", "train_loss", "val_loss")
_PHASE_COUNT = re.compile(r"(\d+)\s*/\s*(\d+)\s*$")
#: Param keys that name the backbone of a run, most specific first.
BACKBONE_PARAMS = ("backbone", "architecture")


# --- addresses ------------------------------------------------------------------------------------


def workspace_url(workspace: str) -> str:
    return f"/workspaces/{quote(workspace, safe='')}"


def experiment_url(workspace: str, experiment: str) -> str:
    return f"{workspace_url(workspace)}/experiments/{quote(experiment, safe='')}"


def run_url(workspace: str, run_id: str) -> str:
    """The run's page; the same scheme as ``settings.portal_run_url``."""
    return f"{workspace_url(workspace)}/runs/{quote(run_id, safe='')}"


def api_run_url(workspace: str, run_id: str) -> str:
    return f"/api{run_url(workspace, run_id)}"


def artifact_url(workspace: str, run_id: str, path: str) -> str:
    return f"{api_run_url(workspace, run_id)}/artifacts/{quote(path, safe='/')}"


def thumbnail_url(workspace: str, run_id: str, path: str, size: int = 160) -> str:
    return f"{api_run_url(workspace, run_id)}/thumbnail?path={quote(path, safe='')}&size={size}"


# --- timings --------------------------------------------------------------------------------------


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value > 0 else None
    from ..training.config import parse_duration  # torch-free: parses "90s", "5m", "1h"

    try:
        return parse_duration(str(value))
    except ValueError:
        return None


def time_budget_seconds(params: dict[str, Any]) -> float | None:
    """The run's time budget in seconds from its params (``time_budget``, else ``time``)."""
    for key in ("time_budget", "time_budget_s", "time"):
        if key in params:
            found = _seconds(params[key])
            if found is not None:
                return found
    return None


def elapsed_seconds(run: Run, now: float | None = None) -> float | None:
    """Seconds from start to end, or to now while the run has not ended."""
    if run.started_at is None:
        return None
    end = run.ended_at.timestamp() if run.ended_at is not None else (now or time.time())
    return max(0.0, end - run.started_at.timestamp())


def remaining_seconds(run: Run, now: float | None = None) -> float | None:
    """Estimated seconds left for an active run: the time budget minus the elapsed time, else from the
    reported progress; None when nothing says."""
    if run.status.is_terminal or run.status is RunStatus.CANCEL_REQUESTED:
        return 0.0 if run.status is RunStatus.COMPLETED else None
    elapsed = elapsed_seconds(run, now)
    if elapsed is None:
        return None
    budget = time_budget_seconds(run.params)
    if budget is not None:
        return max(0.0, budget - elapsed)
    progress = progress_of(run)
    if progress is not None and 0.02 <= progress < 1.0:
        return elapsed * (1.0 - progress) / progress
    return None


def progress_of(run: Run) -> float | None:
    """Progress of the current phase, 0..1: the ``n/m`` count the worker puts at the end of the phase
    ("features: images 120/500"), else the run's ``progress`` metric; None when neither says."""
    counted = _PHASE_COUNT.search(run.phase or "") if run.status.is_active else None
    if counted is not None and int(counted.group(2)) > 0:
        return min(1.0, int(counted.group(1)) / int(counted.group(2)))
    value = run.latest_metrics.get("progress")
    if value is None or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, float(value)))


# --- runs -----------------------------------------------------------------------------------------


def backbone_of(run: Run) -> str | None:
    for key in BACKBONE_PARAMS:
        value = run.params.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def display_name(run: Run) -> str:
    return run.name or run.id[:8]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def run_summary(workspace: str, run: Run, now: float | None = None) -> RunSummary:
    return RunSummary(
        id=run.id,
        name=run.name,
        display_name=display_name(run),
        experiment=run.experiment,
        parent_run_id=run.parent_run_id,
        status=run.status.value,
        is_active=run.status.is_active,
        phase=run.phase,
        compute=run.compute,
        backbone=backbone_of(run),
        accuracy=_finite(run.latest_metrics.get("accuracy")),
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        duration_s=elapsed_seconds(run, now),
        error=None if run.error is None else run.error.message,
        error_type=None if run.error is None else run.error.type,
        error_hint=None if run.error is None else run.error.hint,
        status_label=status_label(run),
        url=run_url(workspace, run.id),
    )


def can_cancel(run: Run) -> bool:
    """Active top-level runs can be canceled (a trial ends with its run)."""
    return run.status.is_active and run.status is not RunStatus.CANCEL_REQUESTED and run.parent_run_id is None


def run_detail(
    workspace: str,
    run: Run,
    *,
    child_count: int,
    has_results: bool,
    best_child_id: str | None,
    now: float | None = None,
) -> RunDetailOut:
    now = now or time.time()
    summary = run_summary(workspace, run, now)
    return RunDetailOut(
        **summary.model_dump(),
        params=run.params,
        metrics={key: value for key, value in run.latest_metrics.items() if math.isfinite(value)},
        dataset_fingerprint=run.dataset_fingerprint,
        heartbeat_at=run.heartbeat_at,
        elapsed_s=elapsed_seconds(run, now),
        time_budget_s=time_budget_seconds(run.params),
        remaining_s=remaining_seconds(run, now),
        progress=progress_of(run),
        child_count=child_count,
        best_child_id=best_child_id,
        can_cancel=can_cancel(run),
        has_results=has_results,
    )


# --- trials (child runs) --------------------------------------------------------------------------


def trial_histories(
    histories_of: Callable[[str], dict[str, list[Metric]]], children: Sequence[Run]
) -> dict[str, dict[str, list[Metric]]]:
    """The per-epoch metrics of each trial, by child run id then metric key (``histories_of(run_id)``
    gives every metric history of one run)."""
    histories = {}
    for child in children:
        every = histories_of(child.id)
        histories[child.id] = {key: every[key] for key in TRIAL_METRICS if key in every}
    return histories


def _best_value(history: Sequence[Metric]) -> float | None:
    values = [m.value for m in history if math.isfinite(m.value)]
    return max(values) if values else None


def choose_best_child(
    parent: Run, children: Sequence[Run], histories: dict[str, dict[str, list[Metric]]]
) -> str | None:
    """The trial the run kept: the one its params name (``best_trial``), else the best validation accuracy
    among completed trials (among all trials when none completed)."""
    named = parent.params.get("best_trial") or parent.params.get("best_run_id")
    if isinstance(named, str):
        for child in children:
            if named in (child.id, child.name):
                return child.id
    pool = [c for c in children if c.status is RunStatus.COMPLETED] or list(children)
    scored = []
    for child in pool:
        score = _best_value(histories.get(child.id, {}).get("val_accuracy", []))
        if score is None:
            score = _finite(child.latest_metrics.get("val_accuracy"))
        if score is not None:
            scored.append((score, child.id))
    return max(scored)[1] if scored else None


def trial_rows(
    workspace: str,
    children: Sequence[Run],
    histories: dict[str, dict[str, list[Metric]]],
    best_child_id: str | None,
    now: float | None = None,
) -> list[TrialOut]:
    rows = []
    for child in children:
        own = histories.get(child.id, {})
        best = _best_value(own.get("val_accuracy", []))
        if best is None:
            best = _finite(child.latest_metrics.get("val_accuracy"))
        epochs = max((len(own.get(key, [])) for key in TRIAL_METRICS), default=0)
        rows.append(
            TrialOut(
                **run_summary(workspace, child, now).model_dump(),
                metrics={k: v for k, v in child.latest_metrics.items() if math.isfinite(v)},
                best_val_accuracy=best,
                epochs=epochs,
                is_best=child.id == best_child_id,
                params=child.params,
            )
        )
    return rows


# --- catalog --------------------------------------------------------------------------------------


def workspace_out(workspace: Workspace) -> WorkspaceOut:
    return WorkspaceOut(
        name=workspace.name,
        resource_group=workspace.resource_group,
        region=workspace.region,
        created_at=workspace.created_at,
        url=workspace_url(workspace.name),
        computes_url=f"{workspace_url(workspace.name)}/computes",
    )


def experiment_out(workspace: str, summary: ExperimentSummary, now: float | None = None) -> ExperimentOut:
    experiment = summary.experiment
    return ExperimentOut(
        id=experiment.id,
        name=experiment.name,
        workspace=workspace,
        created_at=experiment.created_at,
        run_count=summary.run_count,
        latest_run=None if summary.latest_run is None else run_summary(workspace, summary.latest_run, now),
        url=experiment_url(workspace, experiment.name),
    )


# --- computes -------------------------------------------------------------------------------------


def compute_fixes(compute: Compute) -> list[str]:
    """The two ways out of a Failed compute (the source's errored-compute rule)."""
    if compute.state is not ProvisioningState.FAILED:
        return []
    create = hints.command("compute", "create", "NEW-NAME", size=compute.size)
    delete = hints.command("compute", "delete", compute.name)
    return [
        f"Create the compute with another name: {create}",
        f"Or delete the failed one first, then create it again: {delete}",
    ]


def size_spec(size: ComputeSize) -> SizeSpecOut:
    return SizeSpecOut(
        name=size.name,
        vcpus=size.vcpus,
        memory_gib=size.memory_gib,
        temp_storage_gib=size.temp_storage_gib,
        gpus=size.gpus,
        gpu_memory_gib=size.gpu_memory_gib,
        max_data_disks=size.max_data_disks,
        max_nics=size.max_nics,
        gpu_model=size.gpu_model,
        description=size.description,
    )


def compute_out(compute: Compute) -> ComputeOut:
    size = find_size(compute.size)
    return ComputeOut(
        name=compute.name,
        workspace=compute.workspace,
        size=compute.size,
        spec=None if size is None else size_spec(size),
        backend=compute.backend,
        state=compute.state.value,
        error=compute.error,
        fixes=compute_fixes(compute),
        min_nodes=compute.min_nodes,
        max_nodes=compute.max_nodes,
        idle_seconds_before_scaledown=compute.idle_seconds_before_scaledown,
        address=compute.address,
        token_env=compute.token_ref,
        created_at=compute.created_at,
    )


def resources_out(compute: Compute, resources: ClusterResources | None) -> ComputeResourcesOut:
    nodes = [] if resources is None else resources.nodes
    return ComputeResourcesOut(
        compute=compute.name,
        backend=compute.backend,
        address=compute.address,
        state=compute.state.value,
        known=resources is not None,
        unreachable=None if resources is None else resources.unreachable,
        nodes=[
            NodeOut(
                address=n.address,
                cpus=n.cpus,
                gpus=n.gpus,
                gpu_names=list(n.gpu_names),
                memory_gib=round(n.memory_gib, 2),
                memory_available_gib=None
                if n.memory_available_gib is None
                else round(n.memory_available_gib, 2),
            )
            for n in nodes
        ],
    )


# --- comparison -----------------------------------------------------------------------------------


def _rows(dicts: Sequence[dict[str, Any]]) -> list[CompareRowOut]:
    keys = sorted({key for d in dicts for key in d})
    rows = []
    for key in keys:
        values = [d.get(key) for d in dicts]
        rows.append(CompareRowOut(key=key, values=values, differs=len({repr(v) for v in values}) > 1))
    return rows


def compare_runs(workspace: str, runs: Sequence[Run], now: float | None = None) -> CompareOut:
    """Params and latest metrics of several runs side by side; ``differs`` marks the rows that differ."""
    return CompareOut(
        runs=[run_summary(workspace, run, now) for run in runs],
        params=_rows([run.params for run in runs]),
        metrics=_rows([{k: v for k, v in run.latest_metrics.items() if math.isfinite(v)} for run in runs]),
    )
