"""Image decoding: the one place where pixels enter cfcd, within a pixel limit.

Every image, whatever its file format or mode, leaves ``load_image`` as an 8-bit RGB
``PIL.Image`` with its EXIF orientation applied (a photo taken upright is seen upright, and
boxes are in its upright coordinates); ``decode_image`` may decode a JPEG at 1/2, 1/4 or 1/8 of
its size when the caller needs no more (issue 20: a phone photo costs no more to decode than
the network costs to run); HEIC/HEIF photos are read through ``pillow-heif`` when it is
installed (``pip install 'cfcd[heif]'``). A canvas over ``DEFAULT_MAX_PIXELS`` (or Pillow's
decompression-bomb limit) is refused from its header, before it is decoded, and anything that
is not a complete image raises ``ImageError`` naming the file. ``cfcd.data.images`` turns the
decoded image into network inputs.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Callable, Union

import numpy as np
from PIL import Image

from ..errors import InputError

# 64 megapixels: far above any photo a retrieval system needs at 1024 px, far below what
# exhausts memory when decoded (a "decompression bomb" is a tiny file declaring a huge canvas).
DEFAULT_MAX_PIXELS = 64_000_000

ImageSource = Union[str, os.PathLike, bytes, BinaryIO]


class ImageError(InputError):
    """An input that is not a decodable image; the message names the file and the cause."""


class ImageTooLarge(ImageError):
    """An image whose canvas exceeds the pixel limit (ours, or Pillow's decompression-bomb
    limit), refused from its header before it is decoded."""


# What Pillow's decoders raise on malformed data besides OSError: a plugin parsing a
# truncated or hostile header can fail with any of these.
_CORRUPT = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError, ZeroDivisionError)


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", "<uploaded bytes>")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha composited onto white)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        scale = 255.0 / hi if hi > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


Box = tuple[float, float, float, float]
Size = tuple[int, int]

# The transposition that shows an image upright, per EXIF orientation (tag 0x0112), as
# Pillow's ImageOps.exif_transpose applies it.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = {Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90}


def _transpose_box(box: Box, size: Size, method: Image.Transpose) -> Box:
    """``box`` in an image of ``size``, in the coordinates of that image after ``img.transpose(method)``."""
    w, h = size
    T = Image.Transpose
    move = {
        T.FLIP_LEFT_RIGHT: lambda x, y: (w - x, y),
        T.FLIP_TOP_BOTTOM: lambda x, y: (x, h - y),
        T.ROTATE_180: lambda x, y: (w - x, h - y),
        T.ROTATE_90: lambda x, y: (y, w - x),  # counter-clockwise
        T.ROTATE_270: lambda x, y: (h - y, x),
        T.TRANSPOSE: lambda x, y: (y, x),
        T.TRANSVERSE: lambda x, y: (h - y, w - x),
    }[method]
    (ax, ay), (bx, by) = move(box[0], box[1]), move(box[2], box[3])
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


@dataclass(frozen=True)
class Decoded:
    """A decoded image. ``image``: upright 8-bit RGB, possibly decoded at a reduced size;
    ``size``: the upright size of the image as stored, in whose pixel coordinates boxes are
    given; ``frame``: where that full image lies in ``image``'s coordinates ((0, 0, *size)
    unless reduced, when an edge row and column of ``image`` may cover only part of a block)."""

    image: Image.Image
    size: Size
    frame: Box

    @classmethod
    def full(cls, image: Image.Image) -> "Decoded":
        return cls(image, image.size, (0, 0, *image.size))

    @property
    def reduced(self) -> bool:
        return self.image.size != self.size

    def region(self, box: Box) -> tuple[Image.Image, Box]:
        """The pixels around ``box`` (full-size coordinates): the part of ``image`` covering
        it, whole pixels (outside the image: black, as ``Image.crop``), and where ``box``
        lies in that part, for ``Image.resize(size, box=...)``."""
        fx0, fy0, fx1, fy1 = self.frame
        sx, sy = (fx1 - fx0) / self.size[0], (fy1 - fy0) / self.size[1]
        x0, y0, x1, y1 = fx0 + box[0] * sx, fy0 + box[1] * sy, fx0 + box[2] * sx, fy0 + box[3] * sy
        hull = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
        part = self.image if hull == (0, 0, *self.image.size) else self.image.crop(hull)
        return part, (x0 - hull[0], y0 - hull[1], x1 - hull[0], y1 - hull[1])


# Major brands of HEIF files (ISO/IEC 23008-12): HEVC-coded images and sequences, and the
# generic image brand; pillow-heif decodes them.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}


def _is_heif(source) -> bool:
    """Whether ``source`` (a path or a seekable binary file) starts like a HEIF file."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            head = f.read(12)
    else:
        where = source.tell()
        head = source.read(12)
        source.seek(where)
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _enable_heif(name: str) -> None:
    """Let Pillow open HEIF files (pillow-heif's opener, registered once), or ``ImageError``
    saying how to install it."""
    try:
        import pillow_heif
    except ImportError:
        raise ImageError(f"{name}: a HEIC/HEIF image; reading it needs pillow-heif: pip install 'cfcd[heif]'") from None
    pillow_heif.register_heif_opener()


