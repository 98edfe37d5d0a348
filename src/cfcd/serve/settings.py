"""Settings of the search service (imports nothing heavy: `cfcd serve --help` reads them)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
# Uploads are queries, not archives: 40 megapixels covers any camera's full-size photo, and
# stays under the decoder's own limit (cfcd.data.images.DEFAULT_MAX_PIXELS; a test checks).
DEFAULT_MAX_PIXELS = 40_000_000
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
