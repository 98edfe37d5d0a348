"""FastAPI application: image search over an index, its images and thumbnails, a web page.

Security: files are served only by id, looked up in the index's SQLite metadata; nothing the
client sends becomes a filesystem path. Uploads are bounded in bytes (Content-Length checked
before the body is read) and in pixels (checked from the image header before decoding);
queries are bounded in number (``gate``); the key travels in a header or an HttpOnly
cookie, never in a URL, and the Host header must name this server (``security``).
Extraction runs in worker threads so the event loop keeps serving other requests.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from .. import __version__
from ..data.images import ImageError, ImageTooLarge, load_image
from ..extraction import parse_bbox
from ..index import Index
from ..settings import Runtime
from .gate import Gate
from .security import AllowedHosts, KeyCheck
from .settings import API_KEY_HEADER, DEFAULT_K, MAX_K, SESSION_COOKIE, THUMBNAIL_SIZES, ServeSettings

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# Multipart framing and form fields around the uploaded file.
FORM_OVERHEAD = 64 * 1024
THUMBNAIL_CACHE = 2048
# Ids are SQLite / FAISS int64; anything outside is refused by validation (422), not by SQLite (500).
MAX_ID = 2**63 - 1


class IndexHolder:
    """The published index, replaced by ``refresh`` (run off the event loop every
    ``reload_interval`` s) when a writer publishes a new version; requests never wait for a load."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self._set(Index.load(settings.index))

    def _set(self, index: Index) -> None:
        self.index, self.images = index, len(index)  # one assignment each: readers see old or new

    def get(self) -> Index:
        return self.index

    def refresh(self) -> None:
        if self.index.store.version() != self.index.generation:
            self._set(Index.load(self.settings.index))

    async def keep_fresh(self) -> None:
        while True:
            await anyio.sleep(self.settings.reload_interval)
            try:
                await anyio.to_thread.run_sync(self.refresh)
            except (OSError, ValueError, RuntimeError) as err:  # a damaged new version: keep serving the old
                log.warning("index %s not reloaded: %s", self.settings.index, err)


class ThumbnailCache:
    def __init__(self, size: int = THUMBNAIL_CACHE):
        self._items: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key, make):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


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


