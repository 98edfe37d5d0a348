"""JPEG thumbnails of indexed images (the service's /thumbnails and `cfcd duplicates --html`)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from ..data.decoding import DEFAULT_MAX_PIXELS, load_image


def thumbnail_jpeg(path: str | Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """The image at ``path`` scaled to fit ``size`` x ``size``, as JPEG bytes; ``ImageError`` /
    ``ImageTooLarge`` (from ``cfcd.data.decoding``) when it cannot be decoded within ``max_pixels``."""
    img = load_image(path, max_pixels)
    img.thumbnail((size, size), Image.BILINEAR)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()
