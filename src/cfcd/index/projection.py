"""The projection an index may learn from its own descriptors, without labels (opt-in).

From the raw descriptors x_1..x_n (n, D) an index holds (a sample of them past
``SAMPLE``), with mean mu and covariance eigenpairs (lambda_i, u_i), largest first, the
projection to d dimensions is PCA-whitening with shrinkage (``cfcd.model.whitening``):

    P(x) = L2( diag((lambda_i + eps)^(-1/2)) [u_1 .. u_d]^T (x - mu) ),
    eps  = s * mean(lambda_1 .. lambda_d).

Database vectors and queries go through the same P, so the index searches the d-dimensional
space. The shrinkage s keeps the small, noisy directions of a small collection from being
blown up. Learning is off unless asked (``Index(learn=True)``, ``cfcd index build --learn``,
``cfcd index relearn``): on the protocol of issue 29 (both photo sets, collections of
several shapes: ``cfcd.evaluate.shapes``) every rule tried gained on the pooled mean (up to
+1.2 mAP) but lost 2.5 to 13 points on some source of some shape, and issue 18's rule lost
3.6 pooled on an unseen set of small, hard, distractor-heavy collections (docs/results.md,
"The projection re-chosen on both sets"). When on, ``choose(n)`` gives d and s: the rule with
the best pooled mean there. Learning reads the raw vectors in blocks and
sums their moments (Chan et al.'s pairwise update), so memory holds one block and one D x D
matrix, never the collection.

An ``Index`` learns its projection when it publishes (``cfcd.index.publishing``);
``relearn(index)`` and ``unlearn(index)`` learn it now or drop it (``cfcd index relearn``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import InputError, MismatchError
from .engines import DEFAULT_ENGINE, store_class

# The rule of a collection that learns (docs/results.md, "The projection re-chosen on both
# sets"): from MIN_IMAGES images on, d = n / IMAGES_PER_DIM up to MAX_DIM, shrinkage
# SHRINKAGE. d = n / 2 had the best pooled mean of the rules on both sets and every shape
# (+1.25 against +0.44 for issue 18's n / 4, which lost 1.2 on collections shaped like the
# unseen set); s = 8 is in the 4-16 plateau issue 18 found at every size.
MIN_IMAGES = 100
IMAGES_PER_DIM = 2
MAX_DIM = 256
SHRINKAGE = 8.0
# Re-learn once the collection has grown by this factor since the projection was learned: a
# projection that has not seen 10% of the photos it ranks already loses 0.6-1.8 mAP to a new one.
RELEARN_GROWTH = 1.1
# Descriptors a projection is learned from at most (a uniform sample of a larger index): 40
# samples per dimension of the default 2560-d descriptor, for a covariance whose top few hundred
# directions are all a projection keeps. Blocks of float32 products, merged in float64.
SAMPLE = 100_000
BLOCK = 8192


def choose(n: int) -> tuple[int, float] | None:
    """(d, shrinkage) of the projection a collection of ``n`` images learns, or None when a
    collection that small retrieves better without one."""
    if n < MIN_IMAGES:
        return None
    return int(min(MAX_DIM, round(n / IMAGES_PER_DIM))), SHRINKAGE


def due(n: int, projection: "Projection | None") -> bool:
    """Whether an index of ``n`` images with ``projection`` should learn one now: it has
    none and ``choose`` gives one, or it has grown ``RELEARN_GROWTH`` times since."""
    if projection is None:
        return choose(n) is not None
    return n >= RELEARN_GROWTH * projection.learned_from


@dataclass(frozen=True)
class Projection:
    """``P(x) = L2(matrix @ (x - mean))``: ``mean`` (D,), ``matrix`` (d, D), float32;
    learned from ``learned_from`` descriptors with shrinkage ``shrinkage``."""

    mean: np.ndarray
    matrix: np.ndarray
    learned_from: int
    shrinkage: float

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.matrix.shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Projected, L2-normalised rows (n, d) float32 of raw descriptors (n, D)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise MismatchError(f"the projection maps {self.input_dim}-d descriptors; got shape {x.shape}")
        y = (x - self.mean) @ self.matrix.T
        return np.ascontiguousarray(y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12), dtype=np.float32)

    # ---- persistence: the rows (mean, then matrix) as one file (FAISS) or as rows (Milvus) ----

    def describe(self) -> dict:
        return {"dim": self.dim, "input_dim": self.input_dim, "learned_from": self.learned_from,
                "shrinkage": self.shrinkage, "method": "PCA-whitening"}

    def rows(self) -> np.ndarray:
        """(d + 1, D) float32: the mean, then the matrix's rows."""
        return np.concatenate([self.mean[None], self.matrix]).astype(np.float32)

    @classmethod
    def from_rows(cls, rows: np.ndarray, described: dict) -> "Projection":
        rows = np.asarray(rows, dtype=np.float32)
        if rows.shape != (described["dim"] + 1, described["input_dim"]):
            raise InputError(f"a stored projection has rows {rows.shape}, not {(described['dim'] + 1, described['input_dim'])}: "
                             "the index is damaged; learn it again (`cfcd index relearn`)")
        return cls(rows[0].copy(), rows[1:].copy(), int(described["learned_from"]), float(described["shrinkage"]))

    # Plain little-endian float32, no header to parse (readers open it in many threads).
    def to_bytes(self) -> bytes:
        return self.rows().astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, described: dict) -> "Projection":
        rows = np.frombuffer(data, dtype="<f4")
        return cls.from_rows(rows.reshape(-1, described["input_dim"]), described)


