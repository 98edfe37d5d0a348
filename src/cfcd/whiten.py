"""A projection head learned from unlabelled photos (``cfcd whiten``): their raw GeM vectors,
prepared exactly as ``cfcd.extract`` prepares images, and the PCA / whitening of
``cfcd.model.whitening`` (the formula is in its docstring).

With labelled photos, ``learn_supervised_head`` learns the supervised (learned) whitening of
``cfcd.model.whitening.learn_supervised_whitening`` instead, its setting chosen on the photos
themselves (``choose_supervised_whitening``, inner identity folds).

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
from .model.whitening import Whitening, learn_whitening, region_boxes, with_head
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


# The grid ``choose_supervised_whitening`` searches: shrinkage l of the within-identity scatter
# (relative to its mean eigenvalue) and the power of the PCA step (0: rotation, 0.5: whitened).
SUPERVISED_SHRINKAGES = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
SUPERVISED_POWERS = (0.0, 0.5)


def _loo_aps(descriptors: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Per-query leave-one-out APs (revisitop AP, as ``cfcd eval`` on a folder) of ``descriptors``
    (n, d) with identity ``labels``; NaN for a photo without a positive."""
    from .evaluate import run
    from .evaluate.benchmarks.folder import leave_one_out
    from .evaluate.descriptors import Descriptors

    names = [str(n) for n in range(len(labels))]
    return run(Descriptors(descriptors), leave_one_out(names, [str(y) for y in labels])).result.aps


def choose_supervised_whitening(glob: np.ndarray, labels: Sequence[str], groups: Sequence[str] | None = None,
                                reg: np.ndarray | None = None, dim: int = 512,
                                shrinkages: Sequence[float] = SUPERVISED_SHRINKAGES,
                                powers: Sequence[float] = SUPERVISED_POWERS, folds: int = 2,
                                seed: int = 0) -> tuple[dict, dict[tuple[float, float], float]]:
    """``({"shrinkage", "power"}, {(shrinkage, power): inner mAP %})``: the setting of
    ``learn_supervised_whitening`` chosen on these labelled photos alone. Their identities are
    split into ``folds`` inner folds (``cfcd.train.holdout.identity_folds``, each ``groups``
    value, e.g. a source, spread over them); for each, the head is learned on the other folds'
    photos and scored leave-one-out on this fold's; per-query APs are pooled. The best mean wins;
    a tie (within 0.01) goes to the larger shrinkage, then the lower power (the head closer to
    the unlabelled one). ``glob`` (n, S, C) and ``reg`` (n, S, R, C) are the photos' raw GeM
    vectors as ``gem_vectors`` returns them; nothing outside them is read."""
    from .model.whitening import descriptors_from_vectors, supervised_whitenings
    from .train.holdout import identity_folds

    labels = [str(y) for y in labels]
    aps: dict[tuple[float, float], list[np.ndarray]] = {(s, p): [] for s in shrinkages for p in powers}
    for train_ids, test_ids in identity_folds(labels, folds, seed, groups):
        train = np.flatnonzero(np.isin(labels, train_ids))
        test = np.flatnonzero(np.isin(labels, test_ids))
        x, y, extra = labelled_vectors(glob[train], [labels[n] for n in train], None if reg is None else reg[train])
        for setting, head in supervised_whitenings(x, y, dim, shrinkages, powers, unlabelled=extra).items():
            aps[setting].append(_loo_aps(descriptors_from_vectors(glob[test], head), [labels[n] for n in test]))
    scores = {k: 100 * float(np.nanmean(np.concatenate(v))) for k, v in aps.items()}
    top = max(scores.values())
    s, p = max((k for k, v in scores.items() if v >= top - 0.01), key=lambda k: (k[0], -k[1]))
    return {"shrinkage": s, "power": p}, scores


def labelled_vectors(glob: np.ndarray, labels: Sequence[str], reg: np.ndarray | None):
    """(vectors (n S, C), their labels, regional vectors (n S R, C) or None): every scale of a
    photo is a vector of its identity; the regions are unlabelled."""
    n, scales, c = glob.shape
    return (glob.reshape(-1, c), np.repeat(np.asarray(labels, dtype=object), scales),
            None if reg is None or not reg.size else reg.reshape(-1, c))


def learn_supervised_head(model: CFCDNet, images: Sequence, labels: Sequence[str], dim: int = 512,
                          shrinkage: float | None = None, power: float | None = None, regions: Sequence[int] = (2, 3),
                          settings: ExtractionSettings = WHITENING_SETTINGS, progress: bool = False,
                          ) -> tuple[CFCDNet, Whitening, dict]:
    """``model`` with a ``dim``-d head learned from labelled ``images`` (paths or PIL images; one
    identity label each) by ``learn_supervised_whitening``: the GeM vectors of every image at
    every scale of ``settings`` are the labelled vectors (the scales of one photo and the photos
    of one identity make the matching pairs), GeM over the windows of ``region_boxes(levels=
    regions)`` join the PCA step. ``shrinkage`` / ``power`` left None are chosen on the images
    themselves by ``choose_supervised_whitening``. Returns the new model, the head and the
    setting used (with the inner scores when chosen)."""
    from .model.whitening import learn_supervised_whitening

    if len(images) != len(labels):
        raise InputError(f"{len(labels)} labels for {len(images)} images")
    if not isinstance(model, CFCDNet):
        raise ConfigError(f"{getattr(model, 'name', 'this model')}: a head is learned on one network's GeM vectors; "
                         "name one network, e.g. --model mobilenet_v2-imagenet")
    glob, reg = gem_vectors(model, images, settings, regions, progress)
    setting: dict = {"shrinkage": shrinkage, "power": power}
    if shrinkage is None or power is None:
        chosen, scores = choose_supervised_whitening(
            glob, labels, reg=reg, dim=dim, shrinkages=SUPERVISED_SHRINKAGES if shrinkage is None else (shrinkage,),
            powers=SUPERVISED_POWERS if power is None else (power,))
        setting = {**chosen, "inner_map": scores}
    x, y, extra = labelled_vectors(glob, labels, reg)
    whitening = learn_supervised_whitening(x, y, dim, setting["shrinkage"], setting["power"], unlabelled=extra)
    return with_head(model, whitening), whitening, setting
