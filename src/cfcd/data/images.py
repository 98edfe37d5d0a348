"""Image decoding and normalisation: the one place where pixels enter cfcd.

Every image, whatever its file format or mode, leaves ``load_image`` as an 8-bit RGB
``PIL.Image`` with its EXIF orientation applied; ``to_tensor`` turns it into the network's
input convention, RGB floats in [0, 1]. Each model normalises its input with its own
backbone's mean/std (``CFCDNet.normalize``). The official CFCD code feeds BGR images with the
reversed statistics; its checkpoints are converted on load (see ``cfcd.model.weights``) so that
no other module ever deals with channel order.

A ``Preparation`` crops and resizes a decoded image into network inputs. It is part of a
model's identity (``ModelConfig.preparation``): the same weights give different descriptors
when the pixels are resampled differently (official CFCD checkpoints lose 0.03-0.3 cosine
at the small scales under Pillow's antialiased filter, issue 10).
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:
    import torch

# 64 megapixels: far above any photo a retrieval system needs at 1024 px, far below what
# exhausts memory when decoded (a "decompression bomb" is a tiny file declaring a huge canvas).
DEFAULT_MAX_PIXELS = 64_000_000

ImageSource = Union[str, os.PathLike, bytes, BinaryIO]


class ImageError(ValueError):
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


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``source`` (path, bytes or binary file) into an RGB image.

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
            img = Image.open(source)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLarge(
                    f"{name}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels; "
                    "downscale the image or raise max_pixels"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
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


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [0, 1] (the model normalises it)."""
    import torch  # here, not at the top: decoding and `cfcd --help` do not need torch

    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return arr.permute(2, 0, 1).float().div_(255.0)


Box = tuple[float, float, float, float]
Size = tuple[int, int]


class Preparation:
    """How a decoded image becomes network inputs: the crop of a query box, the size of each
    scaled copy, and the resampling. ``views(img, sizes, box)`` returns one [0, 1] RGB tensor
    (3, h, w) per (w, h) in ``sizes``, of the region ``box`` (integer pixels) when given."""

    name: str
    min_side: int

    def crop(self, img: Image.Image, bbox: Box) -> Image.Image:
        raise NotImplementedError

    def size(self, width: int, height: int, scale: float) -> Size:
        """(w, h) of the copy scaled by ``scale``: rounded to the nearest pixel (Python's
        round, as the official ``evaler/process.py``), each side at least ``min_side``."""
        return max(self.min_side, round(width * scale)), max(self.min_side, round(height * scale))

    def views(self, img: Image.Image, sizes: list[Size], box: tuple[int, int, int, int] | None = None) -> list[torch.Tensor]:
        raise NotImplementedError


class PillowPreparation(Preparation):
    """cfcd's own: 8-bit pixels resized with Pillow's bilinear filter, antialiased (its
    support widens with the reduction, so small scales are low-passed, not aliased); crop
    boxes rounded to the nearest pixel; sides of at least 32 px."""

    name = "cfcd"
    min_side = 32

    def crop(self, img: Image.Image, bbox: Box) -> Image.Image:
        x0, y0, x1, y1 = (round(v) for v in bbox)
        if x1 <= x0 or y1 <= y0:
            raise ImageError(f"empty crop box {bbox}")
        return img.crop((x0, y0, x1, y1))

    def views(self, img, sizes, box=None):
        full = box or (0, 0, *img.size)
        region = (full[2] - full[0], full[3] - full[1])
        return [to_tensor(img if size == region and box is None else img.resize(size, Image.BILINEAR, box=box))
                for size in sizes]


class OpenCVPreparation(Preparation):
    """The official CFCD extractor's (``evaler/infer.py``, ``evaler/process.py``): float32
    pixels resized with OpenCV's ``INTER_LINEAR``, i.e. bilinear from the two nearest source
    pixels without antialiasing, which is what ``F.interpolate(mode="bilinear",
    align_corners=False, antialias=False)`` computes (the two agree within 0.007/255 on
    float32); query boxes truncated with ``int()`` and clipped to the image as NumPy slicing
    does; no minimum side."""

    name = "official"
    min_side = 1

    def crop(self, img: Image.Image, bbox: Box) -> Image.Image:
        w, h = img.size
        x0, y0, x1, y1 = (int(v) for v in bbox)
        x0, x1 = min(max(x0, 0), w), min(max(x1, 0), w)
        y0, y1 = min(max(y0, 0), h), min(max(y1, 0), h)
        if x1 <= x0 or y1 <= y0:
            raise ImageError(f"empty crop box {bbox} in a {w}x{h} image")
        return img.crop((x0, y0, x1, y1))

    def views(self, img, sizes, box=None):
        import torch.nn.functional as F

        x = to_tensor(img if box is None else img.crop(box))
        return [x.clone() if (h, w) == tuple(x.shape[1:]) else
                F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=False)[0]
                for w, h in sizes]


PREPARATIONS: dict[str, Preparation] = {p.name: p for p in (PillowPreparation(), OpenCVPreparation())}


def get_preparation(name: str) -> Preparation:
    try:
        return PREPARATIONS[name]
    except KeyError:
        raise ValueError(f"image preparation {name!r}: choose one of {', '.join(PREPARATIONS)}") from None


def list_images(folder: Union[str, Path]) -> list[Path]:
    """All image files under ``folder`` (recursive), sorted for a stable order."""
    root = Path(folder)
    if not root.is_dir():
        raise ImageError(f"{root}: not a directory")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def gather_images(items) -> list[Path]:
    """Image files named by ``items``: each a file, or a folder searched recursively
    (``list_images``), in the order given; a name that is neither raises ``FileNotFoundError``."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            paths += list_images(item)
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return paths


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
