"""Synthetic identities from unlabelled photos, for CFCD training without labels.

Each photo becomes one class whose images are strong augmentations of it, standing in for the
changes real photos of one place show (spec section 5 trains on such classes from GLDv2):

- viewpoint: a perspective warp moving each corner by up to ``warp`` of the image's side,
  then a crop of 35-100 % of the area (scale change, partial view) and a rotation of up to 15 deg;
- light: day (brightness, contrast, saturation x0.6-1.4) or, one time in three, night
  (gamma 1.6-2.6, brightness x0.35-0.7, a blue cast, sensor noise);
- blur (Gaussian, radius 0.5-2.5 px, one time in three) and JPEG re-compression (quality 30-90).

``make_identities(photos, out)`` writes ``out/<class>/<k>.jpg`` (view 0 is the photo itself),
a folder per class that ``cfcd train data.train=out`` reads. Every draw comes from a
``torch.Generator`` seeded by (seed, photo index, view), so the set is a function of its inputs.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from ..data.decoding import load_image
from ..errors import ConfigError
from .transforms import random_resized_crop_box

VIEW_AREA = (0.35, 1.0)
MAX_ROTATION = 15.0
NIGHT_CHANCE = 1 / 3
BLUR_CHANCE = 1 / 3


def _u(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g).item()


def _perspective_coeffs(src: Sequence[tuple[float, float]], dst: Sequence[tuple[float, float]]) -> list[float]:
    """PIL's 8 PERSPECTIVE coefficients mapping output corners ``dst`` to input corners ``src``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return np.linalg.solve(np.array(rows, float), np.array(rhs, float)).tolist()


def perspective_warp(img: Image.Image, g: torch.Generator, warp: float) -> Image.Image:
    """The view of ``img`` from another angle: each corner moved inwards by up to ``warp`` of
    the side, the result filling the same frame."""
    w, h = img.size
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    inward = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
    src = [(x + sx * _u(g, 0, warp) * w, y + sy * _u(g, 0, warp) * h) for (x, y), (sx, sy) in zip(corners, inward)]
    return img.transform((w, h), Image.PERSPECTIVE, _perspective_coeffs(src, corners), Image.BILINEAR)


def photometry(img: Image.Image, g: torch.Generator) -> Image.Image:
    """Day-time jitter or a night-time rendering (see the module docstring)."""
    if torch.rand((), generator=g).item() < NIGHT_CHANCE:
        x = np.asarray(img, dtype=np.float32) / 255.0
        x = x ** _u(g, 1.6, 2.6) * _u(g, 0.35, 0.7)
        x *= np.array([_u(g, 0.7, 0.9), _u(g, 0.8, 1.0), 1.0], np.float32)  # a blue cast
        noise = torch.randn(x.shape, generator=g).numpy() * _u(g, 0.005, 0.03)
        return Image.fromarray((np.clip(x + noise, 0, 1) * 255 + 0.5).astype(np.uint8))
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(_u(g, 0.6, 1.4))
    return img


def synthetic_view(img: Image.Image, g: torch.Generator, size: int = 384, warp: float = 0.25) -> Image.Image:
    """One strong augmentation of ``img`` (RGB), long side ``size``."""
    img = perspective_warp(img, g, warp)
    left, top, w, h = random_resized_crop_box(img.width, img.height, g, area=VIEW_AREA)
    img = img.crop((left, top, left + w, top + h))
    img = img.rotate(_u(g, -MAX_ROTATION, MAX_ROTATION), Image.BILINEAR, expand=False)
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    img = photometry(img, g)
    if torch.rand((), generator=g).item() < BLUR_CHANCE:
        img = img.filter(ImageFilter.GaussianBlur(_u(g, 0.5, 2.5)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(_u(g, 30, 90)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def make_identities(photos: Sequence[str | Path], out: str | Path, views: int = 6, size: int = 384, warp: float = 0.25,
                    seed: int = 0) -> list[Path]:
    """Write ``views`` images per photo to ``out/<NNNN-stem>/<k>.jpg`` (k = 0: the photo itself at
    long side ``size``); returns the class folders. An unreadable photo raises ``ImageError``
    naming it before anything is written."""
    if views < 2:
        raise ConfigError(f"views = {views}: a class needs at least two images (the photo and one view)")
    if not 0 <= warp < 0.5:
        raise ConfigError(f"warp = {warp}: expected a fraction of the side in [0, 0.5)")
    images = [load_image(p) for p in photos]  # fail on a bad file before writing anything
    out = Path(out)
    folders = []
    for i, (path, img) in enumerate(zip(photos, images)):
        folder = out / f"{i:04d}-{Path(path).stem}"
        folder.mkdir(parents=True, exist_ok=True)
        scale = size / max(img.size)
        img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR).save(
            folder / "0.jpg", quality=95)
        for k in range(1, views):
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + i * 1009 + k)
            synthetic_view(img, g, size, warp).save(folder / f"{k}.jpg", quality=95)
        folders.append(folder)
    return folders

