"""JSON API of the new-run flow's Environment and Train steps: compute names checked as typed, computes
created and deleted, the training estimate, and starting a run.

Every state-changing endpoint needs the page's token and a same-origin request. Computes and runs are
made by the services the CLI uses (``services.computes``, ``services.training_run.submit_training`` with
its preflight), so the browser can do nothing the CLI would refuse.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ...errors import InvalidNameError, InvalidParameterError
from ...names import COMPUTE_NAME, experiment_name_from
from ...services import computes as compute_service
from ...services import datasets as dataset_service
from ...services.training_run import dataset_fingerprint, submit_training
from ...training.config import TrainingConfig
from ..context import PortalState, get_state
from ..datasources import resolve_source
from ..errors import PortalHTTPError
from ..estimate import estimate_training
from ..schemas import ComputeOut, ErrorOut
from ..security import check_same_origin
from ..views import compute_out
from .datasets import Wizard

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/workspaces/{workspace}",
    tags=["new run"],
    responses={404: {"model": ErrorOut, "description": "No such workspace, compute or data."}},
)
State = Annotated[PortalState, Depends(get_state)]
#: The compute name rule, for the page to check names as they are typed (the server checks again).
COMPUTE_NAME_PATTERN = (
    f"^(?=.{{{COMPUTE_NAME.min_len},{COMPUTE_NAME.max_len}}}$){COMPUTE_NAME.pattern.pattern}$"
)


@router.get("/compute-names/check")
def check_compute_name(workspace: str, state: State, name: Annotated[str, Query()]) -> dict[str, Any]:
    """Whether ``name`` can name a new compute: the CLI's rule (2-16 letters, digits, hyphens) and free."""
    try:
        COMPUTE_NAME.check(name)
    except InvalidNameError as exc:
        return {"name": name, "ok": False, "message": exc.message, "hint": exc.hint}
    existing = {c.name.lower(): c for c in compute_service.list_computes(state.session(workspace))}
    found = existing.get(name.lower())
    if found is not None:
        return {"name": name, "ok": False, "message": f"Compute '{found.name}' already exists "
                f"(state {found.state.value}).", "hint": "Choose another name, or delete that compute first."}
    return {"name": name, "ok": True, "message": f"'{name}' is free.", "hint": None}


class ComputeIn(BaseModel):
    name: str
    size: str
    backend: str = "local"
    address: str | None = None


@router.post("/computes", response_model=ComputeOut, status_code=201,
             responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}})
def create_compute(workspace: str, body: ComputeIn, request: Request, state: State) -> ComputeOut:
    """Provision a compute as ``modelbuilder compute create`` does. It ends ``Succeeded``, or ``Failed``
    with its reason (and is kept: re-create it under another name, or delete it)."""
    check_same_origin(request, state.policy, state.csrf_token)
    spec = compute_service.ComputeSpec.create(body.name, body.size, backend=body.backend,
                                              address=body.address)
    session = state.session(workspace)
    created = compute_service.create_compute(session, spec)  # ComputeExistsError: 409 with both fixes
    logger.info("Compute %s created from the portal: %s", created.name, created.state.value)
    return compute_out(created)


@router.delete("/computes/{name}", response_model=ComputeOut,
               responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}})
def delete_compute(workspace: str, name: str, request: Request, state: State) -> ComputeOut:
    """Delete a compute in any state (an errored one too, which frees its name)."""
    check_same_origin(request, state.policy, state.csrf_token)
    return compute_out(compute_service.delete_compute(state.session(workspace), name))


@router.get("/train/estimate")
async def train_estimate(
    workspace: str,
    state: State,
    wizard: Wizard,
    source: Annotated[str, Query(description="dataset:<id> or folder:<root>:<path>")],
    time_budget: Annotated[float, Query(ge=5, le=7 * 24 * 3600)] = 300.0,
    architecture: str = "auto",
) -> dict[str, Any]:
    """What training will do with this data and budget, before it starts (see ``portal.estimate``)."""

    def work() -> dict[str, Any]:
        session = state.session(workspace)
        folder = resolve_source(session, wizard.roots, source)
        preview = wizard.preview(source, folder)
        if preview.blocking:
            raise InvalidParameterError(preview.blocking, hint=preview.blocking_hint)
        found = estimate_training(session, preview, time_budget, architecture,
                                  fingerprint=dataset_fingerprint(folder))
        return found.to_dict()

    return await run_in_threadpool(work)


class TrainIn(BaseModel):
    source: str
    compute: str = "local"
    time_budget: float = Field(300.0, ge=5, le=7 * 24 * 3600)
    on_bad_image: str = "skip"
    architecture: str = "auto"
    experiment: str | None = None
    name: str | None = None


_watchers: list[threading.Thread] = []


def _reap_when_done(worker: Any) -> None:
    """Wait on the worker in a daemon thread, so a finished local worker process is not left a zombie."""
    thread = threading.Thread(target=worker.wait, name="portal-run-worker", daemon=True)
    thread.start()
    _watchers[:] = [t for t in _watchers if t.is_alive()] + [thread]


@router.post("/train", status_code=201, responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}})
def start_training(workspace: str, body: TrainIn, request: Request, state: State, wizard: Wizard
                   ) -> dict[str, Any]:
    """Start a run as ``modelbuilder train`` does (same checks before a run exists). Data whose preview
    found a blocking problem is refused here, with the preview's message."""
    check_same_origin(request, state.policy, state.csrf_token)
    session = state.session(workspace)
    folder = resolve_source(session, wizard.roots, body.source)
    preview = wizard.preview(body.source, folder)
    if preview.blocking:
        raise PortalHTTPError(409, preview.blocking, hint=preview.blocking_hint)
    if body.on_bad_image == "fail" and preview.skipped:
        raise PortalHTTPError(
            409, f"The data has {preview.skipped} bad file(s) and 'stop' was chosen for bad images.",
            hint="Fix or remove the files the preview lists, or choose 'skip' to train without them.")
    experiment, name = _names(session, body)
    config = TrainingConfig(data=str(folder), time_budget=body.time_budget, architecture=body.architecture,
                            on_bad_image=body.on_bad_image, name=name)
    submission = submit_training(session, config, experiment=experiment, compute=body.compute)
    _reap_when_done(submission.worker)
    run = submission.run
    logger.info("Run %s started from the portal on %s", run.id, run.compute)
    return {"run_id": run.id, "experiment": run.experiment, "status": run.status.value,
            "url": f"/workspaces/{workspace}/runs/{run.id}"}


def _names(session: Any, body: TrainIn) -> tuple[str | None, str | None]:
    """(experiment, project name). An uploaded dataset's folder is named by its hash, so its runs take the
    name the upload had (its top folder or zip name); a picked folder is named as on the CLI (None)."""
    experiment, name = body.experiment, body.name
    if body.source.startswith("dataset:"):
        stored = dataset_service.get_dataset(session, body.source.partition(":")[2])
        label = stored.name or "uploads"
        experiment = experiment or experiment_name_from(label)
        name = name or _project_name(label)
    return experiment, name


def _project_name(text: str) -> str:
    # The rule of TrainingConfig.project_name for a folder name: letters, digits and '_', a letter first.
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")[:60]
    if cleaned and not cleaned[0].isalpha():
        cleaned = f"Model_{cleaned}"
    return cleaned or "ImageClassifier"


__all__ = ["COMPUTE_NAME_PATTERN", "router"]