def _open(source, name: str) -> Image.Image:
    """``Image.open``, retried once with HEIF support when the file is HEIF (not by default:
    importing pillow-heif is not free, and most collections hold none)."""
    where = None if isinstance(source, (str, os.PathLike)) else source.tell()
    try:
        return Image.open(source)
    except Image.UnidentifiedImageError:
        if where is not None:
            source.seek(where)
        if not _is_heif(source):
            raise
        _enable_heif(name)
        return Image.open(source)


def decode_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS,
                 need: Callable[[Size], Size | None] | None = None) -> Decoded:
    """Decode ``source`` (path, bytes or binary file) into an upright RGB image.

    ``need``, given the upright size of the stored image, returns the smallest size (upright,
    of the whole image) its caller will resample from, or None for the full size. A JPEG is
    then decoded at 1/2, 1/4 or 1/8 of its size (the decoder's DCT scaling: a fraction of a
    full decode's time and memory) when that is still at least ``need``; ``Decoded.region``
    maps boxes onto the smaller image. Other formats are decoded at full size: Pillow's PNG,
    WebP, TIFF, GIF and BMP decoders, and pillow-heif's HEIF one, have no reduced decode.

    Raises ``ImageError`` naming the file and the cause for anything that is not a complete
    image: missing files, directories, other formats, truncated data; ``ImageTooLarge`` (a
    subclass) for a canvas over ``max_pixels`` or Pillow's decompression-bomb limit.
    """
    name = _describe(source)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open(source, name)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLarge(
                    f"{name}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels; "
                    "downscale the image or raise max_pixels"
                )
            upright = _UPRIGHT.get(img.getexif().get(0x0112, 1))
            swap = upright in _SWAPS_SIDES
            frame: Box = (0, 0, w, h)
            wanted = need((h, w) if swap else (w, h)) if need else None
            if wanted:
                ww, wh = wanted[::-1] if swap else wanted
                if w // ww >= 2 and h // wh >= 2:
                    drafted = img.draft("RGB", (ww, wh))
                    if drafted:
                        frame = drafted[1]
            img.load()
            if upright is not None:
                frame = _transpose_box(frame, img.size, upright)
                img = img.transpose(upright)
            return Decoded(_to_rgb(img), (h, w) if swap else (w, h), frame)
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError(f"{name}: no such file") from err
    except IsADirectoryError as err:
        raise ImageError(f"{name}: is a directory, not an image") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's own limit (MAX_IMAGE_PIXELS) fired from the header, before ours could.
        found = re.search(r"\((\d+) pixels\)", str(err))
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
        raise ImageTooLarge(
            f"{name}: {found.group(1) if found else 'a canvas of more than ' + str(limit)} pixels exceeds the limit "
            f"of {limit} pixels (Pillow's decompression-bomb check); downscale the image"
        ) from err
    except Image.UnidentifiedImageError as err:
        raise ImageError(f"{name}: not an image format Pillow can read ({err})") from err
    except _CORRUPT as err:
        raise ImageError(f"{name}: corrupt or truncated image data ({err})") from err


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``source`` (path, bytes or binary file) into an upright RGB image at its full
    size; errors as ``decode_image``."""
    return decode_image(source, max_pixels).image
