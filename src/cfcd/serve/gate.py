"""What may enter the service, decided before any body is read (one ASGI middleware, so that
refusals cost the event loop almost nothing under load):

1. the Host header must name this server (``security.AllowedHosts``, against DNS rebinding);
2. a POST must declare its size (411) within the upload limit (413);
3. admission control: at most ``workers`` expensive requests run and ``queue`` more wait; any
   further one is answered 503 with ``Retry-After`` at once, so memory and latency stay
   bounded under any load while cheap routes (``/health``, the page) keep answering.
"""

from __future__ import annotations

import math
import time

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from .security import AllowedHosts


class Gate:
    """ASGI middleware. ``guarded(method, path)`` selects the requests that take a worker.
    Runs in the event loop only, so its counter needs no lock."""

    def __init__(self, app, hosts: AllowedHosts, max_body: int, workers: int, queue: int, guarded):
        self.app = app
        self.hosts = hosts
        self.max_body = max_body
        self.limit = workers + queue
        self.guarded = guarded
        self.active = 0
        self.mean_seconds = 1.0  # running mean of a guarded request's duration, for Retry-After

    def retry_after(self) -> int:
        """Seconds until a place is likely free: a request's recent duration (its wait in the
        full queue included), so the queue ahead has turned over."""
        return max(1, math.ceil(self.mean_seconds))

    def refusal(self, scope) -> JSONResponse | None:
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not self.hosts.allows(host):
            return JSONResponse({"detail": f"Host {host!r} is not served here; start cfcd serve with "
                                           "--allowed-hosts NAME to accept requests addressed to NAME"}, 400)
        if scope["method"] == "POST":
            length = headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "Content-Length required: send the image as a normal multipart upload"}, 411)
            if not length.isdigit() or int(length) > self.max_body:
                return JSONResponse({"detail": f"upload of {length} bytes exceeds the limit of {self.max_body} bytes"}, 413)
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        guarded = refusal is None and self.guarded(scope["method"], scope["path"])
        if guarded and self.active >= self.limit:
            await _drain(receive)  # read the (size-checked) body so the client sees our answer, not a reset
            refusal = JSONResponse(
                {"detail": f"the server is busy: {self.active} requests running or waiting (limit {self.limit}); "
                           "retry after the time in the Retry-After header"},
                503, headers={"Retry-After": str(self.retry_after())})
        if refusal is not None:
            return await refusal(scope, receive, send)
        if not guarded:
            return await self.app(scope, receive, send)
        self.active += 1
        start = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.mean_seconds += 0.1 * (time.monotonic() - start - self.mean_seconds)


async def _drain(receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
