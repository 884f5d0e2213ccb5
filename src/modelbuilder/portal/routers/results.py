"""JSON API of a run's results: files (downloads), evaluation, thumbnails, and "Try the model"."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from ...errors import ArtifactNotFoundError, NotFoundError
from ...services import artifacts as artifact_service
from ..context import PortalState, get_state
from ..results import (
    DEFAULT_THUMBNAIL_SIZE,
    MAX_UPLOAD_BYTES,
    check_upload,
    evaluation_out,
    item_out,
    list_run_files,
    listed_paths,
    locate_listed_image,
    make_thumbnail,
    matching_items,
)
from ..schemas import ArtifactOut, ErrorOut, EvaluationItemsOut, EvaluationOut, PredictionOut, ScoreOut
from ..security import check_same_origin

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/workspaces/{workspace}/runs/{run_id}",
    tags=["results"],
    responses={404: {"model": ErrorOut, "description": "No such workspace, run or file."}},
)
State = Annotated[PortalState, Depends(get_state)]
ThumbSize = Annotated[int, Query(ge=32, le=512)]


def _evaluation(state: PortalState, workspace: str, run_id: str) -> tuple[str, dict[str, Any]]:
    run = state.run(workspace, run_id)
    evaluation = state.evaluation(workspace, run.id)
    if evaluation is None:
        raise ArtifactNotFoundError(
            f"Run '{run.id}' has no evaluation yet (it is {run.status.value}).",
            hint="The evaluation is written when training ends; the run page shows it as soon as it exists.",
        )
    return run.id, evaluation


@router.get("/artifacts", response_model=list[ArtifactOut])
def artifacts(workspace: str, run_id: str, state: State) -> list[ArtifactOut]:
    """The run's files (model, label map, MLModel.zip, generated code, evaluation, log) with download URLs."""
    run = state.run(workspace, run_id)
    on_disk = artifact_service.list_run_files(state.session(workspace), run.id)
    return list_run_files(workspace, run.id, on_disk)


@router.get("/artifacts/{path:path}", response_class=FileResponse)
def download(workspace: str, run_id: str, path: str, state: State) -> FileResponse:
    """Download one of the run's files. Only files inside the run's artifact folder are served."""
    run = state.run(workspace, run_id)
    real = artifact_service.artifact_path(state.session(workspace), run.id, path)
    return FileResponse(real, filename=real.name, media_type=None, content_disposition_type="attachment")


@router.get("/evaluation", response_model=EvaluationOut)
def evaluation(workspace: str, run_id: str, state: State) -> EvaluationOut:
    """Accuracy, macro accuracy, log loss, per-class precision/recall/F1, confusion matrix, and the most
    confidently wrong validation images."""
    full_id, data = _evaluation(state, workspace, run_id)
    return evaluation_out(workspace, full_id, data)


@router.get("/evaluation/items", response_model=EvaluationItemsOut)
def evaluation_items(
    workspace: str,
    run_id: str,
    state: State,
    true_label: str | None = None,
    predicted_label: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 60,
    size: ThumbSize = DEFAULT_THUMBNAIL_SIZE,
) -> EvaluationItemsOut:
    """The validation images of one confusion-matrix cell (filter by true and/or predicted label)."""
    full_id, data = _evaluation(state, workspace, run_id)
    items = matching_items(data, true_label, predicted_label)
    return EvaluationItemsOut(
        items=[item_out(workspace, full_id, item, size) for item in items[offset : offset + limit]],
        total=len(items),
        offset=offset,
        limit=limit,
    )


@router.get(
    "/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "A JPEG thumbnail."}},
)
def thumbnail(
    workspace: str, run_id: str, path: str, state: State, size: ThumbSize = DEFAULT_THUMBNAIL_SIZE
) -> Response:
    """A thumbnail of a validation image. Only images listed in the run's evaluation.json are served."""
    full_id, data = _evaluation(state, workspace, run_id)
    if path not in listed_paths(data):
        raise NotFoundError(
            f"Run '{full_id}' lists no validation image {path!r}.",
            hint="Thumbnails exist only for the images in the run's evaluation.json.",
        )
    run = state.run(workspace, full_id)
    located = locate_listed_image(path, run.params)
    if located is None:
        raise NotFoundError(
            f"The validation image {path!r} of run '{full_id}' is no longer on this machine.",
            hint="Thumbnails are made from the training data; it was moved or deleted.",
        )
    stat = located.stat()
    key = (str(located), stat.st_mtime_ns, stat.st_size, size)
    cached = state.thumbnails.get(key)
    if cached is None:
        cached = make_thumbnail(located, size)
        state.thumbnails.put(key, cached)
    return Response(cached, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.post(
    "/predict",
    response_model=PredictionOut,
    responses={
        400: {"model": ErrorOut},
        403: {"model": ErrorOut},
        413: {"model": ErrorOut},
        415: {"model": ErrorOut},
    },
)
async def predict(
    workspace: str,
    run_id: str,
    request: Request,
    state: State,
    file: Annotated[UploadFile, File(description="An image (JPEG, PNG, ...), at most 10 MB")],
) -> PredictionOut:
    """ "Try the model": predict the label of an uploaded image with the run's MLModel.zip.

    The image passes the checks that training data passes (image signature, safe decoding). Needs the
    page's token (``X-CSRF-Token``) and a same-origin request.
    """
    check_same_origin(request, state.policy, state.csrf_token)
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    return await run_in_threadpool(_predict, state, workspace, run_id, data)


def _predict(state: PortalState, workspace: str, run_id: str, data: bytes) -> PredictionOut:
    image, fmt = check_upload(data)
    run = state.run(workspace, run_id)
    engine = state.engine(workspace, run.id)
    output = engine.predict(image)
    ranked = sorted(zip(engine.labels, output.score, strict=True), key=lambda pair: -pair[1])
    return PredictionOut(
        prediction=output.prediction,
        score=output.score,
        labels=list(engine.labels),
        ranked=[ScoreOut(label=label, score=score) for label, score in ranked],
        image_format=fmt,
        width=image.width,
        height=image.height,
    )
