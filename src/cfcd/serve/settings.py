"""Settings of the search service (imports nothing heavy: `cfcd serve --help` reads them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigError

DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
# Uploads are queries, not archives: 40 megapixels covers any camera's full-size photo, and
# stays under the decoder's own limit (cfcd.data.decoding.DEFAULT_MAX_PIXELS; a test checks).
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_K = 10
MAX_K = 1000
THUMBNAIL_SIZES = (64, 128, 256, 512)
API_KEY_HEADER = "X-API-Key"
SESSION_COOKIE = "cfcd_session"
# Requests that may wait for a worker; any further one is answered 503 at once.
DEFAULT_QUEUE = 32
# Peak memory one query adds to the server at the largest upload (DEFAULT_MAX_PIXELS) with the
# extraction working-size cap: at most 1066 MB measured (the 6300x6300 gray PNG; a 7700x5133
# JPEG 766 MB) by bench/serve_memory.py, table in docs/serving.md.
QUERY_PEAK_BYTES = 1152 * 2**20
# Share of the memory available at start-up that concurrent queries may take.
MEMORY_SHARE = 0.5


def available_memory() -> int | None:
    """Bytes of memory this process may still use: MemAvailable, bounded by a cgroup v2 limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            avail = min(avail, int(limit) - used) if avail is not None else int(limit) - used
    except (OSError, ValueError):
        pass
    return avail


def default_workers(peak_bytes: int = QUERY_PEAK_BYTES) -> int:
    """Queries run at once by default: as many as half the available memory holds at their
    peak, and no more than the CPU cores (a query already uses several threads)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    avail = available_memory()
    by_memory = int(avail * MEMORY_SHARE // peak_bytes) if avail else cores
    return max(1, min(cores, by_memory))


@dataclass
class ServeSettings:
    index: str
    model: str | None = None  # default: the model named in the index
    device: str | None = None
    runtime: str | None = None  # what runs the network (cfcd.settings.Runtime.engine); None: its default
    api_key: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int | None = None  # queries extracted at once; None: default_workers()
    queue: int = DEFAULT_QUEUE  # requests admitted to wait for a worker; beyond: 503
    # Host header values accepted (DNS rebinding); None: the bind address and localhost.
    allowed_hosts: tuple[str, ...] | None = None
    host: str = "127.0.0.1"  # the bind address, for the default allowed hosts
    reload_interval: float = 1.0  # seconds between checks for a newer index version
    upload_dir: str | None = None  # where POST /images stores photos; None: no uploads
    read_only: bool = False  # refuse POST /images and DELETE /images/{id} whatever else is set
    trash_dir: str | None = None  # where the page's "move the others to trash" moves files; None: no such action
    watch: str | None = None  # a folder kept in step with the index while serving (cfcd.index.watch)

    def __post_init__(self):
        if self.threads is None:
            self.threads = default_workers()
        if self.threads < 1 or self.queue < 0:
            raise ConfigError(f"workers must be >= 1 and queue >= 0; got {self.threads} and {self.queue}")

    @property
    def read_only_reason(self) -> str | None:
        """Why writes (upload, delete) are refused, and how to allow them; None when allowed.
        Without a key, only a loopback server writes: anyone who reaches it could otherwise."""
        if self.read_only:
            return "the server was started with --read-only; start it without to accept uploads and deletions"
        if self.upload_dir is None:
            return "the server is read-only: start cfcd serve with --upload-dir DIR to accept uploads and deletions"
        if not self.api_key and not is_loopback(self.host):
            return (f"the server is read-only: it listens on {self.host} without an API key; "
                    "start cfcd serve with --api-key (or $CFCD_API_KEY) to accept uploads and deletions")
        return None


    @property
    def trash_reason(self) -> str | None:
        """Why files cannot be moved to the trash from the page, and how to allow it; None when
        they can: a writable server, with an API key (moving files is more than an upload), and
        a trash folder."""
        if self.read_only_reason:
            return self.read_only_reason
        if not self.api_key:
            return "moving files to the trash needs an API key: start cfcd serve with --api-key (or $CFCD_API_KEY)"
        if not self.trash_dir:
            return "no trash folder: start cfcd serve with --trash DIR to move duplicates there"
        return None


def is_loopback(host: str) -> bool:
    return host.strip("[]").lower() in ("localhost", "::1") or host.startswith("127.")
