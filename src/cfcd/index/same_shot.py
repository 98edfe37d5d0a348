"""Whether two photos are one shot, from their pixels: the check behind the ``exact`` and
``near`` tiers of ``cfcd.index.duplicates``.

Global descriptors cannot tell a resized or re-encoded copy from another shot of the same
scene (two frames of a burst score as high as a 10 % crop). Pixels can: a near copy is the
original up to a crop of each side, a scaling and a change of brightness or encoding, so one of
the two, scaled by s (its aspect kept) and placed inside the other, matches it almost exactly,
while another shot differs by parallax and moving things wherever it is placed. The score is
the best normalised cross-correlation of the grey, slightly blurred thumbnails,

    ncc(a, b) = max over s in [MIN_SCALE, 1], placements p, and both roles of a and b of
                sum((A_p - mean A_p) (B_s - mean B_s)) / (|A_p - mean A_p| |B_s - mean B_s|),

A_p the window of the larger-content thumbnail under the placed one, B_s the other scaled by s;
it is invariant to brightness and contrast. Scales are searched on COARSE-pixel thumbnails, then
refined around the best on THUMB-pixel ones. ``NEAR_PIXELS`` and the constants were measured on
planted copies and other shots of instances-dev and instances-hard (bench/duplicate_tiers.py).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from ..data.decoding import ImageError, decode_image
from .photo_facts import pixel_hash, read_facts

# Two photos are one shot from this aligned correlation on: measured (docs/results.md,
# "Duplicate tiers"): same-shot pairs scored >= 0.975, other shots <= 0.964 on both sets.
NEAR_PIXELS = 0.97
THUMB, COARSE, BLUR = 160, 64, 1.0
# The smallest scale searched: crops of up to 15 % of a side (the near tier's "small crop").
MIN_SCALE, STEP, FINE_STEP = 0.85, 0.0125, 0.0025
# Grey photos kept in memory while a grouping runs (2 x THUMB on the long side: about 80 kB
# each, 80 MB in all).
CACHED = 1024


def _scaled(size: tuple[int, int], side: int) -> tuple[int, int]:
    f = min(1.0, side / max(size))
    return max(1, round(size[0] * f)), max(1, round(size[1] * f))


def grey(path: str) -> Image.Image | None:
    """The upright photo in grey at a long side of 2 x THUMB (a JPEG is decoded at a reduced
    size: only the thumbnails are needed), or None when it cannot be decoded."""
    try:
        img = decode_image(path, need=lambda size: _scaled(size, 4 * THUMB)).image.convert("L")
    except ImageError:
        return None
    return img.resize(_scaled(img.size, 2 * THUMB), Image.Resampling.BOX)


def _array(img: Image.Image, w: int, h: int) -> np.ndarray:
    small = img.resize((w, h), Image.Resampling.BOX).filter(ImageFilter.GaussianBlur(BLUR))
    return np.asarray(small, dtype=np.float64)


def _fit(img: Image.Image, side: int) -> tuple[int, int]:
    w, h = img.size
    f = side / max(w, h)
    return max(8, round(w * f)), max(8, round(h * f))


class _Placements:
    """A thumbnail against which templates are placed: its spectrum and integral images,
    computed once for every scale tried."""

    def __init__(self, big: np.ndarray):
        self.shape = big.shape
        self.spectrum = np.fft.rfft2(big)
        self.sums = [np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1) for x in (big, big * big)]

    def _windows(self, c: np.ndarray, h: int, w: int) -> np.ndarray:
        """Sums of every h x w window, from the integral image ``c``."""
        return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]

    def ncc(self, t: np.ndarray) -> np.ndarray:
        """Normalised cross-correlation of ``t`` at every placement (FFT for the products,
        integral images for the windows' means and norms)."""
        (H, W), (h, w) = self.shape, t.shape
        t = t - t.mean()
        products = np.fft.irfft2(self.spectrum * np.fft.rfft2(t[::-1, ::-1], s=(H, W)), s=(H, W))[h - 1:, w - 1:]
        total, squares = (self._windows(c, h, w) for c in self.sums)
        spread = np.sqrt(np.maximum(squares - total * total / (h * w), 1e-6))
        return products / (spread * max(float(np.sqrt((t * t).sum())), 1e-6))  # no BLAS call: threads cost more here


def _best_inside(a: Image.Image, b: Image.Image, side: int, scales: np.ndarray) -> tuple[float, float | None]:
    """(best correlation, its scale) of ``b`` scaled by each of ``scales`` and placed inside
    ``a``, both at ``side`` pixels (long side of ``a``)."""
    w, h = _fit(a, side)
    placements = _Placements(_array(a, w, h))
    aspect = b.size[0] / b.size[1]
    best: tuple[float, float | None] = (-1.0, None)
    for s in scales:
        bw = round(s * w)
        bh = min(h, round(bw / aspect))
        if bw > w or bw < 4 or bh < 4 or bh < (MIN_SCALE - STEP) * h:
            continue
        t = _array(b, bw, bh)
        if t.std() < 1e-3:  # a flat image correlates with nothing
            continue
        score = float(placements.ncc(t).max())
        if score > best[0]:
            best = (score, float(s))
    return best


def aligned_similarity(a: Image.Image, b: Image.Image) -> float:
    """``ncc(a, b)`` of the module's docstring, in [-1, 1]; -1 when no placement fits."""
    coarse = np.arange(MIN_SCALE, 1 + 1e-9, STEP)
    (score, scale), big, small = max(((_best_inside(x, y, COARSE, coarse), x, y) for x, y in ((a, b), (b, a))),
                                     key=lambda c: c[0][0])
    if scale is None:
        return -1.0
    fine = np.arange(scale - STEP, scale + STEP + 1e-9, FINE_STEP)
    return _best_inside(big, small, THUMB, fine[fine <= 1 + 1e-9])[0]


class PixelChecks:
    """Pixel checks between indexed images, each file read once: ``same_pixels`` (exact
    copies: equal upright sizes from the headers, then equal pixel hashes) and ``one_shot``
    (``aligned_similarity`` >= ``NEAR_PIXELS``). ``path_of`` maps an id to its file."""

    def __init__(self, path_of: Callable[[int], str], near_pixels: float = NEAR_PIXELS):
        self.path_of = path_of
        self.near_pixels = near_pixels
        self.sizes: dict[int, tuple[int, int]] = {}
        self.hashes: dict[int, str | None] = {}
        self.pairs: dict[tuple[int, int], bool] = {}
        self.grey = lru_cache(CACHED)(lambda i: grey(self.path_of(i)))

    def same_pixels(self, a: int, b: int) -> bool:
        for i in (a, b):
            if i not in self.sizes:
                facts = read_facts(self.path_of(i))
                self.sizes[i] = (facts.width, facts.height)
        if self.sizes[a] != self.sizes[b] or self.sizes[a] == (0, 0):
            return False
        for i in (a, b):
            if i not in self.hashes:
                self.hashes[i] = pixel_hash(self.path_of(i))
        return self.hashes[a] is not None and self.hashes[a] == self.hashes[b]

    def one_shot(self, a: int, b: int) -> bool:
        key = (min(a, b), max(a, b))
        if key not in self.pairs:
            x, y = self.grey(a), self.grey(b)
            self.pairs[key] = x is not None and y is not None and aligned_similarity(x, y) >= self.near_pixels
        return self.pairs[key]
