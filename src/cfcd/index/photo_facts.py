"""What a person needs to decide between duplicate photos, read from the files themselves.

``read_facts``: upright pixel size, format, file size, modification time, EXIF tag count and
date, from the file's header (no pixels are decoded). ``pixel_hash``: a hash of the decoded
upright RGB pixels (``cfcd.data.decoding``), so that a PNG re-save, a JPEG whose metadata
changed or a copy stored rotated with an EXIF tag hash alike while a byte hash tells them apart.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from PIL import Image

from ..data.decoding import ImageError, decode_image

# EXIF tags: orientation (0th IFD), DateTimeOriginal (Exif IFD), DateTime (0th IFD), and the
# pointers to the Exif and GPS IFDs.
ORIENTATION, DATE_TAKEN, DATE_CHANGED, EXIF_IFD, GPS_IFD = 0x0112, 0x9003, 0x0132, 0x8769, 0x8825
# Tags that say nothing about the photo: a copy stored rotated carries an orientation and no more.
NOT_METADATA = {ORIENTATION, EXIF_IFD, GPS_IFD}
# Orientations whose upright view swaps width and height.
SWAPS_SIDES = {5, 6, 7, 8}


@dataclass(frozen=True)
class PhotoFacts:
    """``width`` x ``height``: upright pixels (0 x 0 when the file cannot be read); ``format``:
    Pillow's name (JPEG, PNG, HEIF ...); ``exif_tags``: how many EXIF tags it carries; ``date``:
    when it was taken (EXIF) or else last modified, ISO 8601."""

    path: str
    width: int = 0
    height: int = 0
    format: str | None = None
    file_size: int | None = None
    mtime: float | None = None
    exif_tags: int = 0
    date: str | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict:
        return asdict(self)


def _exif_date(value) -> str | None:
    try:
        return datetime.strptime(str(value).strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _open(path: str) -> Image.Image:
    """``Image.open``, retried with pillow-heif's opener (when installed) for a HEIC/HEIF photo:
    the format the keep rules favour must not go unread."""
    try:
        return Image.open(path)
    except Image.UnidentifiedImageError:
        import pillow_heif  # not installed: read_facts leaves the size unknown

        pillow_heif.register_heif_opener()
        return Image.open(path)


def read_facts(path: str) -> PhotoFacts:
    """The facts of the image file at ``path``; only what could be read (a missing or
    unreadable file gives its path and no more)."""
    try:
        st = os.stat(path)
    except OSError:
        return PhotoFacts(path)
    modified = datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds")
    try:
        with _open(path) as img:  # reads the header only
            exif = img.getexif()
            w, h = img.size
            fmt = img.format
    except Exception:  # not an image Pillow reads (HEIC without pillow-heif, damaged): size unknown
        return PhotoFacts(path, file_size=st.st_size, mtime=st.st_mtime, date=modified)
    if exif.get(ORIENTATION) in SWAPS_SIDES:
        w, h = h, w
    inner = exif.get_ifd(EXIF_IFD)
    tags = len(set(exif) - NOT_METADATA) + len(inner) + len(exif.get_ifd(GPS_IFD))
    taken = _exif_date(inner.get(DATE_TAKEN) or exif.get(DATE_CHANGED) or "")
    return PhotoFacts(path, w, h, fmt, st.st_size, st.st_mtime, tags, taken or modified)


def pixel_hash(path: str) -> str | None:
    """SHA-256 of the upright RGB pixels and their size, or None when the file cannot be decoded."""
    try:
        img = decode_image(path).image
    except ImageError:
        return None
    return hashlib.sha256(f"{img.size}".encode() + img.tobytes()).hexdigest()
