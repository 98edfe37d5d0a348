"""Settings of the search service (importable without FastAPI installed)."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.images import DEFAULT_MAX_PIXELS as _DECODER_MAX_PIXELS

DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
# Uploads are queries, not archives: 40 megapixels covers any camera's full-size photo.
DEFAULT_MAX_PIXELS = min(40_000_000, _DECODER_MAX_PIXELS)
DEFAULT_K = 10
MAX_K = 1000
THUMBNAIL_SIZES = (64, 128, 256, 512)
API_KEY_HEADER = "X-API-Key"


@dataclass
class ServeSettings:
    index: str
    model: str | None = None  # default: the model named in the index
    device: str | None = None
    api_key: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int = 4  # queries extracted at once
    reload_interval: float = 1.0  # seconds between checks for a newer index version