def sample_ids(ids: np.ndarray, size: int | None = None, seed: int = 0) -> np.ndarray:
    """``ids`` if there are at most ``size`` (default ``SAMPLE``), else a uniform sample of
    them (sorted)."""
    ids = np.asarray(ids, dtype=np.int64)
    size = SAMPLE if size is None else size
    if len(ids) <= size:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size, replace=False))


def learn(blocks: Iterable[np.ndarray], dim: int, shrinkage: float) -> Projection:
    """The projection of the module docstring from raw descriptors given in blocks (k, D)."""
    import torch

    from ..model.whitening import Moments, whitening_from_moments

    moments = None
    for block in blocks:
        part = Moments.of(np.asarray(block, dtype=np.float32), torch.float32)
        moments = part if moments is None else moments + part
    if moments is None or moments.count < 2:
        raise InputError("learning a projection needs at least two indexed images")
    dim = min(int(dim), moments.count - 1, moments.mean.numel())
    w = whitening_from_moments(moments, dim, power=0.5, shrinkage=shrinkage)
    return Projection(w.mean.numpy().astype(np.float32), w.projection.numpy().astype(np.float32),
                      moments.count, float(shrinkage))


# ---- an index's projection, learned or dropped now --------------------------------------

def relearn(index, dim: int | None = None, shrinkage: float | None = None) -> None:
    """Learn ``index``'s projection now from its raw descriptors (``dim`` / ``shrinkage``:
    those ``choose`` gives for its size) and switch learning on; its next save publishes the
    new vectors and projection together."""
    _check_raw(index)
    chosen = choose(len(index))
    if dim is None and chosen is None:
        raise InputError(f"{len(index)} images: below the {MIN_IMAGES} from which a learned projection "
                         "helps; give a dimension (--dim) to learn one anyway")
    dim = dim or chosen[0]
    shrinkage = shrinkage if shrinkage is not None else (chosen[1] if chosen else SHRINKAGE)
    reproject(index, index.layers.learn(dim, shrinkage))
    index.learn = True
    index.journal(lambda newer: relearn(newer, dim, shrinkage))


def unlearn(index) -> None:
    """Drop ``index``'s projection and stop learning one: it searches raw descriptors again."""
    _check_raw(index)
    reproject(index, None)
    index.learn = False
    index.journal(unlearn)


def reproject(index, projection: Projection | None) -> None:
    """Make ``index`` search ``projection`` (None: the raw descriptors) of every image: new
    vectors from its engine, filled from the raw layer."""
    engine = index.store or store_class(DEFAULT_ENGINE)
    index.layers.reproject(projection, lambda dim: engine.create_vectors(dim, index.factory), index.train_size)
    index._tombstones = 0
    index.changed = True


def _check_raw(index) -> None:
    if index.layers.raw is None:
        raise InputError(f"{index.path}: this index was built before cfcd kept raw descriptors, so it cannot learn a "
                         "projection; build it again (`cfcd index build --force`)")
