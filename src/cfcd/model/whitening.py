"""Projection heads learned without training: PCA and PCA-whitening of GeM vectors (no labels),
and the supervised learned whitening of labelled ones (``learn_supervised_whitening``, formula
in its docstring), folded into CFCDNet's ``Linear(C, d) -> BatchNorm1d`` head.

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


def within_class_scatter(vectors, labels) -> tuple[torch.Tensor, int]:
    """``(S (C, C), pairs)``: the mean over all unordered pairs (i, j), i != j, of vectors with the
    same label of (x_i - x_j)(x_i - x_j)^T, float64, and the number of such pairs. Computed
    per label from its own scatter: over the n_k vectors of label k with mean mu_k,
    sum_{i<j} (x_i - x_j)(x_i - x_j)^T = n_k sum_i (x_i - mu_k)(x_i - mu_k)^T, so no pair is
    formed explicitly. A label with one vector contributes no pair."""
    x = torch.as_tensor(np.asarray(vectors), dtype=torch.float64)
    if x.ndim != 2:
        raise ValueError(f"expected vectors (N, C); got shape {tuple(x.shape)}")
    labels = np.asarray(labels)
    if len(labels) != len(x):
        raise MismatchError(f"{len(labels)} labels for {len(x)} vectors")
    c = x.shape[1]
    total, pairs = torch.zeros(c, c, dtype=torch.float64), 0
    for label in dict.fromkeys(labels.tolist()):
        members = x[torch.as_tensor(labels == label)]
        n = len(members)
        if n < 2:
            continue
        centred = members - members.mean(dim=0)
        total += n * (centred.T @ centred)
        pairs += n * (n - 1) // 2
    return (total / pairs if pairs else total), pairs


def learn_supervised_whitening(vectors, labels, dim: int = 512, shrinkage: float = 1.0, power: float = 0.0,
                               pca_shrinkage: float = 1.0, unlabelled=None) -> Whitening:
    """A head learned from labelled GeM vectors: whitening of the within-identity scatter of
    matching pairs, then PCA (learned whitening, Mikolajczyk & Matas, ICCV 2007; Radenovic,
    Tolias & Chum, TPAMI 2018, "learned whitening"). With ``vectors`` x_1..x_N (N, C) and their
    identity ``labels``, P = all unordered pairs (i, j) of distinct vectors with one label:

        m   = mean_i x_i
        S   = 1/|P| sum_{(i,j) in P} (x_i - x_j)(x_i - x_j)^T         (within-identity scatter)
        S_l = S + l I,  l = shrinkage * trace(S) / C
        P1  = S_l^(-1/2)  (symmetric: V diag(e^-1/2) V^T from S_l = V diag(e) V^T)
        y_i = P1 (x_i - m);  (r_k, v_k) the eigenpairs of cov(y), largest v_k first
        fc(g) = W (g - m),  W = diag((v_k + eps)^(-power)) [r_1 .. r_dim]^T P1,
        eps = pca_shrinkage * mean(v_1..v_dim)

    P1 shrinks the directions in which photos of one identity differ (the noise a descriptor
    should ignore) and PCA keeps the ``dim`` directions in which the whitened photos still
    differ most (between identities). ``power = 0`` is the papers' rotation; 0.5 also
    PCA-whitens the result (as ``learn_whitening``). The shrinkage l is needed when there are
    fewer pairs than dimensions (a few hundred photos against C = 1280: S has rank below C):
    directions no pair spans get l instead of 0; as ``shrinkage`` grows, P1 tends to a multiple
    of I and the head to the unlabelled ``learn_whitening`` of the same vectors at the same
    power (PCA at ``power = 0``).
    ``unlabelled`` vectors (M, C) (e.g. GeM over regions of the same photos) join the PCA step
    only (y_i of them too), never S or m.

    The papers learn it on L2-normalised descriptors, with m the mean of the pairs' query side;
    here x are the raw GeM vectors the head ``Linear(C, d)`` receives (as ``learn_whitening``),
    and m is the plain mean of the labelled vectors, so that the head is affine in g."""
    heads = supervised_whitenings(vectors, labels, dim, (shrinkage,), (power,), pca_shrinkage, unlabelled)
    return heads[(shrinkage, power)]


def supervised_whitenings(vectors, labels, dim: int = 512, shrinkages: Sequence[float] = (1.0,),
                          powers: Sequence[float] = (0.0,), pca_shrinkage: float = 1.0,
                          unlabelled=None) -> dict[tuple[float, float], Whitening]:
    """``learn_supervised_whitening`` at every ``(shrinkage, power)`` of the grid, sharing the
    work: S_l has the eigenvectors of S (eigenvalues + l), and cov(y) = P1 cov(x) P1 comes from
    one covariance of the vectors."""
    x = torch.as_tensor(np.asarray(vectors), dtype=torch.float64)
    if x.ndim != 2:
        raise ValueError(f"expected vectors (N, C); got shape {tuple(x.shape)}")
    c = x.shape[1]
    if dim > c:
        raise ConfigError(f"dim = {dim} exceeds the {c} channels of the vectors")
    if min(shrinkages, default=0) < 0 or pca_shrinkage < 0:
        raise ConfigError(f"supervised whitening shrinkage {min(*shrinkages, pca_shrinkage)}: expected >= 0")
    for power in powers:
        if not 0 <= power <= 0.5:
            raise ConfigError(f"whitening power {power}: expected 0 (PCA) to 0.5 (full whitening)")
    scatter, pairs = within_class_scatter(x, labels)
    if not pairs:
        raise InputError("supervised whitening needs at least one identity with two photos (a matching pair); got none")
    mean = x.mean(dim=0)
    spread = Moments.of(x)  # the vectors of the PCA step: labelled and unlabelled
    if unlabelled is not None and len(unlabelled):
        spread = spread + Moments.of(torch.as_tensor(np.asarray(unlabelled), dtype=torch.float64).reshape(-1, c))
    values, axes = torch.linalg.eigh(scatter)
    values = values.clamp(min=0)
    scale = float(values.mean())  # trace(S) / C
    if scale <= 0:  # every pair identical: fall back to the spread of the vectors themselves
        scale = float(torch.diagonal(spread.scatter).sum()) / max(1, spread.count - 1) / c or 1.0
    heads = {}
    for shrinkage in shrinkages:
        shrunk = values + shrinkage * scale
        learned = shrunk > 1e-12 * float(shrunk.max())
        if learned.any():  # shrinkage 0 on a rank-deficient S: unspanned directions as the smallest spanned one
            shrunk = torch.where(learned, shrunk, shrunk[learned].min())
        else:  # S = 0 and shrinkage 0: no direction to prefer
            shrunk = torch.full_like(shrunk, scale)
        p1 = (axes * shrunk.rsqrt()) @ axes.T  # symmetric
        # the moments of y = P1 (x - m) over the PCA step's vectors
        whitened = Moments(spread.count, p1 @ (spread.mean - mean), p1 @ spread.scatter @ p1)
        rows, variance = principal_axes(whitened, dim)
        for power in powers:
            second = whitening_from_axes(whitened.mean, rows, variance, power, pca_shrinkage)
            heads[(shrinkage, power)] = Whitening(mean, second.projection @ p1, variance)
    return heads


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
