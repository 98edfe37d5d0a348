"""A projection head learned from unlabelled photos (``cfcd whiten``): their raw GeM vectors,
prepared exactly as ``cfcd.extract`` prepares images, and the PCA / whitening of
``cfcd.model.whitening`` (the formula is in its docstring).

With labelled photos, ``learn_supervised_head`` learns the supervised (learned) whitening of
``cfcd.model.whitening.learn_supervised_whitening`` instead, its setting chosen on the photos
themselves by ``cfcd.train.supervised.choose_supervised_whitening`` (inner identity folds).

The photos are seen with ``ExtractionSettings`` like any extraction; by default
``cfcd.settings.WHITENING_SETTINGS`` (three scales of a 512 px long side).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import ConfigError, InputError
from .extraction import inference_copy, prepare
from .model.net import CFCDNet
from .model.pooling import gem
from .model.whitening import Whitening, learn_supervised_whitening, learn_whitening, region_boxes, with_head
from .settings import WHITENING_SETTINGS, ExtractionSettings


@torch.inference_mode()
def gem_vectors(model: CFCDNet, images: Sequence, settings: ExtractionSettings, regions: Sequence[int] = (),
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Raw GeM vectors (before any head) of ``images`` at each of ``settings.scales``, prepared
    exactly as ``cfcd.extract`` prepares them with ``settings`` (an unset preparation is the
    model's): ``(global (n, S, C), regional (n, S, R, C))`` with S the scales and R the windows of
    ``region_boxes(levels=regions)`` (R = 0 without ``regions``), float32."""
    from tqdm import tqdm

    model = inference_copy(model.eval())  # BatchNorm folded, channels-last: as cfcd.extract runs it
    settings = settings.for_model(model)
    scales = settings.scales
    c = model.backbone_channels
    n_regions = len(region_boxes(8, 8, regions)) if regions else 0
    glob = np.zeros((len(images), len(scales), c), np.float32)
    reg = np.zeros((len(images), len(scales), n_regions, c), np.float32)
    p = model.pool.p
    caught = []  # (feature map, GeM) at the pooling layer of the model's own forward (input preparation included)
    hook = model.pool.register_forward_hook(lambda module, args, out: caught.append((args[0], out)))
    try:
        for i, item in enumerate(tqdm(images, unit="img", desc="GeM", disable=not progress)):
            for s, x in enumerate(prepare(item, settings)):
                caught.clear()
                model(x[None].contiguous(memory_format=torch.channels_last))
                f4, pooled = caught[0]
                glob[i, s] = pooled[0].numpy()
                if regions:
                    boxes = region_boxes(f4.shape[2], f4.shape[3], regions)
                    if len(boxes) != n_regions:  # a map too small for distinct windows: the global vector
                        reg[i, s] = glob[i, s]
                        continue
                    reg[i, s] = torch.cat([gem(f4[:, :, y0:y1, x0:x1], p) for y0, y1, x0, x1 in boxes]).numpy()
    finally:
        hook.remove()
    return glob, reg


def learn_head(model: CFCDNet, images: Sequence, dim: int = 512, power: float = 0.5, shrinkage: float = 1.0,
               regions: Sequence[int] = (2, 3), settings: ExtractionSettings = WHITENING_SETTINGS,
               progress: bool = False) -> tuple[CFCDNet, Whitening]:
    """``model`` with a ``dim``-d head learned without labels from unlabelled ``images`` (paths or
    PIL images): the GeM vectors of every image at every scale of ``settings``, plus GeM over the
    windows of ``region_boxes(levels=regions)``, then ``learn_whitening``. Returns the new model
    and the head."""
    if not len(images):
        raise InputError("learning a head needs unlabelled photos; got none")
    if not isinstance(model, CFCDNet):
        raise ConfigError(f"{getattr(model, 'name', 'this model')}: a head is learned on one network's GeM vectors; "
                         "name one network, e.g. --model mobilenet_v2-imagenet")
    glob, reg = gem_vectors(model, images, settings, regions, progress)
    c = glob.shape[-1]
    vectors = np.concatenate([glob.reshape(-1, c), reg.reshape(-1, c)])
    whitening = learn_whitening(vectors, dim, power, shrinkage)
    return with_head(model, whitening), whitening


def labelled_vectors(glob: np.ndarray, labels: Sequence[str], reg: np.ndarray | None):
    """(vectors (n S, C), their labels, regional vectors (n S R, C) or None): every scale of a
    photo is a vector of its identity; the regions are unlabelled."""
    n, scales, c = glob.shape
    return (glob.reshape(-1, c), np.repeat(np.asarray(labels, dtype=object), scales),
            None if reg is None or not reg.size else reg.reshape(-1, c))


def learn_supervised_head(model: CFCDNet, images: Sequence, labels: Sequence[str], dim: int = 512,
                          shrinkage: float = 1.0, power: float = 0.0, regions: Sequence[int] = (2, 3),
                          settings: ExtractionSettings = WHITENING_SETTINGS, progress: bool = False,
                          ) -> tuple[CFCDNet, Whitening]:
    """``model`` with a ``dim``-d head learned from labelled ``images`` (paths or PIL images; one
    identity label each) by ``learn_supervised_whitening`` at ``shrinkage`` and ``power``: the
    GeM vectors of every image at every scale of ``settings`` are the labelled vectors (the
    scales of one photo and the photos of one identity make the matching pairs), GeM over the
    windows of ``region_boxes(levels=regions)`` join the PCA step. Returns the new model and the
    head. (``cfcd.train.supervised.choose_supervised_whitening`` chooses the setting on labelled
    vectors alone.)"""
    if len(images) != len(labels):
        raise InputError(f"{len(labels)} labels for {len(images)} images")
    if not isinstance(model, CFCDNet):
        raise ConfigError(f"{getattr(model, 'name', 'this model')}: a head is learned on one network's GeM vectors; "
                         "name one network, e.g. --model mobilenet_v2-imagenet")
    glob, reg = gem_vectors(model, images, settings, regions, progress)
    x, y, extra = labelled_vectors(glob, labels, reg)
    whitening = learn_supervised_whitening(x, y, dim, shrinkage, power, unlabelled=extra)
    return with_head(model, whitening), whitening
