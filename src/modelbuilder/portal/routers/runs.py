"""JSON API of one run: its detail, trials, metric histories, log, and Cancel."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from ...entities import RunStatus
from ...services import runs as run_service
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
    histories = run_service.metric_histories(state.session(workspace), run_id)
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
    session = state.session(workspace)
    full_id = run_service.get_run(session, run_id).id

    def lines() -> Iterator[bytes]:
        offset = 0
        while batch := run_service.log_lines(session, full_id, offset, _LOG_CHUNK)[0]:
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
    session = state.session(workspace)
    before = run_service.get_run(session, run_id)
    if before.status is RunStatus.CANCEL_REQUESTED:
        return CancelOut(run=run_summary(workspace, before), message="Cancellation was already requested.")
    # The same service as `modelbuilder run cancel`: a run no worker took ends Canceled at once, and a run
    # whose worker is gone ends here instead of waiting in CancelRequested for nobody.
    updated = run_service.cancel_run(session, before.id)
    logger.info("Cancel of run %s from the portal: %s", updated.id, updated.status.value)
    if updated.status is RunStatus.CANCELED:
        text = "The run is Canceled (no worker was running it)."
    else:
        text = "Cancellation requested: the run stops at its next safe point and keeps its best model."
    return CancelOut(run=run_summary(workspace, updated), message=text)
