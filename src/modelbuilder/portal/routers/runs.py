"""JSON API of one run: its detail, trials, metric histories, log, and Cancel."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from ...entities import RunStatus
from ...errors import InvalidStateError
from ..context import PortalState, get_state
from ..queries import get_run_detail, log_page, run_trials
from ..schemas import CancelOut, ErrorOut, LogPageOut, MetricPointOut, RunDetailOut, TrialOut
from ..security import check_same_origin
from ..views import run_summary

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/workspaces/{workspace}/runs/{run_id}",
    tags=["runs"],
    responses={404: {"model": ErrorOut, "description": "No such workspace or run."}},
)
State = Annotated[PortalState, Depends(get_state)]

MAX_LOG_LINES = 5000
_LOG_CHUNK = 2000


@router.get("", response_model=RunDetailOut)
def run(workspace: str, run_id: str, state: State) -> RunDetailOut:
    """A run's status, phase, timings, progress, params and latest metrics (the run page polls this)."""
    return get_run_detail(state, workspace, run_id)[1]


@router.get("/children", response_model=list[TrialOut])
def children(workspace: str, run_id: str, state: State) -> list[TrialOut]:
    """The run's trials (child runs) with their scores; ``is_best`` marks the one the run kept."""
    found = state.run(workspace, run_id)
    return run_trials(state, workspace, found).rows


@router.get("/metrics", response_model=dict[str, list[MetricPointOut]])
def metrics(workspace: str, run_id: str, state: State) -> dict[str, list[MetricPointOut]]:
    """Every value of every metric of the run, by key, in step order."""
    histories = state.store(workspace).get_metric_histories(run_id)
    return {
        key: [
            MetricPointOut(
                step=m.step, value=m.value if math.isfinite(m.value) else None, timestamp=m.timestamp
            )
            for m in values
        ]
        for key, values in histories.items()
    }


@router.get("/logs", response_model=LogPageOut)
def logs(
    workspace: str,
    run_id: str,
    state: State,
    offset: Annotated[int, Query(description="First line; negative counts from the end (-200: tail)")] = -200,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_LINES)] = 1000,
) -> LogPageOut:
    """Log lines of the run. Poll with ``offset=next_offset`` to get only new lines."""
    return log_page(state, workspace, run_id, offset, limit)


@router.get("/log.txt", response_class=StreamingResponse)
def log_text(workspace: str, run_id: str, state: State) -> StreamingResponse:
    """The whole log as a text file (works while the run is still writing it)."""
    store = state.store(workspace)
    full_id = store.get_run(run_id).id

    def lines() -> Iterator[bytes]:
        offset = 0
        while batch := store.get_log_lines(full_id, offset=offset, limit=_LOG_CHUNK):
            yield "".join(line.text + "\n" for line in batch).encode("utf-8")
            offset = batch[-1].number + 1

    return StreamingResponse(
        lines(),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="run-{full_id[:8]}.log"'},
    )


@router.post(
    "/cancel", response_model=CancelOut, responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}}
)
def cancel(workspace: str, run_id: str, request: Request, state: State) -> CancelOut:
    """Ask the run's worker to stop (``CancelRequested``); it keeps the best model so far and ends
    ``Canceled``. Needs the page's token (``X-CSRF-Token``) and a same-origin request."""
    check_same_origin(request, state.policy, state.csrf_token)
    store = state.store(workspace)
    found = store.get_run(run_id)
    if found.status is RunStatus.CANCEL_REQUESTED:
        return CancelOut(run=run_summary(workspace, found), message="Cancellation was already requested.")
    if found.parent_run_id is not None:
        raise InvalidStateError(
            f"Run '{found.id}' is a trial of run '{found.parent_run_id}'; trials are not canceled alone.",
            hint=f"Cancel the run itself: modelbuilder run cancel {found.parent_run_id}",
        )
    if found.status.is_terminal:
        raise InvalidStateError(
            f"Run '{found.id}' is already {found.status.value}; there is nothing to cancel.",
            hint="Only active runs (Queued, Preparing, Running, Finalizing) can be canceled.",
        )
    updated = store.set_run_status(found.id, RunStatus.CANCEL_REQUESTED)
    store.log_lines(found.id, ["Cancellation requested from the portal."])
    logger.info("Cancel requested for run %s from the portal", found.id)
    return CancelOut(
        run=run_summary(workspace, updated),
        message="Cancellation requested: the run stops at its next safe point and keeps its best model.",
    )
