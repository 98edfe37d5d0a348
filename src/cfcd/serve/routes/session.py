"""``/session``: the page trades the API key (a header, once) for an HttpOnly cookie."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from ..settings import API_KEY_HEADER, SESSION_COOKIE
from ..state import ServerState, get_state, require_key

GUARDED = ()
router = APIRouter()


@router.post("/session", status_code=204, summary="Trade the API key (header) for an HttpOnly session cookie")
async def open_session(request: Request, state: ServerState = Depends(get_state)):
    keys = state.keys
    if not keys.valid_key(request.headers.get(API_KEY_HEADER)) and keys.required:
        raise HTTPException(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header",
                            headers={"WWW-Authenticate": API_KEY_HEADER})
    response = Response(status_code=204)
    if keys.required:
        response.set_cookie(SESSION_COOKIE, keys.session_token(), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
    return response


@router.get("/session", status_code=204, dependencies=[Depends(require_key)],
            summary="204 when the request is authorised (header or session cookie), 401 otherwise")
async def check_session():
    return Response(status_code=204)
