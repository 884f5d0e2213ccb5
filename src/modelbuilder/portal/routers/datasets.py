"""JSON API of the Data step: allowed data roots and their folders, uploads, previews and thumbnails.

Uploads change the workspace, so they need the page's token and a same-origin request (checked before
the body is read). Everything else only reads, and only inside the allowed roots or the workspace's own
uploaded datasets.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from ...errors import NotFoundError
from ...services import datasets as dataset_service
from ..context import PortalState, get_state
from ..datasources import Preview, WizardState, counts_chart, resolve_source, source_boundary
from ..errors import PortalHTTPError
from ..results import DEFAULT_THUMBNAIL_SIZE, make_thumbnail
from ..schemas import ErrorOut
from ..security import check_same_origin

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api",
    tags=["data"],
    responses={404: {"model": ErrorOut, "description": "No such workspace, data root, folder or dataset."}},
)
State = Annotated[PortalState, Depends(get_state)]
#: The upload endpoint's path ends so (the body limit middleware gives it the dataset limit).
UPLOAD_SUFFIX = "/datasets"


def get_wizard(request: Request) -> WizardState:
    wizard: WizardState = request.app.state.wizard
    return wizard


Wizard = Annotated[WizardState, Depends(get_wizard)]


@router.get("/data-roots")
def data_roots(wizard: Wizard) -> list[dict[str, Any]]:
    """The folders the portal may read training data from (``modelbuilder portal --data-root DIR``)."""
    return [{"index": i, "path": str(root)} for i, root in enumerate(wizard.roots.roots)]


@router.get("/data-roots/{index}/folders")
def folders(index: int, wizard: Wizard, path: Annotated[str, Query()] = "") -> dict[str, Any]:
    """The sub-folders of ``path`` (relative to the data root) with their folder and file counts."""
    listing = wizard.roots.list(index, path)
    return {
        "root": listing.root,
        "root_path": listing.root_path,
        "path": listing.path,
        "parent": listing.parent,
        "source": f"folder:{listing.root}:{listing.path}",
        "files": listing.files,
        "truncated": listing.truncated,
        "folders": [
            {"name": f.name, "path": f.path, "folders": f.folders, "files": f.files,
             "source": f"folder:{listing.root}:{f.path}"}
            for f in listing.folders
        ],
    }


def _dataset_out(found: dataset_service.StoredDataset) -> dict[str, Any]:
    return {
        "id": found.id,
        "source": f"dataset:{found.id}",
        "files": found.files,
        "total_bytes": found.total_bytes,
        "labels": found.labels,
        "created": found.created,
        "name": found.name,
    }


@router.get("/workspaces/{workspace}/datasets")
def datasets(workspace: str, state: State) -> list[dict[str, Any]]:
    """The workspace's uploaded datasets."""
    return [_dataset_out(d) for d in dataset_service.list_datasets(state.session(workspace))]


@router.post(f"/workspaces/{{workspace}}{UPLOAD_SUFFIX}", status_code=201,
             responses={400: {"model": ErrorOut}, 403: {"model": ErrorOut}, 413: {"model": ErrorOut}})
async def upload(workspace: str, request: Request, state: State, wizard: Wizard) -> dict[str, Any]:
    """Store an upload as a content-addressed dataset: a zip (field ``archive``), or the files of a
    dropped folder (fields ``files``, each named by its path relative to the folder). The same content
    gives the same id. Needs the page's token (``X-CSRF-Token``) and a same-origin request."""
    check_same_origin(request, state.policy, state.csrf_token)
    session = state.session(workspace)
    limits = wizard.limits
    try:
        form = await request.form(max_files=limits.max_files + 1, max_fields=16)
    except MultiPartException as exc:
        raise PortalHTTPError(400, f"The upload cannot be read: {exc.message}.",
                              hint=f"Upload at most {limits.max_files} files, or one zip.") from exc
    try:
        archives = [v for v in form.getlist("archive") if isinstance(v, UploadFile)]
        files = [v for v in form.getlist("files") if isinstance(v, UploadFile)]
        if len(archives) + (1 if files else 0) != 1:
            raise PortalHTTPError(
                400, "The upload must hold one zip (field 'archive') or the files of one folder (fields "
                "'files'), not both and not neither.",
                hint="Drop one zip or one folder on the Data step.")
        if archives:
            found = await run_in_threadpool(dataset_service.store_zip, session, archives[0].file, limits,
                                            archives[0].filename)
        else:
            named: list[tuple[str, BinaryIO]] = [(f.filename or "", f.file) for f in files]
            found = await run_in_threadpool(dataset_service.store_files, session, named, limits)
    finally:
        await form.close()
    logger.info("Dataset %s stored in workspace %s (%d files)", found.id, workspace, found.files)
    return _dataset_out(found)


#: Thumbnails of one preview are asked for together: they share one listing of the folder.
THUMBNAIL_LISTING_AGE_S = 30.0


def _preview(state: PortalState, wizard: WizardState, workspace: str, source: str,
             max_age_s: float = 0.0) -> Preview:
    folder = resolve_source(state.session(workspace), wizard.roots, source)
    return wizard.preview(source, folder, max_age_s)


def _thumbnail_url(workspace: str, source: str, path: str) -> str:
    from urllib.parse import quote, urlencode

    query = urlencode({"source": source, "path": path})
    return f"/api/workspaces/{quote(workspace)}/data/thumbnail?{query}"


def preview_out(workspace: str, preview: Preview) -> dict[str, Any]:
    return {
        "source": preview.source,
        "labels": preview.labels,
        "counts": preview.counts,
        "images": preview.images,
        "skipped": preview.skipped,
        "typical_size": list(preview.typical_size),
        "blocking": preview.blocking,
        "blocking_hint": preview.blocking_hint,
        "problems": [vars(p) for p in preview.problems],
        "thumbnails": {
            label: [_thumbnail_url(workspace, preview.source, p) for p in paths]
            for label, paths in preview.thumbnails.items()
        },
        "chart_svg": counts_chart(preview.counts) if preview.counts else None,
    }


@router.get("/workspaces/{workspace}/data/preview")
async def preview(workspace: str, state: State, wizard: Wizard,
                  source: Annotated[str, Query(description="dataset:<id> or folder:<root>:<path>")]
                  ) -> dict[str, Any]:
    """What training would see in the data: images per label, thumbnails, and every problem found."""
    found = await run_in_threadpool(_preview, state, wizard, workspace, source)
    return preview_out(workspace, found)


@router.get("/workspaces/{workspace}/data/thumbnail", response_class=Response)
async def thumbnail(workspace: str, state: State, wizard: Wizard, source: str, path: str,
                    size: Annotated[int, Query(ge=32, le=512)] = DEFAULT_THUMBNAIL_SIZE) -> Response:
    """A JPEG thumbnail of an image that the source's preview found usable (no other file is served)."""
    found = await run_in_threadpool(_preview, state, wizard, workspace, source, THUMBNAIL_LISTING_AGE_S)
    target = (found.path / path).resolve()
    # Checked again at read time: the file may have been replaced by a link since the scan.
    if path not in found.usable or not target.is_relative_to(
            source_boundary(wizard.roots, source, found.path).resolve()):
        raise NotFoundError(f"{path!r} is not a usable image of the data {source!r}.",
                            hint="Thumbnails are served only for images the preview lists.")
    data = await run_in_threadpool(make_thumbnail, target, size)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})
