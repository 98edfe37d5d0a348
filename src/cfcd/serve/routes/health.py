"""``GET /health``: liveness, and what is being served (the page reads it too)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..state import ServerState, get_state

GUARDED = ()
router = APIRouter()


@router.get("/health", summary="Liveness and what is being served")
async def health(state: ServerState = Depends(get_state)):
    holder, settings = state.holder, state.settings
    index = holder.get()
    return {
        "status": "ok",
        "images": holder.images,
        "index_version": index.generation,
        "model": (index.model or {}).get("name"),
        "dim": index.dim,
        "learn": index.learn,
        "projection": index.projection.describe() if index.projection else None,
        "api_key_required": state.keys.required,
        "writable": settings.read_only_reason is None,
        "trash": settings.trash_reason is None,  # the page may move duplicates to the trash
        "max_upload_bytes": settings.max_upload_bytes,
        "max_pixels": settings.max_pixels,
        "workers": settings.threads,
        "queue": settings.queue,
    }
