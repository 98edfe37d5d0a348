"""The Milvus engine: an index in Milvus collections, for collections that outgrow one machine.

Locations (see ``cfcd.index.engines``):

    photos.db                      Milvus Lite: a local data directory, no server
    milvus://host:19530/photos     a Milvus server or cluster, collection "photos"
    http://host:19530/photos       the same (https:// with TLS); no path: collection "cfcd"

Milvus Lite lets one process open a data directory at a time (it locks it). Several processes
(two ``cfcd serve``, a writer and a server) share one through a server: ``milvus-lite server
--data-dir photos.db --port 19530``, then ``http://127.0.0.1:19530/cfcd`` everywhere.

Collections per index (Milvus has no joins, and wants a vector field in each): ``NAME``
holds (id, vector, version); ``NAME_images``, the catalogue, holds (id, path, size, mtime,
sha256, version) and a 2-d placeholder vector; ``NAME_raw`` the raw descriptors (id, vector,
version) a projection is learned from; ``NAME_paths`` the other paths of indexed content (path,
image id, size, mtime, version; made on the first write of an index from before); ``NAME_proj`` the learned projection's rows (its mean,
then its matrix; ``cfcd.index.projection``). A projection changes the searched dimension, so
its vectors go to a new collection ``NAME_s<hex>`` that the published settings name; the one
it replaced is dropped one projection later (readers that opened it a moment ago still find
it). The index's settings (format, dim, model, extraction settings, next id, published
version, the searched and raw collections, the rows removed since the last compaction) are
the catalogue collection's property ``cfcd.info``. ``cfcd index compact`` (``reclaim``) drops
what the published version does not use; on Milvus Lite, which keeps removed rows in its files,
it first moves the remaining raw and searched rows to new collections (``NAME_r<hex>``,
``NAME_s<hex>``) published like a projection's.

Versions: readers see the rows whose version is at most the published one. A writer keeps its
additions in memory (its own searches see them) and publishes under the write lock: it deletes
rows above the published version (left by a writer that died while inserting), inserts its
rows with version published + 1 (invisible), publishes them all at once by rewriting
``cfcd.info``, then deletes the rows it removed. So readers see the old version or the new one,
never part of an addition; a writer killed after publishing but before deleting leaves its
removals undone (repeat them). The write lock is Milvus Lite's own on a data directory; on a
server it is a lease in ``cfcd.info`` (Milvus offers no compare-and-set, so it is advisory:
run one writing job at a time per collection), taken over at once from a dead process of the
same machine, otherwise when it expires (``LEASE_SECONDS``).
"""

from .store import MilvusStore, parse_location

__all__ = ["MilvusStore", "parse_location"]
