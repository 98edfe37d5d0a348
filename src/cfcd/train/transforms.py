"""Training augmentation (spec section 5): random resized crop, horizontal flip, PCA lighting,
then ``cfcd.data.images.to_tensor`` (RGB in [0, 1]; the model normalises with its backbone's
mean/std). Crops are
resampled by the model's image preparation (``cfcd.data.images.Preparation``), so a model trains
on pixels made the way its descriptors will be extracted.

Every random draw comes from an explicit ``torch.Generator`` so that a sample's augmentation is a
function of its seed alone (see ``TrainDataset``).
"""

from __future__ import annotations

import math

import torch
from PIL import Image

from ..data.images import get_preparation
from ..errors import ConfigError

CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
LIGHTING_STD = 0.1
# Ranges of the night-like exposure change (``exposure_change``): exposure gain, gamma, saturation.
EXPOSURE_GAIN = (0.3, 1.0)
EXPOSURE_GAMMA = (1.0, 2.0)
EXPOSURE_SATURATION = (0.3, 1.0)
# PCA of ImageNet pixel colours in RGB order, on [0, 1] values (Krizhevsky et al. 2012; the
# values every ImageNet training recipe uses): eigenvalues and unit eigenvectors as columns.
IMAGENET_EIGVALS = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVECS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def random_resized_crop_box(
    width: int, height: int, generator: torch.Generator, area=CROP_AREA, aspect=CROP_ASPECT, attempts: int = 10
) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a crop covering a uniform fraction of the area in ``area`` with a
    log-uniform aspect ratio in ``aspect``; after ``attempts`` misses, the largest centred crop
    whose aspect ratio lies in the range."""
    total = width * height
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(attempts):
        target = total * _uniform(generator, *area)
        ratio = math.exp(_uniform(generator, log_low, log_high))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            return left, top, w, h
    ratio = width / height
    if ratio < aspect[0]:
        w, h = width, round(width / aspect[0])
    elif ratio > aspect[1]:
        w, h = round(height * aspect[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def lighting_offset(generator: torch.Generator, std: float = LIGHTING_STD) -> torch.Tensor:
    """PCA lighting (AlexNet): an RGB offset V (a * lambda), a ~ N(0, std^2), added to every pixel
    of a [0, 1] image."""
    a = torch.randn(3, generator=generator) * std
    return torch.tensor(IMAGENET_EIGVECS) @ (a * torch.tensor(IMAGENET_EIGVALS))


def _log_uniform(generator: torch.Generator, low: float, high: float) -> float:
    return math.exp(_uniform(generator, math.log(low), math.log(high)))


def exposure_change(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A night-like re-exposure of a [0, 1] RGB image: x' = e * g(x)^gamma, where g blends each pixel
    with its grey value (saturation c: g(x) = c x + (1 - c) grey), with the gain e, the gamma and c
    drawn log-uniformly from ``EXPOSURE_GAIN``, ``EXPOSURE_GAMMA`` and ``EXPOSURE_SATURATION``.
    Gamma > 1 deepens the shadows more than the lights, as a night photo of a lit facade does."""
    gain = _log_uniform(generator, *EXPOSURE_GAIN)
    gamma = _log_uniform(generator, *EXPOSURE_GAMMA)
    saturation = _log_uniform(generator, *EXPOSURE_SATURATION)
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    x = (saturation * x + (1 - saturation) * grey).clamp(0, 1)
    return gain * x.pow(gamma)


class TrainTransform:
    """``transform(image, generator)`` -> RGB tensor (3, size, size), [0, 1] plus lighting noise."""

    def __init__(self, size: int, lighting_std: float = LIGHTING_STD, flip: bool = True, preparation: str = "cfcd",
                 crop_area: tuple[float, float] = CROP_AREA, exposure: float = 0.0):
        if not 0 <= exposure <= 1:
            raise ConfigError(f"data.exposure = {exposure!r}: give the probability (0 to 1) of a night-like exposure change")
        try:
            low, high = (float(v) for v in crop_area)
            valid = 0 < low <= high <= 1
        except (TypeError, ValueError):
            valid = False
        if not valid:
            shown = list(crop_area) if isinstance(crop_area, (list, tuple)) else crop_area
            raise ConfigError(f"data.crop_area = {shown!r}: give [low, high] with 0 < low <= high <= 1, e.g. [0.5, 1.0]")
        self.size = size
        self.crop_area = (low, high)
        self.lighting_std = lighting_std
        self.flip = flip
        self.exposure = exposure
        self.preparation = get_preparation(preparation)

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        left, top, w, h = random_resized_crop_box(*image.size, generator, area=self.crop_area)
        x = self.preparation.views(image, [(self.size, self.size)], box=(left, top, left + w, top + h))[0]
        if self.flip and torch.rand((), generator=generator).item() < 0.5:
            x = x.flip(-1)
        if self.exposure > 0 and torch.rand((), generator=generator).item() < self.exposure:
            x = exposure_change(x, generator)
        if self.lighting_std > 0:
            x += lighting_offset(generator, self.lighting_std).view(3, 1, 1)
        return x

    def __repr__(self) -> str:
        return (f"TrainTransform(size={self.size}, crop_area={self.crop_area}, lighting_std={self.lighting_std}, flip={self.flip}, "
                f"exposure={self.exposure}, "
                f"preparation={self.preparation.name!r})")


class EvalTransform:
    """Deterministic view for predictions: shorter side to ``size``, centre crop ``size`` x ``size``."""

    def __init__(self, size: int, preparation: str = "cfcd"):
        self.size = size
        self.preparation = get_preparation(preparation)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        w, h = image.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        x = self.preparation.views(image, [(nw, nh)])[0]
        return x[:, top:top + self.size, left:left + self.size].contiguous()
