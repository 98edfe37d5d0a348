"""What the running service holds, as one object on ``app.state.cfcd``: the published index
(``IndexHolder``), the model, the worker limiter, the thumbnail cache, the key check and the
settings. Routes reach it through the ``get_state`` / ``require_key`` dependencies, never
through module globals, so one process can run several apps (tests do)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import anyio
from fastapi import HTTPException, Request

from ..index import Index
from ..settings import Runtime
from .security import KeyCheck
from .settings import API_KEY_HEADER, SESSION_COOKIE, ServeSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
THUMBNAIL_CACHE = 2048


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
        if self.index.version() != self.index.generation:
            self._set(Index.load(self.settings.index))

    async def keep_fresh(self) -> None:
        while True:
            await anyio.sleep(self.settings.reload_interval)
            try:
                await anyio.to_thread.run_sync(self.refresh)
            except (OSError, ValueError, RuntimeError) as err:  # a damaged new version: keep serving the old
                log.warning("index %s not reloaded: %s", self.settings.index, err)


class ThumbnailCache:
    """Least recently used JPEG thumbnails, by (id, size, mtime)."""

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


@dataclass
class ServerState:
    settings: ServeSettings
    keys: KeyCheck
    holder: IndexHolder | None = None
    model: object = None
    limiter: anyio.CapacityLimiter | None = None
    thumbs: ThumbnailCache = field(default_factory=ThumbnailCache)
    # One writer at a time in this process (other processes: the index's own write lock).
    writing: threading.Lock = field(default_factory=threading.Lock)
    # One resolve into the trash at a time (its manifest is one file).
    cleaning: threading.Lock = field(default_factory=threading.Lock)
    # Derived views of the latest version (a Listing, the last duplicate groups), rebuilt on change.
    views: dict = field(default_factory=dict)

    def start(self) -> None:
        """Load the index and its model (at start-up, before the first request)."""
        from ..extraction import warm
        from ..index.identity import check_compatible
        from ..index.searcher import load_index_model
        from ..model import load_model

        self.holder = IndexHolder(self.settings)
        self.model = load_model(self.settings.model) if self.settings.model else load_index_model(self.holder.index)
        check_compatible(self.holder.index, self.model)
        warm(self.model, self.runtime())  # trace and fuse, or export, once: before queries run the model in threads
        self.limiter = anyio.CapacityLimiter(max(1, self.settings.threads))

    @property
    def index(self) -> Index:
        return self.holder.get()

    def runtime(self) -> Runtime:
        return Runtime(device=self.settings.device, progress=False, engine=self.settings.runtime)

    def write(self, change: Callable[[Index], T]) -> T:
        """Run ``change`` on the index through its normal versioned write (``Index.edit``:
        published whole or not at all), then serve the new version at once."""
        if self.settings.read_only_reason:
            raise HTTPException(403, self.settings.read_only_reason)
        with self.writing:
            with Index.edit(self.settings.index) as index:
                out = change(index)
            self.holder.refresh()
        return out

    def watch(self, stop: threading.Event) -> None:
        """Keep the index in step with ``settings.watch`` until ``stop`` (a thread of its own):
        each batch of changes is one sync with the served model, under this process's write
        lock, then served at once."""
        from ..index.watch import watch

        watch(self.settings.index, self.settings.watch, self.model, self.runtime(), stop=stop, guard=self.writing,
              on_sync=lambda todo: self.holder.refresh())

    def view(self, name: str, key, make: Callable[[Index], T]) -> T:
        """``make(index)`` for the index being served, kept until the version or ``key`` changes."""
        index = self.index
        held = self.views.get(name)
        if held is None or held[0] != (index.generation, key):
            held = (index.generation, key), make(index)
            self.views[name] = held
        return held[1]


def get_state(request: Request) -> ServerState:
    return request.app.state.cfcd


def require_key(request: Request) -> None:
    if not get_state(request).keys.allows(request.headers.get(API_KEY_HEADER), request.cookies.get(SESSION_COOKIE)):
        raise HTTPException(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header",
                            headers={"WWW-Authenticate": API_KEY_HEADER})
