"""An ``Index``'s versions in its store: what ``Index.load``, ``save`` and ``edit`` do.

The catalogue's info holds what an index is besides its records and vectors (``FORMAT``,
dimension, factory, model identity, settings, the next id, tombstones, the projection);
``publish`` writes it and hands the layers to the store as the next version, under the store's
write lock (``cfcd.index.contract.Store``). ``commit`` is ``edit``'s save: when another writer
published first, the journal of this index's changes is replayed on that newer version.
"""

from __future__ import annotations

import logging

from ..errors import AlreadyExists, Conflict, InputError
from . import projection as learning
from .identity import normalise_settings
from ..failpoints import failpoint

log = logging.getLogger(__name__)

FORMAT = "cfcd-index"
VERSION = 1
# Vectors used to train IVF / PQ: enough for k-means on 65k lists (faiss asks for 39 per list).
DEFAULT_TRAIN_SIZE = 256 * 1024


def restore(index, location) -> None:
    """Set ``index``'s attributes from the info of the version its layers hold."""
    info = index.layers.catalogue.info()
    if info.get("format") != FORMAT:
        raise InputError(f"{location}: not a cfcd index (format {info.get('format')!r})")
    index.dim = info["dim"]
    index.factory = info["factory"]
    index.model = info.get("model")
    index.settings = normalise_settings(info.get("settings"))
    index.train_size = info.get("train_size", DEFAULT_TRAIN_SIZE)
    index._next_id = info["next_id"]
    index._tombstones = info.get("tombstones", 0)
    index.learn = info.get("learn", True)  # raw is None for an index from before raw descriptors were kept
    index.changed = False


def publish(index) -> None:
    """Write ``index`` as its store's next version (the lock is held), learning its projection
    first if it is due (``projection.due``)."""
    if index.learn and index.layers.raw is not None and learning.due(len(index), index.projection):
        chosen = learning.choose(len(index))
        if chosen:
            learning.reproject(index, index.layers.learn(*chosen))
    index.layers.catalogue.set_info(
        format=FORMAT, version=VERSION, dim=index.dim, factory=index.factory, model=index.model,
        settings=index.settings, next_id=index._next_id, tombstones=index._tombstones, train_size=index.train_size,
        learn=index.learn, projection=index.projection.describe() if index.projection else None)
    index.layers.generation = index.store.publish(index.layers)
    index._journal = []
    index.changed = False


def commit(index, timeout: float) -> None:
    """Publish ``index`` where it was loaded; if another writer published meanwhile, first redo
    its journal on that newer version (content the newer version holds is skipped)."""
    failpoint("index.commit")
    with index.store.lock(timeout):
        latest = index.store.version() if index.store.exists() else None
        if latest != index.generation:
            log.info("%s: version %s was published meanwhile; replaying this change on it", index.path, latest)
            fresh = type(index).load(index.path)
            for step in index._journal:
                step(fresh)
            fresh._journal = index._journal
            index.__dict__.update(fresh.__dict__)
        publish(index)


def save(index, store, overwrite: bool, timeout: float) -> None:
    """Publish ``index`` in ``store``: a new index there, or the next version of the one it was
    loaded from unless another process changed that since (then ``Conflict``)."""
    failpoint("index.commit")
    with store.lock(timeout):
        same = index.store is not None and index.store.location == store.location and index.generation is not None
        if store.exists() and not overwrite:
            if not same:
                raise AlreadyExists(f"{store.location}: an index already exists there; remove it or choose overwrite")
            latest = store.version()
            if latest != index.generation:
                raise Conflict(f"{store.location}: changed by another process since it was loaded (version "
                               f"{index.generation} -> {latest}); load it again and repeat the change")
        elif not store.exists():
            store.check_vacant()
        index.store = store
        publish(index)
