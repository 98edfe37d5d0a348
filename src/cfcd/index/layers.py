"""``Layers``: one version of an index (vectors, catalogue, raw descriptors, projection) and
the operations that keep them in step, written once for every engine (``cfcd.index.contract``).

``Index`` decides what to add, remove and search (ids, dedupe, model checks, journal);
``Layers`` applies it to the engine's layers: a row goes into the catalogue, the raw layer and
(projected, see ``cfcd.index.projection``) the vector layer together, and leaves them together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ConfigError
from . import projection as learning
from .contract import CatalogueLayer, RawLayer, VectorLayer
from .projection import Projection
from .records import ImageRecord

log = logging.getLogger(__name__)


@dataclass
class Layers:
    """What one version of an index is made of: the searchable ``vectors`` (projected when a
    ``projection`` is in use), the ``catalogue`` of image records and settings, and the
    ``raw`` descriptors by id (what a projection is learned from; None for an index from
    before they were kept); ``generation`` is the published version they were read from
    (None: not published)."""

    vectors: VectorLayer
    catalogue: CatalogueLayer
    raw: RawLayer | None
    projection: Projection | None = None
    generation: int | None = None

    def searchable(self, descriptors: np.ndarray) -> np.ndarray:
        """What the vector layer holds for raw ``descriptors``: their projection, if any."""
        return self.projection(descriptors) if self.projection is not None else descriptors

    def train(self, sample: np.ndarray, size: int) -> None:
        """Train the vector layer (IVF, PQ) on at most ``size`` rows of the searchable ``sample``."""
        if not self.vectors.capabilities.needs_training:
            return
        rng = np.random.default_rng(0)
        if len(sample) > size:
            sample = sample[rng.choice(len(sample), size, replace=False)]
        log.info("training %s on %d vectors", self.vectors.factory, len(sample))
        self.vectors.train(sample)

    def insert(self, records: list[ImageRecord], descriptors: np.ndarray, ids: np.ndarray, train_size: int) -> None:
        """Add images: their records (ids set), raw ``descriptors`` and searchable vectors."""
        searchable = self.searchable(descriptors)
        self.train(searchable, train_size)
        self.catalogue.insert(records)
        if self.raw is not None:
            self.raw.add(descriptors, ids)
        self.vectors.add(searchable, ids)

    def delete(self, ids: np.ndarray) -> bool:
        """Remove images; False when the vector layer kept their vectors (tombstones)."""
        if self.raw is not None:
            self.raw.remove(ids)
        removed = self.vectors.remove(ids)
        self.catalogue.delete(ids.tolist())
        return removed

    def nearest(self, queries: np.ndarray, k: int, tombstones: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """(scores, ids, records) of the ``k`` nearest live images of searchable ``queries``:
        ``tombstones`` more are asked for and removed ids filtered out."""
        total = len(self.vectors)
        if total == 0:
            m = len(queries)
            return np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64), {}
        scores, ids = self.vectors.search(queries, min(total, k + tombstones))
        records = self.catalogue.records(ids[ids >= 0])
        if tombstones:
            live = np.isin(ids, np.fromiter(records, np.int64, len(records)))
            order = np.argsort(~live, axis=1, kind="stable")
            ids = np.where(np.take_along_axis(live, order, 1), np.take_along_axis(ids, order, 1), -1)
            scores = np.where(ids >= 0, np.take_along_axis(scores, order, 1), -np.inf)
        ids, scores = ids[:, :k], scores[:, :k]
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return scores.astype(np.float32), ids, records

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The searched vectors of ``ids`` (any shape); rows of -1 ids are zero.
        ``ValueError`` where the vector layer cannot return them (fast-scan codes)."""
        caps = self.vectors.capabilities
        if not caps.reconstructs:
            raise ConfigError(
                f"{caps.why_not_reconstruct}: query expansion and DBA are not available on it; search without "
                "them, or rebuild with a plain PQ (e.g. 'IVF4096,PQ64') or Flat index"
            )
        flat = np.asarray(ids, dtype=np.int64).ravel()
        out = np.zeros((len(flat), self.vectors.dim), np.float32)
        valid = flat >= 0
        if valid.any():
            out[valid] = self.vectors.reconstruct(flat[valid])
        return out.reshape(*np.shape(ids), self.vectors.dim)

    def learn(self, dim: int, shrinkage: float) -> Projection:
        """A projection learned from (a sample of) the raw descriptors, read in blocks."""
        ids = learning.sample_ids(np.asarray(self.catalogue.ids(), dtype=np.int64))
        blocks = (self.raw.read(ids[i:i + learning.BLOCK]) for i in range(0, len(ids), learning.BLOCK))
        projection = learning.learn(blocks, dim, shrinkage)
        log.info("learned a %d-d projection from %d descriptors", projection.dim, projection.learned_from)
        return projection

    def reproject(self, projection: Projection | None, create_vectors: Callable[[int], VectorLayer],
                  train_size: int) -> None:
        """Replace the vector layer by a new one (``create_vectors(dim)``) holding
        ``projection`` (None: the identity) of every raw descriptor, block by block."""
        ids = np.asarray(self.catalogue.ids(), dtype=np.int64)
        self.projection = projection
        self.vectors = create_vectors(projection.dim if projection is not None else self.raw.dim)
        if self.vectors.capabilities.needs_training:
            self.train(self.searchable(self.raw.read(learning.sample_ids(ids, train_size))), train_size)
        for i in range(0, len(ids), learning.BLOCK):
            block = ids[i:i + learning.BLOCK]
            self.vectors.add(self.searchable(self.raw.read(block)), block)
