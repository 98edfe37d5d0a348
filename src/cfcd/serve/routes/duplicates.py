"""``GET /duplicates``: groups of duplicate images in tiers, each with the photo to keep
(``cfcd.index.duplicates``, ``cfcd.index.keeper``), kept until the index or the query changes,
served a page at a time; and the decisions on a group: ``POST /duplicates/ignore`` (not
duplicates, ``cfcd.index.decisions``) and ``POST /duplicates/trash`` (move the others to the
server's trash folder, ``cfcd.index.cleanup``)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from ...errors import CfcdError, ConfigError
from ...index import cleanup, decisions
from ...index.duplicates import DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD, TIERS, near_duplicates, parse_tiers
from ...index.keeper import DEFAULT_RULES, rules_order, suggest
from ..listing import Listing
from ..state import ServerState, get_state, require_key
from ..uploads import MAX_ID

GUARDED = (("GET", "/duplicates"), ("POST", "/duplicates/.*"))
router = APIRouter()
# Groups per page of GET /duplicates when no limit is given, and the most one page holds.
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
WRITE_ERRORS = {401: {"description": "missing or wrong API key"},
                403: {"description": "the server does not allow it (the detail says how to allow it)"},
                404: {"description": "an id that is not in the index"}}


class Photos(BaseModel):
    # a group's photos: every pair of them is recorded, so not thousands
    ids: list[int] = Field(..., min_length=2, max_length=200, description="ids of the photos of a group")


class Trash(Photos):
    # one photo at several paths (byte copies) is a group of its own
    ids: list[int] = Field(..., min_length=1, max_length=200, description="ids of the photos of a group")
    keep: int = Field(..., ge=0, le=MAX_ID, description="the photo kept, one of ids; the others are moved")
    keep_path: str | None = Field(None, max_length=4096,
                                  description="which path of the kept photo stays when it is at several paths (byte "
                                              "copies; the group's keep_path); its other paths are moved too. "
                                              "Default: its first path")


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
                         offset: int = Query(0, ge=0, description="groups to skip (paging)"),
                         limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="groups in this page"),
                         state: ServerState = Depends(get_state)):
    try:
        chosen = parse_tiers(tiers)
        rules_order(prefer)
    except ConfigError as err:
        raise HTTPException(400, str(err)) from None
    body = await anyio.to_thread.run_sync(groups, state, threshold, neighbours, chosen, tuple(prefer),
                                          limiter=state.limiter)
    return {**body, "total": len(body["groups"]), "offset": offset, "groups": body["groups"][offset:offset + limit]}


def known(state: ServerState, ids: list[int]) -> dict:
    records = state.index.records(ids)
    missing = sorted(set(ids) - set(records))
    if missing:
        raise HTTPException(404, f"no image with id {', '.join(map(str, missing))} in the index")
    return records


def ignore(state: ServerState, ids: list[int]) -> dict:
    known(state, ids)
    pairs = state.write(lambda index: decisions.ignore(index, ids))
    return {"ignored": sorted(pairs), "index_version": state.index.generation}


@router.post("/duplicates/ignore", dependencies=[Depends(require_key)], responses=WRITE_ERRORS,
             summary="Record photos as not duplicates: no group puts any two of them together again")
async def post_ignore(body: Photos, state: ServerState = Depends(get_state)):
    if state.settings.read_only_reason:
        raise HTTPException(403, state.settings.read_only_reason)
    return await anyio.to_thread.run_sync(ignore, state, body.ids, limiter=state.limiter)


def trash(state: ServerState, ids: list[int], keep: int, keep_path: str | None = None) -> dict:
    known(state, ids)
    paths = state.index.paths(ids)
    if keep_path is not None and keep_path not in paths[keep]:
        raise HTTPException(400, f"keep_path {keep_path}: not a path of image {keep} ({', '.join(paths[keep])})")
    group = {"keep": keep, "keep_path": keep_path or paths[keep][0], "tier": "chosen", "why": "chosen on the page",
             "members": [{"id": i, "path": paths[i][0], "paths": paths[i]} for i in ids]}
    with state.cleaning:
        try:
            # paths in the trash relative to the folder of the whole collection, as the page shows them
            root = state.view("listing", None, Listing.of).root
            report = cleanup.resolve(state.settings.index, state.settings.trash_dir, lambda index: [group],
                                     write=state.write, root=root)
        except CfcdError as err:
            raise HTTPException(400, str(err)) from None
    return {**{k: report[k] for k in ("trash", "resumed")}, "moved": list(dict.fromkeys(e["id"] for e in report["moved"])),
            "moved_paths": [e["path"] for e in report["moved"]],
            "skipped": [{"id": e["id"], "why": e["skipped"]} for e in report["skipped"]],
            "index_version": state.index.generation}


@router.post("/duplicates/trash", dependencies=[Depends(require_key)], responses=WRITE_ERRORS,
             summary="Move the photos of a group other than the one kept to the server's trash folder, and out "
                     "of the index (undo: cfcd duplicates INDEX --restore --trash DIR)")
async def post_trash(body: Trash, state: ServerState = Depends(get_state)):
    if state.settings.trash_reason:
        raise HTTPException(403, state.settings.trash_reason)
    if body.keep not in body.ids:
        raise HTTPException(400, f"keep {body.keep}: not one of the ids {body.ids}")
    return await anyio.to_thread.run_sync(trash, state, body.ids, body.keep, body.keep_path, limiter=state.limiter)
