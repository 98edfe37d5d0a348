"""``GET /images/{id}/similar``: more like an indexed image, from its stored descriptor."""

from __future__ import annotations

import time

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam

from ...index.neighbours import UnknownImage, similar
from ..settings import DEFAULT_K, MAX_K
from ..state import ServerState, get_state, require_key
from ..uploads import MAX_ID
from .search import answer

GUARDED = (("GET", r"/images/[^/]+/similar"),)
router = APIRouter()


def run_similar(state: ServerState, image_id: int, k: int, qe: int) -> dict:
    index = state.index
    start = time.perf_counter()
    try:
        result = similar(index, [image_id], k=k, qe=qe)
    except UnknownImage:
        raise HTTPException(404, f"no image with id {image_id} in the index") from None
    except ValueError as err:  # QE on an index that cannot return its vectors
        raise HTTPException(400, str(err)) from None
    return answer(result, index, k, start, {"id": image_id})


@router.get("/images/{image_id}/similar", dependencies=[Depends(require_key)],
            summary="More like this: the indexed images most similar to indexed image {image_id} (itself left out)",
            responses={401: {"description": "missing or wrong API key"}, 404: {"description": "no image with this id"}})
async def get_similar(image_id: int = PathParam(ge=0, le=MAX_ID),
                      k: int = Query(DEFAULT_K, ge=1, le=MAX_K, description="number of results"),
                      qe: int = Query(0, ge=0, le=100, description="alpha query expansion over the top qe results (0: off)"),
                      state: ServerState = Depends(get_state)):
    return await anyio.to_thread.run_sync(run_similar, state, image_id, k, qe, limiter=state.limiter)
