"""Reading an uploaded image: bounded in bytes (the body) and in pixels (the header, before
decoding); every refusal is a 4xx naming the limit."""

from __future__ import annotations

from fastapi import HTTPException, UploadFile
from PIL import Image

from ..data.images import ImageError, ImageTooLarge, load_image
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
