"""Neighbours of indexed images, from their stored descriptors (no image is read again).

``similar``: "more like this", the k nearest images of indexed images, through the same search
as a query (so a learned projection applies), the images themselves left out.
``neighbour_blocks``: every image's k nearest neighbours, a block of images at a time through the
vector engine, so memory stays bounded by the block, never an n x n matrix.
``augmented``: the index searching the alpha-DBA versions of its vectors (database-side
augmentation, ``cfcd.index.rerank``).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..errors import NotFound
from . import rerank
from .engines import DEFAULT_ENGINE, store_class
from .rerank import DEFAULT_QE_ALPHA
from .results import SearchResult

# Images whose neighbours are searched at once: 1024 x 1M scores of float32 is 4 GB inside a
# flat engine, so the block is the memory bound; 1024 keeps BLAS efficient.
BLOCK = 1024


class UnknownImage(NotFound, KeyError):
    """An id that names no image of the index (still a ``KeyError``: a lookup that missed)."""


def check_ids(index, ids: Sequence[int]) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).ravel()
    missing = sorted(set(ids.tolist()) - set(index.records(ids)))
    if missing:
        raise UnknownImage(f"no image with id {missing[0]} in the index {index.path or ''}".rstrip()
                           + "; list the ids with `cfcd search --json` or GET /images")
    return ids


def _without_self(ids: np.ndarray, scores: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (ids, scores) with each row's own id dropped, cut to k (ties keep their order)."""
    keep = ids != own[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")
    ids = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(ids, order, 1), -1)[:, :k]
    scores = np.where(ids >= 0, np.take_along_axis(scores, order, 1)[:, :k], -np.inf)
    return ids, scores.astype(np.float32)


def similar(index, ids: Sequence[int], k: int = 10, qe: int = 0, alpha: float = DEFAULT_QE_ALPHA) -> SearchResult:
    """The k images most similar to each indexed image ``ids`` (one result row per id), searched
    with its stored descriptor exactly as a query's; the image itself is not among them.
    ``UnknownImage`` for an id the index does not hold."""
    ids = check_ids(index, ids)
    result = index.search(index.descriptors(ids), k + 1, qe=qe, alpha=alpha)
    found, scores = _without_self(result.ids, result.scores, ids, k)
    return SearchResult(ids=found, scores=scores, records=result.records, others=result.others)


def neighbour_blocks(index, k: int, block: int = BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids (b,), neighbour ids (b, k), scores (b, k)) for every image of ``index``, ``block``
    images at a time, each image's own id left out (-1 / -inf pad rows with fewer neighbours)."""
    all_ids = np.asarray(index.ids(), dtype=np.int64)
    for start in range(0, len(all_ids), block):
        own = all_ids[start:start + block]
        result = index.search(index.descriptors(own), min(k + 1, len(all_ids)))
        found, scores = _without_self(result.ids, result.scores, own, k)
        yield own, found, scores


def augmented(index, n: int = 10, alpha: float = rerank.DEFAULT_DBA_ALPHA):
    """A view of ``index`` (in memory, exact search, never saved) whose vectors are replaced by
    their alpha-DBA versions (``rerank.database_augmentation``: each one mixed with its ``n``
    nearest neighbours); exact k-NN over the whole index."""
    ids = np.asarray(index.ids(), dtype=np.int64)
    vectors = rerank.database_augmentation(index.reconstruct(ids), n, alpha)
    layer = store_class(DEFAULT_ENGINE).create_vectors(vectors.shape[1], None)
    layer.add(vectors, ids)
    return index._view(layer)
