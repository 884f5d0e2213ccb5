"""The new-run page (Scenario → Environment → Data → Train) and a run's Consume page.

The new-run page is rendered with everything that needs no data (the size catalog, the computes, the data
roots); its script (static/wizard.js) drives the steps through the JSON API of routers/datasets.py and
routers/wizard.py, then opens the live run page. Evaluate is the run page's results section as it is.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from ...codegen.snippets import consume_snippets
from ...errors import ArtifactNotFoundError
from ...hints import command, short_id
from ...services import artifacts as artifact_service
from ...services import computes as compute_service
from ...services import datasets as dataset_service
from ...training.backbone_spec import list_backbones
from ..context import PortalState, get_state
from ..queries import get_run_detail
from ..results import list_run_files
from ..views import compute_out, run_url, size_spec, workspace_out
from .datasets import Wizard
from .pages import render
from .wizard import COMPUTE_NAME_PATTERN

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
State = Annotated[PortalState, Depends(get_state)]

#: Scenarios of ML.NET Model Builder that modelbuilder does not offer (the page lists them, greyed out).
NOT_OFFERED = (
    ("Data classification", "tabular rows into categories"),
    ("Value prediction", "regression on tabular data"),
    ("Recommendation", "users and items"),
    ("Forecasting", "time series"),
    ("Text classification", "sentences into categories"),
    ("Object detection", "boxes around objects in images"),
)
#: Generated outputs offered for download on the Consume page, in order: (file name or suffix, title).
CONSUME_FILES = (
    ("bestModel.onnx", "ONNX model"),
    ("bestModelMap.json", "Label map"),
    ("MLModel.zip", "Prediction pipeline"),
    (".Model.zip", "Model package (Python)"),
    (".ConsoleApp.zip", "Console app (Python)"),
    (".WebApi.zip", "Web API (FastAPI)"),
)


@router.get("/workspaces/{workspace}/new-run")
def new_run_page(workspace: str, request: Request, state: State, wizard: Wizard) -> Response:
    ws = workspace_out(state.workspace(workspace))
    session = state.session(workspace)
    computes = [compute_out(c) for c in compute_service.list_computes(session)]
    return render(
        request,
        "wizard/new_run.html",
        {
            "workspace": ws,
            "computes": computes,
            "sizes": [size_spec(s) for s in compute_service.sizes()],
            "roots": [{"index": i, "path": str(p)} for i, p in enumerate(wizard.roots.roots)],
            "uploads": list(dataset_service.list_datasets(session)),
            "not_offered": NOT_OFFERED,
            "name_pattern": COMPUTE_NAME_PATTERN,
            "backbones": ["auto", *list_backbones()],
            "limits": wizard.limits,
            "data_root_command": command("portal", data_root="DIR"),
            "title": "New run",
            "crumbs": [(ws.resource_group, "/"), (ws.name, ws.url), ("New run", None)],
        },
    )


def _project_name(paths: list[str]) -> str | None:
    for path in paths:
        for suffix in (".WebApi.zip", ".ConsoleApp.zip", ".Model.zip"):
            if "/" not in path and path.endswith(suffix):
                return path[: -len(suffix)]
    return None


@router.get("/workspaces/{workspace}/runs/{run_id}/consume")
def consume_page(workspace: str, run_id: str, request: Request, state: State) -> Response:
    run, detail = get_run_detail(state, workspace, run_id)
    on_disk = artifact_service.list_run_files(state.session(workspace), run.id)
    files = list_run_files(workspace, run.id, on_disk)
    by_path = {f.path: f for f in files}
    name = _project_name(list(by_path))
    downloads: list[dict[str, Any]] = []
    for match, title in CONSUME_FILES:
        found = [f for f in files if f.path == match or (match.startswith(".") and "/" not in f.path
                                                         and f.path.endswith(match))]
        for f in found:
            downloads.append({"title": title, "path": f.path, "url": f.url, "size": f.size})
    if not downloads and run.status.is_terminal:
        raise ArtifactNotFoundError(
            f"Run '{run.id}' has no outputs to consume (it is {run.status.value}).",
            hint="Only a run that completed (or was canceled after a trial) has a model.",
        )
    snippets = consume_snippets(name) if name else []
    return render(
        request,
        "wizard/consume.html",
        {
            "run": detail,
            "workspace_name": workspace,
            "downloads": downloads,
            "snippets": snippets,
            "project": name,
            "download_command": command("run", "download", short_id(run.id), output="DIR"),
            "run_page": run_url(workspace, run.id),
            "title": f"Consume {detail.display_name}",
            "crumbs": [(detail.experiment, None), (detail.display_name, run_url(workspace, run.id)),
                       ("Consume", None)],
        },
    )
