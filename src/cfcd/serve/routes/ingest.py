"""``POST /images`` (upload a photo into the index) and ``DELETE /images/{id}``, both through the
index's versioned write (``ServerState.write``): readers see the whole write or none, and a
published image survives a killed server (its file is stored and fsynced before publishing).
An upload's answer lists the photos already indexed that it duplicates, by tier
(``cfcd.index.duplicates.duplicates_of``)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from ...index.duplicates import duplicates_of
from ...index.searcher import add_images
from ..state import ServerState, get_state, require_key
from ..uploads import MAX_ID, decode_upload, read_upload, store_upload

GUARDED = (("POST", "/images"), ("DELETE", r"/images/[^/]+"))
router = APIRouter(dependencies=[Depends(require_key)])
WRITE_ERRORS = {401: {"description": "missing or wrong API key"},
                403: {"description": "the server is read-only (the detail says how to allow writes)"}}


def ingest(state: ServerState, data: bytes, relative: str | None) -> JSONResponse:
    decode_upload(data, state.settings)  # size and pixel limits, before anything is stored
    if state.settings.read_only_reason:
        raise HTTPException(403, state.settings.read_only_reason)
    path, created = store_upload(data, state.settings.upload_dir, relative)
    try:
        # A byte copy of indexed content is not kept (deleted below), so neither is its path.
        report = state.write(lambda index: add_images(index, state.model, [str(path)], runtime=state.runtime(),
                                                      copies=not created))
    except BaseException:
        if created:
            path.unlink(missing_ok=True)
        raise
    if report.failed:
        if created:
            path.unlink(missing_ok=True)
        raise HTTPException(400, f"the upload is not a readable image: {report.failed[0]}")
    if report.added:
        image_id, status = report.added[0], 201
    else:  # the same content is indexed already (from this upload directory or elsewhere)
        image_id, status = report.duplicates[0], 200
        if created:
            path.unlink(missing_ok=True)
    index = state.index
    record = index.records([image_id]).get(image_id)
    found = duplicates_of(index, image_id) if record else []
    return JSONResponse({"id": image_id, "added": status == 201, "path": record.path if record else str(path),
                         "index_version": index.generation, "image_url": f"/images/{image_id}",
                         "thumbnail_url": f"/thumbnails/{image_id}",
                         "near_duplicates": [{**d, "thumbnail_url": f"/thumbnails/{d['id']}"} for d in found]}, status)


@router.post("/images", status_code=201, summary="Add an uploaded photo to the index (content-deduplicated)",
             responses={200: {"description": "the same content is indexed already: its id"},
                        201: {"description": "added: the new image's id"},
                        400: {"description": "not a readable image, or a bad path"},
                        409: {"description": "another file already exists at that path"},
                        413: {"description": "over the upload's byte or pixel limit"}, **WRITE_ERRORS})
async def upload(image: UploadFile = File(..., description="the photo (JPEG, PNG, WebP ...)"),
                 path: str | None = Form(None, max_length=1024,
                                         description="where to store it, relative to the upload directory, e.g. "
                                                     "'trips/2024/beach.jpg' (default: its content hash)"),
                 state: ServerState = Depends(get_state)):
    if state.settings.read_only_reason:  # before reading the body
        raise HTTPException(403, state.settings.read_only_reason)
    data = await read_upload(image, state.settings)
    return await anyio.to_thread.run_sync(ingest, state, data, path, limiter=state.limiter)


def remove(state: ServerState, image_id: int) -> dict:
    removed = state.write(lambda index: index.remove(ids=[image_id]))
    if not removed:
        raise HTTPException(404, f"no image with id {image_id} in the index")
    return {"removed": removed, "index_version": state.index.generation, "images": len(state.index)}


@router.delete("/images/{image_id}", summary="Remove an image from the index (its file stays on disk)",
               responses={404: {"description": "no image with this id"}, **WRITE_ERRORS})
async def delete(image_id: int = PathParam(ge=0, le=MAX_ID), state: ServerState = Depends(get_state)):
    return await anyio.to_thread.run_sync(remove, state, image_id, limiter=state.limiter)
