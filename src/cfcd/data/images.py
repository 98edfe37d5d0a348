"""Images made ready for the network, and image files found in folders.

Pixels enter cfcd through ``cfcd.data.decoding`` (``load_image``, ``decode_image``: 8-bit RGB,
upright, within a pixel limit; its names are importable from here too). ``to_tensor`` turns a
decoded image into the network's input convention, RGB floats in [0, 1]. Each model normalises
its input with its own backbone's mean/std (``CFCDNet.normalize``). The official CFCD code feeds
BGR images with the reversed statistics; its checkpoints are converted on load (see
``cfcd.model.weights``) so that no other module ever deals with channel order.

A ``Preparation`` crops and resizes a decoded image into network inputs. It is part of a
model's identity (``ModelConfig.preparation``): the same weights give different descriptors
when the pixels are resampled differently (official CFCD checkpoints lose 0.03-0.3 cosine
at the small scales under Pillow's antialiased filter, issue 10). ``list_images`` and
``gather_images`` find the image files (``IMAGE_SUFFIXES``) under folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image

from ..errors import ConfigError, NotFound
from .decoding import Box, ImageError, Size

if TYPE_CHECKING:
    import torch


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [0, 1] (the model normalises it)."""
    import torch  # here, not at the top: decoding and `cfcd --help` do not need torch

    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return arr.permute(2, 0, 1).float().div_(255.0)


class Preparation:
    """How a decoded image becomes network inputs: the crop of a query box, the size of each
    scaled copy, and the resampling. ``views(img, sizes, box)`` returns one [0, 1] RGB tensor
    (3, h, w) per (w, h) in ``sizes``, of the region ``box`` when given (integer pixels; the
    ``cfcd`` preparation also takes fractions, as a reduced decode's boxes have)."""

    name: str
    min_side: int
    # A JPEG is decoded at a reduced size (``decode_image``'s ``need``) only when that size is
    # still at least ``decode_margin`` times the largest view; None: always at full size.
    decode_margin: float | None

    def crop_box(self, size: Size, bbox: Box) -> tuple[int, int, int, int]:
        """The whole-pixel box that ``crop`` cuts from an image of ``size`` for ``bbox``."""
        raise NotImplementedError

    def crop(self, img: Image.Image, bbox: Box) -> Image.Image:
        return img.crop(self.crop_box(img.size, bbox))

    def size(self, width: int, height: int, scale: float) -> Size:
        """(w, h) of the copy scaled by ``scale``: rounded to the nearest pixel (Python's
        round, as the official ``evaler/process.py``), each side at least ``min_side``."""
        return max(self.min_side, round(width * scale)), max(self.min_side, round(height * scale))

    def views(self, img: Image.Image, sizes: list[Size], box: Box | None = None) -> list[torch.Tensor]:
        raise NotImplementedError


class PillowPreparation(Preparation):
    """cfcd's own: 8-bit pixels resized with Pillow's bilinear filter, antialiased (its
    support widens with the reduction, so small scales are low-passed, not aliased); crop
    boxes rounded to the nearest pixel; sides of at least 32 px. A JPEG is decoded at 1/2, 1/4
    or 1/8 of its size (DCT scaling) when that is still at least twice the largest view, then
    resized as any other image: the DCT's own downscaling aliases, and decoding straight to the
    view's size lost 1.1 to 1.7 mAP on hard photos, while the antialiased resize from twice the
    size loses nothing (docs/results.md, "Decoding phone photos")."""

    name = "cfcd"
    min_side = 32
    decode_margin = 2.0

    def crop_box(self, size, bbox):
        x0, y0, x1, y1 = (round(v) for v in bbox)
        if x1 <= x0 or y1 <= y0:
            raise ImageError(f"empty crop box {bbox}")
        return x0, y0, x1, y1

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
    does; no minimum side; always the full decode (the official code reads with
    ``cv2.imread``)."""

    name = "official"
    min_side = 1
    decode_margin = None

    def crop_box(self, size, bbox):
        w, h = size
        x0, y0, x1, y1 = (int(v) for v in bbox)
        x0, x1 = min(max(x0, 0), w), min(max(x1, 0), w)
        y0, y1 = min(max(y0, 0), h), min(max(y1, 0), h)
        if x1 <= x0 or y1 <= y0:
            raise ImageError(f"empty crop box {bbox} in a {w}x{h} image")
        return x0, y0, x1, y1

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
        raise ConfigError(f"image preparation {name!r}: choose one of {', '.join(PREPARATIONS)}") from None


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
            raise NotFound(f"{item}: no such file or folder")
    return paths


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".heic", ".heif"}
