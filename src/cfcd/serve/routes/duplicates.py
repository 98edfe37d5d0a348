"""``GET /duplicates``: groups of duplicate images in tiers, each with the photo to keep
(``cfcd.index.duplicates``, ``cfcd.index.keeper``), kept until the index or the query changes."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query

from ...errors import ConfigError
from ...index.duplicates import DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD, TIERS, near_duplicates, parse_tiers
from ...index.keeper import DEFAULT_RULES, rules_order, suggest
from ..state import ServerState, get_state, require_key

GUARDED = (("GET", "/duplicates"),)
router = APIRouter()


def groups(state: ServerState, threshold: float, neighbours: int, tiers: tuple[str, ...], prefer: tuple[str, ...]) -> dict:
    def make(index) -> dict:
        decided = suggest(index, near_duplicates(index, threshold, neighbours, tiers=tiers), prefer)
        for group in decided:
            for member in group["members"]:
                member.update(image_url=f"/images/{member['id']}", thumbnail_url=f"/thumbnails/{member['id']}")
        return {
            "threshold": threshold,
            "neighbours": neighbours,
            "tiers": list(tiers),
            "prefer": list(prefer),
            "index_version": index.generation,
            "images": len(index),
            # the members as "items", the name of every list of images in this API
            "groups": [{**{k: v for k, v in g.items() if k != "members"}, "items": g["members"]} for g in decided],
        }

    return state.view("duplicates", (threshold, neighbours, tiers, prefer), make)


@router.get("/duplicates", dependencies=[Depends(require_key)],
            summary="Groups of duplicate images in tiers (exact, near, similar), each with the photo to keep",
            responses={400: {"description": "an unknown tier or keep rule"},
                       401: {"description": "missing or wrong API key"}})
async def get_duplicates(threshold: float = Query(DEFAULT_THRESHOLD, ge=-1, le=1,
                                                  description="similarity from which two images count as the same scene "
                                                              "(the similar tier)"),
                         neighbours: int = Query(DEFAULT_NEIGHBOURS, ge=1, le=100, description="neighbours looked at per image"),
                         tiers: str = Query(",".join(TIERS), description="tiers to show, comma-separated: exact, near, similar"),
                         prefer: list[str] = Query([], description="keep rules to put first (repeatable): "
                                                                   f"{', '.join(DEFAULT_RULES)} or folder:NAME"),
                         state: ServerState = Depends(get_state)):
    try:
        chosen = parse_tiers(tiers)
        rules_order(prefer)
    except ConfigError as err:
        raise HTTPException(400, str(err)) from None
    return await anyio.to_thread.run_sync(groups, state, threshold, neighbours, chosen, tuple(prefer), limiter=state.limiter)
