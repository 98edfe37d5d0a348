"""``stage1.head_init``: how a freshly created projection head (fc + BatchNorm1d) starts.

random: PyTorch's default init. pca: fc from the PCA of the training images' GeM vectors
(``init_head_from_pca``), so that the first descriptor is the PCA projection of the backbone's.
whiten: fc from the PCA-whitening of the training photos' GeM vectors at three scales and over
regions, as ``cfcd whiten`` learns it without labels (``init_head_from_whitening``), so that
training starts from the head the collection already gives.

``stage1.classifier_init``: how stage 1's classifier (one row per class) starts. random: the
head's own init; means: each row the normalised mean descriptor of its class's training photos
(``init_classifier_from_means``), so that the first steps refine the head instead of moving
descriptors toward random class directions.
"""

from __future__ import annotations

import copy
import logging
import time

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..model import CFCDNet
from ..model.whitening import set_head
from ..whiten import learn_head
from .datasets import Samples
from .predict import descriptors, gem_features
from .runtime import TrainProcess

log = logging.getLogger(__name__)

HEAD_INITS = ("random", "pca", "whiten")
CLASSIFIER_INITS = ("random", "means")


def pca_components(features: torch.Tensor, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(components (dim, C), mean (C,))`` of ``features`` (N, C), float64: the rows are the top
    principal directions of the centred features (right singular vectors, largest singular
    value first, sign fixed so that each row's largest-magnitude entry is positive). With fewer
    than ``dim`` directions (N < dim), the rest are random unit rows orthogonal to them and to
    each other (seeded), so all rows stay orthonormal. Needs dim <= C."""
    x = features.double()
    n, c = x.shape
    if dim > c:
        raise ConfigError(f"PCA head init: model.dim = {dim} exceeds the {c} GeM channels")
    mean = x.mean(dim=0) if n else torch.zeros(c, dtype=torch.float64)
    rows = torch.zeros(0, c, dtype=torch.float64)
    if n:
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        rows = vh[:dim]
        flip = torch.sign(rows.gather(1, rows.abs().argmax(dim=1, keepdim=True)))
        rows = rows * torch.where(flip == 0, torch.ones_like(flip), flip)
    missing = dim - rows.shape[0]
    if missing > 0:
        g = torch.Generator().manual_seed(seed)
        extra = torch.randn(missing, c, generator=g, dtype=torch.float64)
        extra -= (extra @ rows.T) @ rows
        q, _ = torch.linalg.qr(extra.T)  # (C, missing), orthonormal columns
        q -= rows.T @ (rows @ q)  # re-orthogonalise against the principal rows
        q, _ = torch.linalg.qr(q)
        rows = torch.cat([rows, q.T])
    return rows, mean


def init_head_from_pca(model: CFCDNet, samples: Samples, image_size: int, batch_size: int, rt: TrainProcess,
                       seed: int = 0, num_workers: int = 0) -> None:
    """The projection head from PCA of ``samples``' GeM vectors (eval view). Every process
    computes the features of its shard, all gather them, rank 0's head is broadcast so that the
    processes start identical. The caller's RNG state is untouched."""
    dim, channels = model.fc.out_features, model.fc.in_features
    if dim > channels:
        if rt.main:
            log.warning("stage1.head_init = pca: model.dim = %d > %d GeM channels; keeping the random head", dim, channels)
        return
    tic = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        feats, errors = gem_features(model, samples, image_size, batch_size, rt, num_workers=num_workers)
    if feats.shape[0] - 1 < dim and rt.main:
        log.warning("stage1.head_init = pca: %d training images give at most %d principal directions for "
                    "model.dim = %d; the other %d rows are random orthonormal directions",
                    feats.shape[0], max(0, feats.shape[0] - 1), dim, dim - max(0, feats.shape[0] - 1))
    components, mean = pca_components(feats, dim, seed=seed)
    set_head(model, components, mean)
    if rt.distributed:
        for t in (model.fc.weight.data, model.fc.bias.data):
            dist.broadcast(t, src=0)
    if rt.main:
        total = float((feats - mean).square().sum())
        share = float(((feats - mean) @ components.T).square().sum()) / total if total > 0 else float("nan")
        log.info("stage 1: projection head from PCA of %d GeM vectors (%d -> %d, %.1f%% of the variance kept) "
                 "in %.0f s%s", len(feats), channels, dim, 100 * share, time.perf_counter() - tic,
                 f"; {len(errors)} unreadable" if errors else "")


def init_head_from_whitening(model: CFCDNet, samples: Samples, rt: TrainProcess) -> None:
    """The projection head from ``cfcd.whiten.learn_head`` (its defaults: p = 0.5,
    shrinkage 1, scales 0.7071 / 1 / 1.4142 at a 512 px long side, regions 2, 3) on ``samples``'
    photos, labels ignored. Every process computes the same head from all photos (on a CPU
    copy of the model); the caller's RNG state is untouched."""
    dim = model.fc.out_features
    tic = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        cpu = copy.deepcopy(model).cpu().float()
        _, whitening = learn_head(cpu, list(samples.paths), dim=dim)
    set_head(model, whitening.projection, whitening.mean)
    if rt.main:
        log.info("stage 1: projection head from PCA-whitening of %d photos' GeM vectors (%d -> %d) in %.0f s",
                 len(samples), model.fc.in_features, dim, time.perf_counter() - tic)


def init_head(kind: str, model: CFCDNet, samples: Samples, image_size: int, batch_size: int, rt: TrainProcess,
              seed: int = 0, num_workers: int = 0) -> None:
    """Initialise ``model``'s fresh projection head as ``kind`` (one of ``HEAD_INITS``) says."""
    if kind == "pca":
        init_head_from_pca(model, samples, image_size, batch_size, rt, seed=seed, num_workers=num_workers)
    elif kind == "whiten":
        init_head_from_whitening(model, samples, rt)
    elif kind != "random":
        raise ConfigError(f"head init {kind!r}: expected one of {', '.join(HEAD_INITS)}")


@torch.no_grad()
def init_classifier_from_means(model: CFCDNet, head, samples: Samples, image_size: int, batch_size: int,
                               rt: TrainProcess, num_workers: int = 0) -> None:
    """``head.weight[j]`` = the normalised mean of class j's descriptors (``model``, eval view);
    a class without a readable photo keeps its row. Every process computes the same rows from
    all photos; the caller's RNG state is untouched."""
    tic = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        rows, descs, _ = descriptors(model, samples, image_size, batch_size, rt, progress=False,
                                     num_workers=num_workers)
    labels = torch.as_tensor([samples.labels[i] for i in rows], dtype=torch.long)
    sums = torch.zeros(head.weight.shape, dtype=torch.float64).index_add_(0, labels, descs)
    have = sums.norm(dim=1) > 0
    head.weight.data[have.to(head.weight.device)] = torch.nn.functional.normalize(sums[have], dim=1).to(head.weight)
    if rt.main:
        log.info("stage 1: classifier from the mean descriptors of %d classes in %.0f s",
                 int(have.sum()), time.perf_counter() - tic)
