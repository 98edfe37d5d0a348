"""Projection heads learned without labels: PCA and PCA-whitening of GeM vectors, folded into
CFCDNet's ``Linear(C, d) -> BatchNorm1d`` head.

From unlabelled GeM vectors g_1..g_N (N, C), mean mu and centred covariance with eigenpairs
(lambda_i, u_i), largest first, the head is

    fc(g) = W (g - mu),   W = diag((lambda_i + eps)^(-power)) [u_1 .. u_d]^T,
    eps = shrinkage * mean(lambda_1..lambda_d),   BatchNorm1d at identity,

so the descriptor is L2(W (g - mu)). ``power = 0`` is plain PCA (a rotation and truncation),
``power = 0.5`` full PCA-whitening (Jegou & Chum, ECCV 2012), values between a softened one;
``eps`` keeps the smallest, noisiest directions of a small sample from being blown up. The
vectors can be the global GeM of unlabelled photos and GeM over regions of their feature maps
(``region_boxes``): the regions multiply the sample for free. ``cfcd.whiten`` computes them
from photos as ``cfcd.extract`` prepares them and learns the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError, InputError, MismatchError
from .net import CFCDNet, ModelConfig


@dataclass(frozen=True)
class Whitening:
    """``fc(g) = projection @ (g - mean)``; ``variance`` the kept eigenvalues (d,), largest first."""

    mean: torch.Tensor  # (C,) float64
    projection: torch.Tensor  # (d, C) float64
    variance: torch.Tensor  # (d,) float64

    def __call__(self, vectors) -> np.ndarray:
        """Projected (not normalised) vectors (..., d) of raw GeM vectors (..., C), float64."""
        x = torch.as_tensor(np.asarray(vectors), dtype=torch.float64)
        return ((x - self.mean) @ self.projection.T).numpy()


@dataclass(frozen=True)
class Moments:
    """Count, mean (C,) and scatter sum_i (g_i - mean)(g_i - mean)^T (C, C) of vectors, float64;
    ``a + b`` is the moments of both sets (Chan et al.'s pairwise update), so the moments of
    any union of groups come from per-group moments without revisiting the vectors."""

    count: int
    mean: torch.Tensor
    scatter: torch.Tensor

    @classmethod
    def of(cls, vectors, dtype: torch.dtype = torch.float64) -> "Moments":
        """The moments of ``vectors`` (N, C), the block's products computed in ``dtype``
        (float32 halves the time of a large sample's; blocks are merged in float64)."""
        x = torch.as_tensor(np.asarray(vectors)).to(dtype)
        if x.ndim != 2:
            raise ValueError(f"expected vectors (N, C); got shape {tuple(x.shape)}")
        mean = x.double().mean(dim=0) if len(x) else torch.zeros(x.shape[1], dtype=torch.float64)
        centred = x - mean.to(dtype)
        return cls(len(x), mean, (centred.T @ centred).double())

    def __add__(self, other: "Moments") -> "Moments":
        n = self.count + other.count
        if not n:
            return self
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        scatter = self.scatter + other.scatter + torch.outer(delta, delta) * (self.count * other.count / n)
        return Moments(n, mean, scatter)


def principal_axes(moments: Moments, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows (dim, C), variance (dim,))``: the top eigenvectors of the covariance, largest
    eigenvalue first, each row's sign fixed so that its largest-magnitude entry is positive."""
    c = moments.mean.numel()
    if moments.count < 2:
        raise InputError(f"learning a projection needs at least two vectors; got {moments.count}")
    if dim > c:
        raise ConfigError(f"dim = {dim} exceeds the {c} channels of the vectors")
    values, vectors = torch.linalg.eigh(moments.scatter / (moments.count - 1))
    rows = vectors.flip(1).T[:dim]
    flip = torch.sign(rows.gather(1, rows.abs().argmax(dim=1, keepdim=True)))
    return rows * torch.where(flip == 0, torch.ones_like(flip), flip), values.flip(0)[:dim].clamp(min=0)


def whitening_from_axes(mean: torch.Tensor, rows: torch.Tensor, variance: torch.Tensor, power: float = 0.5,
                        shrinkage: float = 0.1) -> Whitening:
    """The head of the module docstring from the principal axes; directions beyond the sample's
    rank (eigenvalue ~0) are scaled like the smallest learned one."""
    if not 0 <= power <= 0.5:
        raise ConfigError(f"whitening power {power}: expected 0 (PCA) to 0.5 (full whitening)")
    if shrinkage < 0:
        raise ConfigError(f"whitening shrinkage {shrinkage}: expected >= 0")
    learned = variance > 1e-12 * float(variance.max())
    if power > 0 and not learned.any() and shrinkage == 0:
        raise InputError("whitening: the vectors have no variance; give photos that differ, or shrinkage > 0")
    floor = variance[learned].min() if learned.any() else torch.tensor(1.0, dtype=torch.float64)
    lam = torch.where(learned, variance, floor)
    eps = shrinkage * float(lam.mean())
    scale = (lam + eps).pow(-power) if power > 0 else torch.ones_like(lam)
    return Whitening(mean, rows * scale[:, None], variance)


def whitening_from_moments(moments: Moments, dim: int = 512, power: float = 0.5, shrinkage: float = 0.1) -> Whitening:
    """PCA (``power = 0``) or PCA-whitening (``power = 0.5``) to ``dim`` dimensions from the
    moments of unlabelled GeM vectors (formula in the module docstring)."""
    return whitening_from_axes(moments.mean, *principal_axes(moments, dim), power, shrinkage)


def learn_whitening(vectors, dim: int = 512, power: float = 0.5, shrinkage: float = 0.1) -> Whitening:
    """``whitening_from_moments`` of unlabelled GeM ``vectors`` (N, C)."""
    return whitening_from_moments(Moments.of(vectors), dim, power, shrinkage)


@torch.no_grad()
def set_head(model: CFCDNet, projection: torch.Tensor, mean: torch.Tensor) -> None:
    """``fc(g) = W (g - mu)`` with W = ``projection`` (d, C), mu = ``mean`` (C,); BatchNorm1d at
    identity (weight 1, bias 0, running mean 0, running var 1), so the eval descriptor is
    L2(W (g - mu)) up to BatchNorm's eps."""
    w, mu = torch.as_tensor(projection).double(), torch.as_tensor(mean).double()
    if model.fc is None or tuple(model.fc.weight.shape) != tuple(w.shape):
        have = None if model.fc is None else tuple(model.fc.weight.shape)
        raise MismatchError(f"the head {have} does not fit a {tuple(w.shape)} projection")
    model.fc.weight.copy_(w.to(model.fc.weight))
    model.fc.bias.copy_((-(w @ mu)).to(model.fc.bias))
    model.bn.reset_parameters()  # weight 1, bias 0, running_mean 0, running_var 1, batches 0


def with_head(model: CFCDNet, whitening: Whitening) -> CFCDNet:
    """A new CFCDNet: ``model``'s backbone and GeM with a ``Linear(C, d) -> BatchNorm1d`` head set
    to ``whitening`` (``model`` is left as it is)."""
    d = whitening.projection.shape[0]
    config = ModelConfig.from_dict({**model.config.to_dict(), "dim": d})
    out = CFCDNet(config)
    state = {k: v for k, v in model.state_dict().items() if k.startswith(("backbone.", "pool."))}
    out.load_state_dict(state, strict=False)
    set_head(out, whitening.projection, whitening.mean)
    return out.eval()


def region_boxes(h: int, w: int, levels: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Square-ish overlapping windows (y0, y1, x0, x1) of an (h, w) map: for each level l an
    l x l grid of windows of 2/(l+1) of each side, step half a window (R-MAC-like)."""
    boxes = []
    for lv in levels:
        if lv < 1:
            raise ConfigError(f"region level {lv}: expected >= 1")
        bh, bw = max(1, round(2 * h / (lv + 1))), max(1, round(2 * w / (lv + 1)))
        ys = np.unique(np.linspace(0, h - bh, lv).round().astype(int))
        xs = np.unique(np.linspace(0, w - bw, lv).round().astype(int))
        boxes += [(int(y), int(y) + bh, int(x), int(x) + bw) for y in ys for x in xs]
    return boxes


def descriptors_from_vectors(vectors: np.ndarray, whitening: Whitening | None = None) -> np.ndarray:
    """Multi-scale descriptors (n, d) from raw GeM ``vectors`` (n, S, C) as ``cfcd.extract`` makes
    them with the head ``whitening`` (None: no head): L2(sum_s L2(head(g_s)))."""
    x = np.asarray(vectors, dtype=np.float64)
    if whitening is not None:
        x = whitening(x)
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    x = x.sum(axis=1)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