def create_app(settings: ServeSettings) -> FastAPI:
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from ..extraction import inference_copy
        from ..model import load_model

        holder = IndexHolder(settings)
        model = load_model(settings.model) if settings.model else holder.index.load_model()
        holder.index.check_compatible(model)
        inference_copy(model)  # trace and fuse once, before queries run the model in threads
        state.update(holder=holder, model=model, limiter=anyio.CapacityLimiter(max(1, settings.threads)),
                     thumbs=ThumbnailCache())
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(holder.keep_fresh)
            yield
            tasks.cancel_scope.cancel()

    app = FastAPI(
        title="cfcd image search",
        version=__version__,
        description="Search an image collection by example with CFCD descriptors.",
        lifespan=lifespan,
    )

    keys = KeyCheck(settings.api_key)
    app.add_middleware(Gate, hosts=AllowedHosts(settings.allowed_hosts, settings.host),
                       max_body=settings.max_upload_bytes + FORM_OVERHEAD, workers=settings.threads, queue=settings.queue,
                       guarded=lambda method, path: (method, path) == ("POST", "/search") or path.startswith("/thumbnails/"))

    def require_key(request: Request) -> None:
        if not keys.allows(request.headers.get(API_KEY_HEADER), request.cookies.get(SESSION_COOKIE)):
            raise HTTPException(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header",
                                headers={"WWW-Authenticate": API_KEY_HEADER})

    def decode_upload(data: bytes) -> Image.Image:
        try:
            return load_image(data, settings.max_pixels)
        except ImageTooLarge as err:
            raise HTTPException(413, str(err).replace("<uploaded bytes>", "the upload")) from None
        except ImageError as err:
            raise HTTPException(400, f"the upload is not a readable image: {err}") from None

    def run_search(data: bytes, k: int, bbox, qe: int) -> dict:
        img = decode_upload(data)
        if bbox is not None and (bbox[2] > img.width + 1 or bbox[3] > img.height + 1):
            raise HTTPException(400, f"bbox {bbox} lies outside the {img.width}x{img.height} image")
        index = state["holder"].get()
        start = time.perf_counter()
        try:
            result = index.search_images([(img, bbox) if bbox else img], k=k, model=state["model"], qe=qe,
                                         runtime=Runtime(device=settings.device, progress=False))
        except ValueError as err:  # e.g. an empty crop, or QE on an index that cannot return its vectors
            raise HTTPException(400, str(err)) from None
        hits = result.hits(0)
        for hit in hits:
            hit["image_url"] = f"/images/{hit['id']}"
            hit["thumbnail_url"] = f"/thumbnails/{hit['id']}"
        return {
            "query": {"width": img.width, "height": img.height, "bbox": list(bbox) if bbox else None},
            "k": k,
            "index_version": index.generation,
            "elapsed_ms": round(1000 * (time.perf_counter() - start), 1),
            "results": hits,
        }

    @app.post("/search", dependencies=[Depends(require_key)], summary="Find the indexed images most similar to an uploaded image")
    async def search(
        image: UploadFile = File(..., description="query image (JPEG, PNG, WebP ...)"),
        k: int = Form(DEFAULT_K, ge=1, le=MAX_K, description="number of results"),
        bbox: str | None = Form(None, description="query region x0,y0,x1,y1 in pixels of the uploaded image"),
        qe: int = Form(0, ge=0, le=100, description="alpha query expansion over the top qe results (0: off)"),
    ):
        box = _parse_bbox(bbox)
        data = await image.read(settings.max_upload_bytes + 1)
        if not data:
            raise HTTPException(400, "the uploaded file is empty")
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"upload exceeds the limit of {settings.max_upload_bytes} bytes")
        return await anyio.to_thread.run_sync(run_search, data, k, box, qe, limiter=state["limiter"])

    @app.post("/session", status_code=204, summary="Trade the API key (header) for an HttpOnly session cookie")
    async def open_session(request: Request):
        if not keys.valid_key(request.headers.get(API_KEY_HEADER)) and keys.required:
            raise HTTPException(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header",
                                headers={"WWW-Authenticate": API_KEY_HEADER})
        response = Response(status_code=204)
        if keys.required:
            response.set_cookie(SESSION_COOKIE, keys.session_token(), httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/")
        return response

    @app.get("/session", status_code=204, dependencies=[Depends(require_key)],
             summary="204 when the request is authorised (header or session cookie), 401 otherwise")
    async def check_session():
        return Response(status_code=204)

    def indexed_file(image_id: int) -> Path:
        record = state["holder"].get().record(image_id)
        if record is None:
            raise HTTPException(404, f"no image with id {image_id} in the index")
        path = Path(record.path)
        if not path.is_file():
            raise HTTPException(404, f"image {image_id} is indexed but its file is no longer on disk")
        return path

    @app.get("/images/{image_id}", dependencies=[Depends(require_key)], summary="The indexed image file with this id")
    async def get_image(image_id: int = PathParam(ge=0, le=MAX_ID)):
        path = indexed_file(image_id)
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    @app.get("/thumbnails/{image_id}", dependencies=[Depends(require_key)], summary="A JPEG thumbnail of an indexed image")
    async def get_thumbnail(image_id: int = PathParam(ge=0, le=MAX_ID), size: int = 256):
        if size not in THUMBNAIL_SIZES:
            raise HTTPException(400, f"thumbnail size {size}: choose one of {list(THUMBNAIL_SIZES)}")
        path = indexed_file(image_id)

        def make() -> bytes:
            try:
                img = load_image(path, settings.max_pixels * 4)
            except ImageTooLarge as err:
                raise HTTPException(413, f"image {image_id} is too large for a thumbnail: {err}") from None
            except ImageError as err:
                raise HTTPException(404, f"image {image_id} cannot be decoded: {err}") from None
            img.thumbnail((size, size), Image.BILINEAR)
            out = io.BytesIO()
            img.save(out, "JPEG", quality=85)
            return out.getvalue()

        key = (image_id, size, path.stat().st_mtime)
        data = await anyio.to_thread.run_sync(state["thumbs"].get, key, make, limiter=state["limiter"])
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/health", summary="Liveness and what is being served")
    async def health():
        holder = state["holder"]
        index = holder.get()
        return {
            "status": "ok",
            "images": holder.images,
            "index_version": index.generation,
            "model": (index.model or {}).get("name"),
            "dim": index.dim,
            "learn": index.learn,
            "projection": index.projection.describe() if index.projection else None,
            "api_key_required": keys.required,
            "max_upload_bytes": settings.max_upload_bytes,
            "max_pixels": settings.max_pixels,
            "workers": settings.threads,
            "queue": settings.queue,
        }

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
