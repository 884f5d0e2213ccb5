"""JSON API: health, resource groups, workspaces, experiments and their runs, computes, comparisons."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ...compute.sizes import list_sizes
from ...errors import InvalidParameterError
from ...services import computes as compute_service
from ...services import runs as run_service
from ...services import workspaces as workspace_service
from ..context import PortalState, get_state
from ..identity import SERVICE_NAME, PortalIdentity
from ..queries import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, get_experiment, home_tree, list_experiment_runs
from ..queries import list_experiments as query_experiments
from ..schemas import (
    CompareOut,
    ComputeOut,
    ComputeResourcesOut,
    ErrorOut,
    ExperimentOut,
    HealthOut,
    ResourceGroupOut,
    RunPageOut,
    SizeSpecOut,
    WorkspaceDetailOut,
    WorkspaceOut,
)
from ..views import compare_runs, compute_out, resources_out, size_spec, workspace_out

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such workspace, experiment, run or compute."}
}

router = APIRouter(prefix="/api", responses=NOT_FOUND)
State = Annotated[PortalState, Depends(get_state)]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelbuilder")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


@router.get("/health", response_model=HealthOut, tags=["portal"])
def health(state: State, request: Request) -> HealthOut:
    """Whether the portal is up, and whom it serves (``ensure_portal`` uses it only for its own home)."""
    identity: PortalIdentity = request.app.state.identity
    return HealthOut(
        service=SERVICE_NAME,
        version=_version(),
        workspace=state.default_workspace,
        pid=os.getpid(),
        home=identity.home,
        instance=identity.instance,
        port=identity.port,
        workspaces=[found.name for found in workspace_service.list_workspaces(catalog=state.catalog)],
    )


@router.get("/resource-groups", response_model=list[ResourceGroupOut], tags=["catalog"])
def resource_groups(state: State) -> list[ResourceGroupOut]:
    """Every resource group of this machine with its workspaces."""
    return [group for group, _ in home_tree(state)]


@router.get("/workspaces", response_model=list[WorkspaceOut], tags=["catalog"])
def workspaces(state: State) -> list[WorkspaceOut]:
    """Every workspace of this machine."""
    return [workspace_out(w) for w in workspace_service.list_workspaces(catalog=state.catalog)]


@router.get("/workspaces/{workspace}", response_model=WorkspaceDetailOut, tags=["catalog"])
def workspace(workspace: str, state: State) -> WorkspaceDetailOut:
    """A workspace with its experiments."""
    found = workspace_out(state.workspace(workspace))
    return WorkspaceDetailOut(**found.model_dump(), experiments=query_experiments(state, workspace))


@router.get("/workspaces/{workspace}/experiments", response_model=list[ExperimentOut], tags=["experiments"])
def experiments(workspace: str, state: State) -> list[ExperimentOut]:
    """The workspace's experiments, each with its run count and latest run."""
    return query_experiments(state, workspace)


@router.get(
    "/workspaces/{workspace}/experiments/{experiment}", response_model=ExperimentOut, tags=["experiments"]
)
def experiment(workspace: str, experiment: str, state: State) -> ExperimentOut:
    """One experiment with its run count and latest run."""
    return get_experiment(state, workspace, experiment)


@router.get(
    "/workspaces/{workspace}/experiments/{experiment}/runs", response_model=RunPageOut, tags=["experiments"]
)
def experiment_runs(
    workspace: str,
    experiment: str,
    state: State,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    order_by: Annotated[
        str,
        Query(
            description="created, started, ended, name, status, number, accuracy or metric.<key>, "
            "then asc or desc"
        ),
    ] = "created desc",
) -> RunPageOut:
    """A page of the experiment's top-level runs (trials are listed with their parent run)."""
    return list_experiment_runs(state, workspace, experiment, offset=offset, limit=limit, order_by=order_by)


@router.get("/workspaces/{workspace}/compare", response_model=CompareOut, tags=["runs"])
def compare(
    workspace: str,
    state: State,
    run: Annotated[list[str], Query(description="Two to four run ids")] = [],  # noqa: B006
) -> CompareOut:
    """Params and metrics of two to four runs side by side."""
    if not 2 <= len(run) <= 4:
        raise InvalidParameterError(
            f"Comparing needs two to four runs. Got {len(run)}.",
            hint="Pass ?run=ID&run=ID, or tick two runs on the experiment page and press Compare.",
        )
    session = state.session(workspace)
    return compare_runs(workspace, [run_service.get_run(session, run_id) for run_id in run])


@router.get("/workspaces/{workspace}/computes", response_model=list[ComputeOut], tags=["computes"])
def computes(workspace: str, state: State) -> list[ComputeOut]:
    """The workspace's computes with their size's specs; Failed ones with their error and fixes."""
    return [compute_out(c) for c in compute_service.list_computes(state.session(workspace))]


@router.get("/workspaces/{workspace}/computes/{name}", response_model=ComputeOut, tags=["computes"])
def compute(workspace: str, name: str, state: State) -> ComputeOut:
    """One compute."""
    return compute_out(compute_service.get_compute(state.session(workspace), name))


@router.get(
    "/workspaces/{workspace}/computes/{name}/resources",
    response_model=ComputeResourcesOut,
    tags=["computes"],
)
def compute_resources(workspace: str, name: str, state: State) -> ComputeResourcesOut:
    """The compute's live nodes (CPUs, GPUs, memory, address), asked of its cluster within seconds; an
    unreachable cluster is ``unreachable`` with the reason, not an error."""
    session = state.session(workspace)
    compute = compute_service.get_compute(session, name)
    return resources_out(compute, compute_service.compute_resources(session, name))


@router.get("/compute-sizes", response_model=list[SizeSpecOut], tags=["computes"])
def compute_sizes() -> list[SizeSpecOut]:
    """The catalog of compute sizes."""
    return [size_spec(s) for s in list_sizes()]
