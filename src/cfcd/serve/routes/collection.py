"""``GET /images`` and ``GET /folders``: the collection, paged in a stable order (by id), with a
folder filter and the count of images per folder."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Query

from ..listing import Listing
from ..state import ServerState, get_state, require_key

GUARDED = ()
MAX_LIMIT = 500
router = APIRouter(dependencies=[Depends(require_key)],
                   responses={401: {"description": "missing or wrong API key"}})


async def listing(state: ServerState) -> Listing:
    return await anyio.to_thread.run_sync(state.view, "listing", None, Listing.of)


@router.get("/images", summary="The indexed images, paged in a stable order (ascending id: new images come last)")
async def list_images(offset: int = Query(0, ge=0, description="images to skip"),
                      limit: int = Query(60, ge=1, le=MAX_LIMIT, description="images to return"),
                      prefix: str = Query("", max_length=4096,
                                          description="only paths (relative to the collection's folder) starting so, e.g. 'trips/2024/'"),
                      state: ServerState = Depends(get_state)):
    view = await listing(state)
    total, rows = view.page(offset, limit, prefix)
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "prefix": prefix,
        "index_version": view.generation,
        "items": [{"id": i, "path": p, "image_url": f"/images/{i}", "thumbnail_url": f"/thumbnails/{i}",
                   "similar_url": f"/images/{i}/similar"} for i, p in rows],
    }


@router.get("/folders", summary="The folders of the collection (relative to the folder that holds them all) and their image counts")
async def list_folders(state: ServerState = Depends(get_state)):
    view = await listing(state)
    return {"index_version": view.generation, "images": len(view.ids),
            "folders": [{"folder": f, "images": n} for f, n in view.folders().items()]}
