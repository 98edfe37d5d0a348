"""FastAPI application: image search over an index, its images and thumbnails, a web page.

Security: files are served only by id, looked up in the index's metadata; nothing the client
sends becomes a filesystem path. Uploads are bounded in bytes (Content-Length checked before
the body is read) and in pixels (checked from the image header before decoding); queries are
bounded in number (``gate``); the key travels in a header or an HttpOnly cookie, never in a
URL, and the Host header must name this server (``security``). Extraction runs in worker
threads so the event loop keeps serving other requests.

The routes live in ``cfcd.serve.routes`` (one module per concern); what they share is the
``ServerState`` on ``app.state.cfcd`` (``cfcd.serve.state``).
"""

from __future__ import annotations

import re
import threading
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .gate import Gate
from .routes import MODULES
from .routes.page import STATIC
from .security import AllowedHosts, KeyCheck
from .settings import ServeSettings
from .state import ServerState

# Multipart framing and form fields around the uploaded file.
FORM_OVERHEAD = 64 * 1024


def guarded_by(modules):
    """The Gate's test: does (method, path) take a worker? From each route module's GUARDED
    (method, path regular expression) pairs."""
    patterns = [(method, re.compile(path)) for module in modules for method, path in module.GUARDED]

    def guarded(method: str, path: str) -> bool:
        return any(method == m and p.fullmatch(path) for m, p in patterns)

    return guarded


def create_app(settings: ServeSettings) -> FastAPI:
    state = ServerState(settings, KeyCheck(settings.api_key))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start()
        stop = threading.Event()
        watching = threading.Thread(target=state.watch, args=(stop,), name="cfcd-watch", daemon=True)
        if settings.watch:
            watching.start()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(state.holder.keep_fresh)
            yield
            tasks.cancel_scope.cancel()
        stop.set()
        if watching.is_alive():
            await anyio.to_thread.run_sync(watching.join)

    app = FastAPI(
        title="cfcd image search",
        version=__version__,
        description="Search an image collection by example with CFCD descriptors.",
        lifespan=lifespan,
    )
    app.state.cfcd = state
    app.add_middleware(Gate, hosts=AllowedHosts(settings.allowed_hosts, settings.host),
                       max_body=settings.max_upload_bytes + FORM_OVERHEAD, workers=settings.threads, queue=settings.queue,
                       guarded=guarded_by(MODULES))
    for module in MODULES:
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
