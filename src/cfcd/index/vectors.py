"""The vector-index layer: inner-product k-NN over int64-identified vectors.

An engine gives ``cfcd.Index`` five operations, faiss's small surface: ``train``, ``add``
(with ids), ``remove``, ``search``, ``reconstruct``, and says what it can do through
``Capabilities``. ``FaissVectors`` is the embedded engine: any ``faiss.index_factory``
string (``Flat``, ``IVF4096,PQ64``, ``HNSW32``, ``OPQ64,IVF65536_HNSW32,PQ64`` ...); its
capabilities are read from the index faiss built, never guessed from the string. The Milvus
engine (``cfcd.index.milvus``) has the same surface.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import ConfigError, InputError

log = logging.getLogger(__name__)
# faiss reports at INFO which SIMD build it loaded, on every import: not news to a user.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

DEFAULT_FACTORY = "Flat"


@dataclass(frozen=True)
class Capabilities:
    """What a built vector index can do.

    ``needs_training``: vectors must be trained on before the first add (IVF, PQ).
    ``removes``: deleted vectors leave the index; otherwise the caller filters them out of
    results (tombstones) until a rebuild. ``reconstructs``: stored vectors can be read back
    (query expansion and DBA need them); ``why_not_reconstruct`` says why not.
    """

    needs_training: bool
    removes: bool
    reconstructs: bool
    why_not_reconstruct: str = ""


def layers(index) -> Iterator:
    """``index`` and the indexes it wraps (IDMap, PreTransform, Refine), downcast."""
    import faiss

    for _ in range(8):
        index = faiss.downcast_index(index)
        yield index
        inner = getattr(index, "index", None) or getattr(index, "base_index", None)
        if not isinstance(inner, faiss.Index):
            return
        index = inner


def _holds_ids(index) -> bool:
    """Whether ``index`` stores the ids given to ``add_with_ids`` (IVF lists and IDMaps do;
    Flat, HNSW and PQ number vectors by insertion order)."""
    import faiss

    for layer in layers(index):
        if isinstance(layer, (faiss.IndexIVF, faiss.IndexIDMap)):
            return True
        if not isinstance(layer, faiss.IndexPreTransform):
            return False
    return False


def _no_polysemous_training(index) -> None:
    """Switch off polysemous training, which ``index_factory`` turns on for every ``PQ``
    (unless written ``PQ64np``): a simulated annealing over the PQ code orderings that serves
    only Hamming-filtered search (``polysemous_ht``), which cfcd never uses, and that costs
    minutes (on 2 CPU cores, IVF1024,PQ64 trained on 65k vectors in 294 s with it, 65 s
    without). The codes and search results are otherwise the same."""
    for layer in layers(index):
        if hasattr(layer, "do_polysemous_training"):
            layer.do_polysemous_training = False


class FaissVectors:
    """A faiss index with int64 ids and inner-product metric."""

    engine = "faiss"

    def __init__(self, index, factory: str):
        self.faiss = index
        self.factory = factory
        self._enable_reconstruct()

    @classmethod
    def create(cls, dim: int, factory: str = DEFAULT_FACTORY) -> "FaissVectors":
        import faiss

        try:
            index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise ConfigError(f"index factory string {factory!r} is not understood by faiss: {err}") from None
        if not _holds_ids(index):
            index = faiss.IndexIDMap2(index)
        _no_polysemous_training(index)
        return cls(index, factory)

    @classmethod
    def read(cls, path, factory: str) -> "FaissVectors":
        import faiss

        return cls(faiss.read_index(str(path)), factory)

    def write(self, path) -> None:
        import faiss

        faiss.write_index(self.faiss, str(path))

    # ---- what it is ---------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.faiss.d)

    def __len__(self) -> int:
        return int(self.faiss.ntotal)

    @property
    def capabilities(self) -> Capabilities:
        import faiss

        fast_scan = any(isinstance(layer, (faiss.IndexFastScan, faiss.IndexIVFFastScan)) for layer in layers(self.faiss))
        return Capabilities(
            needs_training=not self.faiss.is_trained,
            removes=True,  # a few (HNSW) refuse at remove(), which then returns False
            reconstructs=not fast_scan,
            # faiss 1.15 crashes the process reconstructing from a fast-scan index read from disk.
            why_not_reconstruct=(f"index factory {self.factory!r} stores fast-scan (x4fs) codes, from which faiss "
                                 "cannot reliably return stored vectors (it crashes on an index read from disk)"
                                 if fast_scan else ""),
        )

    def describe(self) -> dict:
        return {"engine": self.engine, "factory": self.factory, "faiss": type(self.faiss).__name__,
                "trained": bool(self.faiss.is_trained), "vectors": len(self)}

    # ---- the five operations ------------------------------------------------------------

    def train(self, sample: np.ndarray) -> None:
        try:
            self.faiss.train(np.ascontiguousarray(sample, dtype=np.float32))
        except RuntimeError as err:
            reason = str(err).splitlines()[-1] if str(err) else err
            raise InputError(
                f"cannot train {self.factory!r} on {len(sample)} vectors ({reason}); "
                "add more images at once or choose a smaller index (fewer IVF lists, or Flat)"
            ) from None
        self._enable_reconstruct()

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.faiss.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ``ids``; False when this index cannot delete (HNSW), and nothing changed."""
        try:
            self.faiss.remove_ids(np.asarray(ids, dtype=np.int64))
        except RuntimeError:
            return False
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (m, k), best first; ids -1 and scores -inf where fewer than k
        vectors (FAISS pads with the lowest float)."""
        scores, ids = self.faiss.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        scores[ids < 0] = -np.inf
        return scores, ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (n,) (approximate for PQ), (n, d)."""
        out = np.zeros((len(ids), self.dim), np.float32)
        for n, i in enumerate(ids):
            out[n] = self.faiss.reconstruct(int(i))
        return out

    def compact(self, keep: np.ndarray) -> int:
        return 0  # remove() gives the space back; what it cannot remove the index rebuilds (tombstones)

    def _enable_reconstruct(self) -> None:
        # IVF indexes need a direct map to return stored vectors by id.
        import faiss

        try:
            ivf = faiss.extract_index_ivf(self.faiss)
        except RuntimeError:
            return
        if ivf.direct_map.type != faiss.DirectMap.Hashtable:
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
