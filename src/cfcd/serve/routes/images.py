"""``GET /images/{id}`` and ``/thumbnails/{id}``: indexed files, served only by id (the path is
looked up in the index; nothing the client sends becomes a filesystem path)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from ...data.decoding import ImageError, ImageTooLarge
from ..settings import THUMBNAIL_SIZES
from ..state import ServerState, get_state, require_key
from ..thumbnails import thumbnail_jpeg
from ..uploads import MAX_ID

GUARDED = (("GET", "/thumbnails/.*"),)
router = APIRouter(dependencies=[Depends(require_key)])


def indexed_file(state: ServerState, image_id: int) -> Path:
    record = state.index.records([image_id]).get(image_id)
    if record is None:
        raise HTTPException(404, f"no image with id {image_id} in the index")
    path = Path(record.path)
    if not path.is_file():
        raise HTTPException(404, f"image {image_id} is indexed but its file is no longer on disk")
    return path


@router.get("/images/{image_id}", summary="The indexed image file with this id")
async def get_image(image_id: int = PathParam(ge=0, le=MAX_ID), state: ServerState = Depends(get_state)):
    path = indexed_file(state, image_id)
    return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")


def make_thumbnail(path: Path, image_id: int, size: int, max_pixels: int) -> bytes:
    try:
        return thumbnail_jpeg(path, size, max_pixels)
    except ImageTooLarge as err:
        raise HTTPException(413, f"image {image_id} is too large for a thumbnail: {err}") from None
    except ImageError as err:
        raise HTTPException(404, f"image {image_id} cannot be decoded: {err}") from None


@router.get("/thumbnails/{image_id}", summary="A JPEG thumbnail of an indexed image")
async def get_thumbnail(image_id: int = PathParam(ge=0, le=MAX_ID), size: int = 256,
                        state: ServerState = Depends(get_state)):
    if size not in THUMBNAIL_SIZES:
        raise HTTPException(400, f"thumbnail size {size}: choose one of {list(THUMBNAIL_SIZES)}")
    path = indexed_file(state, image_id)
    key = (image_id, size, path.stat().st_mtime)
    data = await anyio.to_thread.run_sync(
        state.thumbs.get, key, lambda: make_thumbnail(path, image_id, size, state.settings.max_pixels * 4),
        limiter=state.limiter)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
