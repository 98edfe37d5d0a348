"""``POST /search``: the indexed images most similar to an uploaded image (or a region of it)."""

from __future__ import annotations

import time

import anyio
from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile

from ...extraction import parse_bbox
from ...index.searcher import Searcher
from ..settings import DEFAULT_K, MAX_K
from ..state import ServerState, get_state, require_key
from ..uploads import decode_upload, read_upload

GUARDED = (("POST", "/search"),)
router = APIRouter()


def _parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        box = parse_bbox(text)
    except ValueError as err:
        raise HTTPException(400, f"bbox: {err}") from None
    if min(box) < 0:
        raise HTTPException(400, f"bbox {text!r}: coordinates are pixels of the upload, at least 0")
    return box


def answer(result, index, k: int, start: float, query: dict) -> dict:
    """The response body of a search: ranked hits with links to their image and thumbnail."""
    hits = result.hits(0)
    for hit in hits:
        hit["image_url"] = f"/images/{hit['id']}"
        hit["thumbnail_url"] = f"/thumbnails/{hit['id']}"
    return {
        "query": query,
        "k": k,
        "index_version": index.generation,
        "elapsed_ms": round(1000 * (time.perf_counter() - start), 1),
        "results": hits,
    }


def run_search(state: ServerState, data: bytes, k: int, bbox, qe: int) -> dict:
    img = decode_upload(data, state.settings)
    if bbox is not None and (bbox[2] > img.width + 1 or bbox[3] > img.height + 1):
        raise HTTPException(400, f"bbox {bbox} lies outside the {img.width}x{img.height} image")
    index = state.index
    start = time.perf_counter()
    try:
        result = Searcher(index, state.model).search([(img, bbox) if bbox else img], k=k, qe=qe, runtime=state.runtime())
    except ValueError as err:  # e.g. an empty crop, or QE on an index that cannot return its vectors
        raise HTTPException(400, str(err)) from None
    query = {"width": img.width, "height": img.height, "bbox": list(bbox) if bbox else None}
    return answer(result, index, k, start, query)


@router.post("/search", dependencies=[Depends(require_key)],
             summary="Find the indexed images most similar to an uploaded image")
async def search(
    image: UploadFile = File(..., description="query image (JPEG, PNG, WebP ...)"),
    k: int = Form(DEFAULT_K, ge=1, le=MAX_K, description="number of results"),
    bbox: str | None = Form(None, description="query region x0,y0,x1,y1 in pixels of the uploaded image"),
    qe: int = Form(0, ge=0, le=100, description="alpha query expansion over the top qe results (0: off)"),
    state: ServerState = Depends(get_state),
):
    box = _parse_bbox(bbox)
    data = await read_upload(image, state.settings)
    return await anyio.to_thread.run_sync(run_search, state, data, k, box, qe, limiter=state.limiter)
