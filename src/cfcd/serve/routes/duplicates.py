"""``GET /duplicates``: groups of near-duplicate images (``cfcd.index.duplicates``), kept until
the index or the threshold changes."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Query

from ...index.duplicates import DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD, near_duplicates
from ..state import ServerState, get_state, require_key

GUARDED = (("GET", "/duplicates"),)
router = APIRouter()


def groups(state: ServerState, threshold: float, neighbours: int) -> dict:
    def make(index) -> dict:
        found = near_duplicates(index, threshold, neighbours)
        records = index.records([i for g in found for i in g.ids])
        return {
            "threshold": threshold,
            "neighbours": neighbours,
            "index_version": index.generation,
            "images": len(index),
            "groups": [{**g.to_dict(), "items": [{"id": i, "path": records[i].path, "image_url": f"/images/{i}",
                                                   "thumbnail_url": f"/thumbnails/{i}"} for i in g.ids]}
                       for g in found],
        }

    return state.view("duplicates", (threshold, neighbours), make)


@router.get("/duplicates", dependencies=[Depends(require_key)],
            summary="Groups of near-duplicate images (photos of the same scene), largest first",
            responses={401: {"description": "missing or wrong API key"}})
async def get_duplicates(threshold: float = Query(DEFAULT_THRESHOLD, ge=-1, le=1,
                                                  description="similarity from which two images are grouped"),
                         neighbours: int = Query(DEFAULT_NEIGHBOURS, ge=1, le=100, description="neighbours looked at per image"),
                         state: ServerState = Depends(get_state)):
    return await anyio.to_thread.run_sync(groups, state, threshold, neighbours, limiter=state.limiter)
