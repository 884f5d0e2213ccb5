"""Entities as plain JSON-ready dicts with stable snake_case fields (CLI ``--json``, portal API).

Field names are part of the public interface: add fields, never rename or remove them.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from ..entities import (
    Artifact,
    Compute,
    ComputeSize,
    Experiment,
    ExperimentSummary,
    ResourceGroup,
    Run,
    Workspace,
)
from ..store.engine import mask_url
from .portal_links import portal_link


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def resource_group_view(group: ResourceGroup, workspaces: list[Workspace] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {"name": group.name, "created_at": _time(group.created_at)}
    if workspaces is not None:
        view["workspaces"] = [workspace.name for workspace in workspaces]
    return view


def workspace_view(workspace: Workspace) -> dict[str, Any]:
    return {
        "name": workspace.name,
        "resource_group": workspace.resource_group,
        "region": workspace.region,
        "store_url": mask_url(workspace.store_url),  # never the password
        "artifact_root": workspace.artifact_root,
        "created_at": _time(workspace.created_at),
    }


def experiment_view(experiment: Experiment, summary: ExperimentSummary | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": experiment.id,
        "name": experiment.name,
        "workspace": experiment.workspace,
        "created_at": _time(experiment.created_at),
    }
    if summary is not None:
        latest = summary.latest_run
        view["run_count"] = summary.run_count
        view["latest_run"] = None if latest is None else {"id": latest.id, "status": latest.status.value}
    return view


def compute_view(compute: Compute) -> dict[str, Any]:
    return {
        "name": compute.name,
        "workspace": compute.workspace,
        "size": compute.size,
        "backend": compute.backend,
        "state": compute.state.value,
        "error": compute.error,
        "min_nodes": compute.min_nodes,
        "max_nodes": compute.max_nodes,
        "idle_seconds_before_scaledown": compute.idle_seconds_before_scaledown,
        "address": compute.address,
        # The variable's name only: the token is never read here, so it can never be shown.
        "token_env": compute.token_ref,
        "created_at": _time(compute.created_at),
    }


def size_view(size: ComputeSize) -> dict[str, Any]:
    return asdict(size)


def run_view(run: Run, workspace: str | None = None) -> dict[str, Any]:
    """A run; ``metrics`` holds the latest value of each metric by name.

    With ``workspace``, also its ``portal_url``: the run's page on a portal that serves this home, or None
    when none runs, with ``portal_url_reason`` saying so and how to start one (see ``portal_links``).
    """
    view: dict[str, Any] = {
        "id": run.id,
        "name": run.name,
        "status": run.status.value,
        "experiment": run.experiment,
        "experiment_id": run.experiment_id,
        "parent_run_id": run.parent_run_id,
        "compute": run.compute,
        "created_at": _time(run.created_at),
        "started_at": _time(run.started_at),
        "ended_at": _time(run.ended_at),
        "heartbeat_at": _time(run.heartbeat_at),
        "phase": run.phase,
        "error": None if run.error is None else run.error.message,
        "error_type": None if run.error is None else run.error.type,
        "error_hint": None if run.error is None else run.error.hint,
        "dataset_fingerprint": run.dataset_fingerprint,
        "params": dict(run.params),
        "metrics": dict(sorted(run.latest_metrics.items())),
    }
    if workspace is not None:
        view["workspace"] = workspace
        link = portal_link(workspace)
        view["portal_url"] = link.run_url(workspace, run.id)
        view["portal_url_reason"] = link.reason
    return view


def artifact_view(artifact: Artifact) -> dict[str, Any]:
    return {"path": artifact.path, "size": artifact.size, "sha256": artifact.sha256}
