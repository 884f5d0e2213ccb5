"""HTML pages (Jinja2, server-rendered) and the fragments that the run page's script swaps in live."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ...errors import InvalidParameterError
from ...services import artifacts as artifact_service
from ...services import computes as compute_service
from ...services import runs as run_service
from ..charts import trial_charts
from ..context import PortalState, get_state
from ..queries import (
    DEFAULT_PAGE_SIZE,
    SORT_KEYS,
    get_experiment,
    get_run_detail,
    home_tree,
    list_experiment_runs,
    list_experiments,
    log_page,
    run_trials,
)
from ..results import evaluation_out, list_run_files
from ..views import compare_runs, compute_out, experiment_url, resources_out, run_url, workspace_out

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
State = Annotated[PortalState, Depends(get_state)]

#: Columns of the experiment page that can be sorted, with their default direction.
SORTABLE = {"status": "asc", "started": "desc", "created": "desc", "accuracy": "desc", "name": "asc"}


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    state: PortalState = request.app.state.portal
    base = {"csrf_token": state.csrf_token, "default_workspace": state.default_workspace, "crumbs": []}
    return _templates(request).TemplateResponse(request, name, {**base, **context}, status_code=status_code)


@router.get("/")
def home(request: Request, state: State) -> Response:
    return render(request, "home.html", {"tree": home_tree(state), "title": "Home"})


@router.get("/api-docs")
def api_docs(request: Request) -> Response:
    schema = request.app.openapi()
    endpoints = []
    for path, methods in schema.get("paths", {}).items():
        for method, operation in methods.items():
            endpoints.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "parameters": operation.get("parameters", []),
                    "tags": operation.get("tags", []),
                }
            )
    return render(request, "api_docs.html", {"endpoints": endpoints, "title": "API"})


@router.get("/workspaces/{workspace}")
def workspace_page(workspace: str, request: Request, state: State) -> Response:
    found = workspace_out(state.workspace(workspace))
    return render(
        request,
        "workspace.html",
        {
            "workspace": found,
            "experiments": list_experiments(state, workspace),
            "title": found.name,
            "crumbs": [(found.resource_group, "/"), (found.name, None)],
        },
    )


@router.get("/workspaces/{workspace}/experiments/{experiment}")
def experiment_page(
    workspace: str,
    experiment: str,
    request: Request,
    state: State,
    page: Annotated[int, Query(ge=1)] = 1,
    sort: str = "created",
    dir: str = "",
) -> Response:
    if sort not in SORTABLE:
        raise InvalidParameterError(
            f"The experiment page cannot sort by {sort!r}.", hint=f"Sort by one of: {', '.join(SORTABLE)}."
        )
    direction = dir if dir in ("asc", "desc") else SORTABLE[sort]
    found = get_experiment(state, workspace, experiment)
    runs = list_experiment_runs(
        state,
        workspace,
        experiment,
        offset=(page - 1) * DEFAULT_PAGE_SIZE,
        limit=DEFAULT_PAGE_SIZE,
        order_by=f"{sort} {direction}",
    )
    pages = max(1, math.ceil(runs.total / DEFAULT_PAGE_SIZE))
    ws = workspace_out(state.workspace(workspace))
    return render(
        request,
        "experiment.html",
        {
            "workspace": ws,
            "experiment": found,
            "runs": runs,
            "page": page,
            "pages": pages,
            "sort": sort,
            "dir": direction,
            "sortable": SORTABLE,
            "sort_keys": SORT_KEYS,
            "title": found.name,
            "crumbs": [(ws.resource_group, "/"), (ws.name, ws.url), (found.name, None)],
        },
    )


@router.get("/workspaces/{workspace}/compare")
def compare_page(
    workspace: str,
    request: Request,
    state: State,
    run: Annotated[list[str], Query()] = [],  # noqa: B006
) -> Response:
    if not 2 <= len(run) <= 4:
        raise InvalidParameterError(
            f"Comparing needs two to four runs; {len(run)} selected.",
            hint="Go back, tick two runs in the table, and press Compare.",
        )
    session = state.session(workspace)
    runs = [run_service.get_run(session, run_id) for run_id in run]
    ws = workspace_out(state.workspace(workspace))
    experiment = runs[0].experiment
    return render(
        request,
        "compare.html",
        {
            "workspace": ws,
            "comparison": compare_runs(workspace, runs),
            "title": "Compare runs",
            "crumbs": [
                (ws.resource_group, "/"),
                (ws.name, ws.url),
                (experiment, experiment_url(workspace, experiment)),
                ("Compare", None),
            ],
        },
    )


@router.get("/workspaces/{workspace}/computes")
def computes_page(workspace: str, request: Request, state: State) -> Response:
    ws = workspace_out(state.workspace(workspace))
    computes = [compute_out(c) for c in compute_service.list_computes(state.session(workspace))]
    return render(
        request,
        "computes.html",
        {
            "workspace": ws,
            "computes": computes,
            "title": f"Computes of {ws.name}",
            "crumbs": [(ws.resource_group, "/"), (ws.name, ws.url), ("Computes", None)],
        },
    )


@router.get("/workspaces/{workspace}/computes/{name}")
def compute_page(workspace: str, name: str, request: Request, state: State) -> Response:
    ws = workspace_out(state.workspace(workspace))
    session = state.session(workspace)
    compute = compute_service.get_compute(session, name)
    return render(
        request,
        "compute.html",
        {
            "workspace": ws,
            "compute": compute_out(compute),
            "resources": resources_out(compute, compute_service.compute_resources(session, name)),
            "title": f"Compute {compute.name}",
            "crumbs": [
                (ws.resource_group, "/"),
                (ws.name, ws.url),
                ("Computes", ws.computes_url),
                (compute.name, None),
            ],
        },
    )


def _run_crumbs(state: PortalState, workspace: str, detail: Any) -> list[tuple[str, str | None]]:
    ws = workspace_out(state.workspace(workspace))
    crumbs: list[tuple[str, str | None]] = [
        (ws.resource_group, "/"),
        (ws.name, ws.url),
        (detail.experiment, experiment_url(workspace, detail.experiment)),
    ]
    if detail.parent_run_id:
        crumbs.append(("parent run", run_url(workspace, detail.parent_run_id)))
    crumbs.append((detail.display_name, None))
    return crumbs


@router.get("/workspaces/{workspace}/runs/{run_id}")
def run_page(workspace: str, run_id: str, request: Request, state: State) -> Response:
    run, detail = get_run_detail(state, workspace, run_id)
    if run.id != run_id:  # an id prefix: go to the canonical address
        return RedirectResponse(run_url(workspace, run.id), status_code=307)
    return render(
        request,
        "run.html",
        {
            "workspace_name": workspace,
            "run": detail,
            "trials": _trials_context(state, workspace, run),
            "results": _results_context(state, workspace, run) if run.status.is_terminal else None,
            "log": log_page(state, workspace, run.id, -200, 200),
            "title": f"Run {detail.display_name}",
            "crumbs": _run_crumbs(state, workspace, detail),
            "api_url": f"/api{run_url(workspace, run.id)}",
            "page_url": run_url(workspace, run.id),
        },
    )


def _trials_context(state: PortalState, workspace: str, run: Any) -> dict[str, Any]:
    trials = run_trials(state, workspace, run, time.time())
    charts = trial_charts([(c.name or c.id[:8], trials.histories.get(c.id, {})) for c in trials.children])
    return {"rows": trials.rows, "charts": charts, "best_child_id": trials.best_child_id}


def _results_context(state: PortalState, workspace: str, run: Any) -> dict[str, Any]:
    evaluation = state.evaluation(workspace, run.id)
    on_disk = artifact_service.list_run_files(state.session(workspace), run.id)
    files = list_run_files(workspace, run.id, on_disk)
    paths = {f.path for f in files}
    return {
        "evaluation": None if evaluation is None else evaluation_out(workspace, run.id, evaluation),
        "files": files,
        "can_try": "MLModel.zip" in paths,
        "log_url": f"/api{run_url(workspace, run.id)}/log.txt",
        "status": run.status.value,
    }


@router.get("/workspaces/{workspace}/runs/{run_id}/_trials")
def trials_fragment(workspace: str, run_id: str, request: Request, state: State) -> Response:
    run = state.run(workspace, run_id)
    return render(
        request,
        "_trials.html",
        {"workspace_name": workspace, "trials": _trials_context(state, workspace, run)},
    )


@router.get("/workspaces/{workspace}/runs/{run_id}/_results")
def results_fragment(workspace: str, run_id: str, request: Request, state: State) -> Response:
    run = state.run(workspace, run_id)
    results = _results_context(state, workspace, run)
    return render(
        request,
        "_results.html",
        {"workspace_name": workspace, "results": results, "api_url": f"/api{run_url(workspace, run.id)}"},
    )
