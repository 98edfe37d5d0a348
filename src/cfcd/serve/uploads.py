"""Reading an uploaded image: bounded in bytes (the body) and in pixels (the header, before
decoding); every refusal is a 4xx naming the limit. Storing one under the upload directory,
named by its content unless the client gives a relative path."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path, PurePosixPath

from fastapi import HTTPException, UploadFile
from PIL import Image

from ..data.decoding import ImageError, ImageTooLarge, load_image
from .settings import ServeSettings

# Ids are SQLite / FAISS int64; anything outside is refused by validation (422), not by SQLite (500).
MAX_ID = 2**63 - 1


async def read_upload(upload: UploadFile, settings: ServeSettings) -> bytes:
    data = await upload.read(settings.max_upload_bytes + 1)
    if not data:
        raise HTTPException(400, "the uploaded file is empty")
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"upload exceeds the limit of {settings.max_upload_bytes} bytes")
    return data


def decode_upload(data: bytes, settings: ServeSettings) -> Image.Image:
    try:
        return load_image(data, settings.max_pixels)
    except ImageTooLarge as err:
        raise HTTPException(413, str(err).replace("<uploaded bytes>", "the upload")) from None
    except ImageError as err:
        raise HTTPException(400, f"the upload is not a readable image: {err}") from None


def _suffix(data: bytes) -> str:
    """The file suffix of the image format the bytes hold (read from the header)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "").lower()
    except (OSError, ValueError):
        fmt = ""
    return {"jpeg": ".jpg", "": ".img"}.get(fmt, f".{fmt}")


def _inside(root: Path, relative: str) -> Path:
    """``root / relative`` for a plain relative path; 400 for anything that could leave ``root``."""
    parts = PurePosixPath(relative).parts
    if (not parts or relative.startswith("/") or "\\" in relative or "\0" in relative
            or any(p in ("", ".", "..") for p in parts)):
        raise HTTPException(400, f"path {relative!r}: give a relative path inside the upload directory, "
                                 "such as 'trips/2024/beach.jpg' (no '..', no leading '/')")
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise HTTPException(400, f"path {relative!r} leads outside the upload directory")
    return path


def store_upload(data: bytes, upload_dir: str, relative: str | None) -> tuple[Path, bool]:
    """Write ``data`` under ``upload_dir`` (at ``relative``, default its content hash) and fsync
    it; returns (path, whether this call created the file). The same bytes already there are
    reused; other bytes at the path are refused (409)."""
    root = Path(upload_dir)
    path = _inside(root, relative) if relative else root / f"{hashlib.sha256(data).hexdigest()[:32]}{_suffix(data)}"
    if path.exists():
        if path.is_file() and path.read_bytes() == data:
            return path, False
        raise HTTPException(409, f"{relative or path.name}: another file already exists there; choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # unlike rename, never replaces a file another upload just put there
    except FileExistsError:
        raise HTTPException(409, f"{relative or path.name}: another upload is being stored there; retry") from None
    finally:
        os.unlink(tmp)
    return path, True
