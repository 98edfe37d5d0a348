"""``cfcd index compact``: give back the space an index holds for nothing.

What accumulates: removed images' raw descriptors (FAISS segments keep their rows: ``raw``),
their vectors where the vector layer cannot remove (tombstones: HNSW), earlier versions and
their projections (kept for readers that opened them a moment ago), and what writers that died
left (staging directories, unpublished versions; in Milvus, collections and rows no published
version names).

Two steps, each a write like any other, so a kill anywhere leaves a whole index and a rerun
finishes the job: (1) an ``Index.edit`` that rewrites the raw layer without the removed rows
(and rebuilds the vectors from it where there are tombstones), published as the next version
with the same search results; (2) under the write lock, ``Store.reclaim``: everything the
published version does not need. A reader still holding an earlier version keeps what it has
open; one that opens the index again gets the compacted version.
"""

from __future__ import annotations

import numpy as np

from . import projection as learning
from ..failpoints import failpoint


def drop_removed(index) -> int:
    """Rewrite ``index``'s layers without what its removed images still hold; returns the
    rows dropped (raw descriptors, and tombstoned vectors)."""
    if index.layers.raw is None:
        return 0  # an index from before raw descriptors were kept: nothing to rebuild from
    keep = np.asarray(index.ids(), dtype=np.int64)
    dropped = index.layers.raw.compact(keep) + index.layers.vectors.compact(keep)
    if index._tombstones:
        dropped += index._tombstones
        learning.reproject(index, index.projection)
    if dropped:
        index.changed = True
        index.journal(drop_removed)
    return dropped


def compact(location, timeout: float) -> dict:
    """Compact the index at ``location``; returns ``bytes_before``, ``bytes_after``,
    ``reclaimed`` (bytes, None where the store cannot count them), ``rows_before`` /
    ``rows_after`` (where it counts rows), ``rows_dropped``, ``removed`` (what was deleted,
    in words) and ``version``."""
    from .index import Index

    with Index.edit(location, timeout) as index:
        before = index.store.footprint()
        dropped = drop_removed(index)
    failpoint("index.reclaim")
    with index.store.lock(timeout):
        removed = index.store.reclaim()
    index.store.close()  # Milvus Lite writes what it buffers when let go: measure what stays
    after = index.store.footprint()
    index.store.close()
    reclaimed = before["bytes"] - after["bytes"] if before["bytes"] is not None else None
    return {"index": str(location), "version": index.generation, "rows_dropped": dropped, "removed": removed,
            "bytes_before": before["bytes"], "bytes_after": after["bytes"], "reclaimed": reclaimed,
            "rows_before": before["rows"], "rows_after": after["rows"]}
