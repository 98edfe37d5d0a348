"""An ``Index``'s versions in its store: what ``Index.load``, ``save`` and ``edit`` do.

The catalogue's info holds what an index is besides its records and vectors (``FORMAT``,
dimension, factory, model identity, settings, the next id, tombstones, the projection);
``publish`` writes it and hands the layers to the store as the next version, under the store's
write lock (``cfcd.index.contract.Store``). ``commit`` is ``edit``'s save: when another writer
published first, the journal of this index's changes is replayed on that newer version.

A projection due at a save (``projection.due``) is learned, and the vectors re-projected,
before the lock is taken (``learn_due``: about 30 s at 1M images), from this writer's own
snapshot: the version it loaded plus its changes. Other writers publish meanwhile. If one did,
the save replays its journal on the newer version under the lock and publishes the projection
it learned without learning again (re-projecting that version's vectors with it), unless that
version already holds a projection learned from at least as many images, which it keeps.
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


def learn_due(index):
    """Learn ``index``'s projection if one is due (``projection.due``) and re-project its
    vectors with it; call without the lock. Returns the projection learned, or None."""
    if not (index.learn and index.layers.raw is not None and learning.due(len(index), index.projection)):
        return None
    chosen = learning.choose(len(index))
    if not chosen:
        return None
    learned = index.layers.learn(*chosen)
    learning.reproject(index, learned)
    failpoint("index.learned")  # the crash tests stop a writer here, holding no lock
    return learned


def _adopt(index, learned) -> None:
    """Give ``index`` (a newer version, this writer's changes replayed on it) the projection
    this writer learned, unless learning is off there or it holds one learned from as many."""
    if learned is not None and index.learn and (index.projection is None
                                                or index.projection.learned_from < learned.learned_from):
        learning.reproject(index, learned)


def publish(index) -> None:
    """Write ``index`` as its store's next version (the lock is held)."""
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
    learned = learn_due(index)
    with index.store.lock(timeout):
        latest = index.store.version() if index.store.exists() else None
        if latest != index.generation:
            log.info("%s: version %s was published meanwhile; replaying this change on it", index.path, latest)
            fresh = type(index).load(index.path)
            for step in index._journal:
                step(fresh)
            fresh._journal = index._journal
            index.__dict__.update(fresh.__dict__)
            _adopt(index, learned)
        publish(index)


def save(index, store, overwrite: bool, timeout: float) -> None:
    """Publish ``index`` in ``store``: a new index there, or the next version of the one it was
    loaded from unless another process changed that since (then ``Conflict``)."""
    failpoint("index.commit")
    learn_due(index)  # a new index, or one that refuses to replace a newer version: nothing to adopt
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
