"""``Index``: a searchable collection of image descriptors, whatever engine stores them.

Layers below it (``layers.Layers``, each kind a Protocol of ``cfcd.index.contract``): the
vector index (train / add / remove / search / reconstruct), the catalogue (one record per image,
and the index's settings), the raw descriptors by id and the store (where versions are published,
under a write lock; ``publishing`` reads and writes them). ``Index`` owns what is the same for every engine: ids, dedupe
by content, the model identity, dimension and extraction settings stored with the index and
checked on every add and search (``identity.check_compatible``), removal, re-ranking, and the
projection it may learn from its own descriptors (``cfcd.index.projection``; off unless asked:
``learn=True``, ``projection.relearn``): then, once ``projection.choose`` says a collection is
large enough, the index searches ``P(x)`` of its raw descriptors and of every query, and learns
``P`` again when it has grown enough (``projection.unlearn`` turns it off). Model loading and image extraction sit one layer up, in
``cfcd.index.searcher``.

The FAISS engine is exact (``Flat``) by default; any ``faiss.index_factory`` string can be
given, and indexes that need training are trained on a sample of the first vectors added.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import InputError, NotFound
from . import publishing, rerank
from .engines import DEFAULT_ENGINE, open_store, store_class
from .identity import IndexMismatchError, check_compatible, model_identity, normalise_settings
from .layers import Layers
from .records import ImageRecord, describe_file, new_positions, resolve_paths
from .results import AddReport, SearchResult

__all__ = ["Index", "IndexMismatchError"]


DEFAULT_LOCK_TIMEOUT = 60.0


class Index:
    """A searchable collection of image descriptors.

    >>> idx = Index(dim=512, model=model, settings=ExtractionSettings())   # or Index.build(...)
    >>> idx.add(descriptors, paths); idx.save("photos.idx")
    >>> Index.load("photos.idx").search(queries, k=10).hits(0)

    ``location`` (here, or in ``load`` / ``edit`` / ``save``) picks the engine: a directory
    is FAISS + SQLite; see ``cfcd.index.engines`` for the others. Images go in and ranked
    images come out through ``cfcd.index.searcher`` (the model joined to an index).
    """

    def __init__(self, dim: int, factory: str | None = None, model=None, settings=None,
                 train_size: int = publishing.DEFAULT_TRAIN_SIZE, location: str | Path | None = None, learn: bool = False):
        store = open_store(location) if location is not None else None
        layers = (store or store_class(DEFAULT_ENGINE)).create(int(dim), factory)
        self._attach(layers, store)
        self.dim = int(dim)
        self.factory = layers.vectors.factory
        self.model = model_identity(model)
        self.settings = normalise_settings(settings, self.model)
        self.train_size = train_size
        self.learn = bool(learn)  # opt-in: learn a projection when ``projection.due`` says so
        self._next_id = 0
        self._tombstones = 0
        self.changed = True  # unsaved changes
        if self.model and self.model.get("dim") not in (None, self.dim):
            raise IndexMismatchError(f"model {self.model['name']} makes {self.model['dim']}-d descriptors, not {self.dim}-d")

    def _attach(self, layers: Layers, store) -> None:
        self.layers = layers
        self.store = store
        # Operations since the published version ``generation``, replayed on a newer one
        # when another writer published first (see ``edit``).
        self._journal: list[Callable[[Index], None]] = []

    @property
    def path(self) -> Path | str | None:
        return self.store.location if self.store is not None else None

    def version(self) -> int:
        """The newest version published where this index lives (``generation`` is the one
        this object holds): a reader compares the two to know when to load again."""
        return self.store.version()

    @property
    def generation(self) -> int | None:
        """The published version this index was read from or last saved as (None: never saved)."""
        return self.layers.generation

    @property
    def projection(self):
        """The learned projection searched through (``cfcd.index.projection``), or None."""
        return self.layers.projection

    # ---- construction and persistence -------------------------------------------------

    @classmethod
    def build(cls, descriptors: np.ndarray, paths: Sequence[str], factory: str | None = None, model=None,
              settings=None, **kwargs) -> "Index":
        """A new index holding ``descriptors`` (n, d) of the images ``paths``."""
        descriptors = np.asarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2:
            raise InputError(f"descriptors must be a 2-d array (n, d), got shape {descriptors.shape}")
        index = cls(descriptors.shape[1], factory, model, settings, **kwargs)
        index.add(descriptors, paths)
        return index

    @classmethod
    def load(cls, location: str | Path) -> "Index":
        """The published version of the index at ``location`` (a consistent snapshot, even
        while another process is writing)."""
        store = open_store(location)
        index = cls.__new__(cls)
        index._attach(store.open(), store)
        publishing.restore(index, location)
        return index

    @classmethod
    @contextmanager
    def edit(cls, location: str | Path, timeout: float = DEFAULT_LOCK_TIMEOUT, **create) -> Iterator["Index"]:
        """The index at ``location`` (or, with ``create`` arguments such as ``dim=512``, a new
        one), saved when the block ends without an exception.

        The block runs without the write lock (extraction may take hours); the save takes it.
        If another writer published meanwhile, this block's additions and removals are
        replayed on that newer version (content it already holds is skipped), so no write is
        lost and none waits for another's extraction.
        """
        store = open_store(location)
        if store.exists():
            index = cls.load(location)
        elif create:
            index = cls(location=location, **create)
        else:
            raise NotFound(f"{location}: not a cfcd index; create one with `cfcd index build`")
        yield index
        if index.changed:
            publishing.commit(index, timeout)

    def save(self, location: str | Path | None = None, overwrite: bool = False,
             timeout: float = DEFAULT_LOCK_TIMEOUT) -> str | Path:
        """Publish this index as the next version at ``location`` (default: where it was
        loaded). The check and the write hold the write lock, so two saves never both succeed
        in making an index at the same new location.

        Refuses to overwrite an index it was not loaded from, or one that another process
        changed since it was loaded, unless ``overwrite``.
        """
        store = open_store(location) if location is not None else self.store
        if store is None:
            raise InputError("save(path): this index was never saved; give a directory")
        publishing.save(self, store, overwrite, timeout)
        return self.path

    def close(self) -> None:
        """Release what the store holds open (a Milvus Lite data directory is one process's
        at a time); the index is not usable afterwards."""
        if self.store is not None:
            self.store.close()

    # ---- contents -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.layers.catalogue)

    def info(self) -> dict:
        described = self.layers.vectors.describe()
        return {
            "path": str(self.path) if self.path else None,
            "version": self.generation,
            "images": len(self),
            "dim": self.dim,
            "engine": described.pop("engine"),
            "factory": self.factory,
            **{k: v for k, v in described.items() if k not in ("factory", "vectors")},
            "vectors_stored": described["vectors"],
            "removed_pending": self._tombstones,
            "model": self.model,
            "settings": self.settings,
            "learn": self.learn,
            "projection": self.projection.describe() if self.projection else None,
        }

    def records(self, ids: Sequence[int]) -> dict[int, ImageRecord]:
        return self.layers.catalogue.records(ids)

    def ids(self) -> list[int]:
        return self.layers.catalogue.ids()

    def paths(self, ids: Sequence[int]) -> dict[int, list[str]]:
        """Every path of each of ``ids`` held: the record's ``path`` first, then the other
        paths at which the same content was found."""
        records = self.records(ids)
        others = self.layers.catalogue.other_paths(records)
        return {i: [r.path] + [o.path for o in others.get(i, [])] for i, r in records.items()}

    # ---- updates ------------------------------------------------------------------------

    def add(self, descriptors: np.ndarray, paths: Sequence[str | ImageRecord], model=None, settings=None,
            replay: bool = True) -> AddReport:
        """Add descriptors of the images ``paths`` (or full ``ImageRecord``s).

        An image whose content (sha256) or, for names that are not files here, whose path is
        already indexed, or repeated in this call, is skipped. ``model`` / ``settings``, when
        given, must match the index's (they are adopted by an index created without them).
        ``replay=False``: not recorded for replay by ``edit`` (a caller that records its own
        step, see ``cfcd.index.searcher.add_images``).
        """
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or len(descriptors) != len(paths):
            raise InputError(f"{len(paths)} paths for descriptors of shape {descriptors.shape}")
        recs = [p if isinstance(p, ImageRecord) else describe_file(p) for p in paths]
        report = self._add(descriptors, recs, model, settings)
        if replay:
            self.journal(lambda newer: report.update_from(newer._add(descriptors, recs, model, settings)))
        return report

    def journal(self, step: Callable[["Index"], None]) -> None:
        """Record ``step`` (a change just made to this index) to redo on a newer version if
        another writer publishes first (see ``edit``)."""
        self._journal.append(step)

    def _add(self, descriptors: np.ndarray, recs: Sequence[ImageRecord], model, settings) -> AddReport:
        check_compatible(self, model, settings, descriptors.shape[1])
        self.model = self.model or model_identity(model)
        self.settings = self.settings or normalise_settings(settings, self.model)
        keep, duplicates, repeated = new_positions(self.layers.catalogue, recs)
        report = AddReport(duplicates=duplicates, repeated=repeated)
        if keep:
            vectors = descriptors if len(keep) == len(descriptors) else descriptors[keep]  # no 2 GB copy at 1M
            ids = np.arange(self._next_id, self._next_id + len(keep), dtype=np.int64)
            self.changed = True
            self.layers.insert([recs[k].with_id(i) for k, i in zip(keep, ids)], vectors, ids, self.train_size)
            self._next_id += len(keep)
            report.added = ids.tolist()
        copies = sorted({**duplicates, **repeated})
        report.paths = {copies[n]: i for n, i in self._add_paths([recs[p] for p in copies]).items()}
        return report

    def put_back(self, descriptors: np.ndarray, records: Sequence[ImageRecord]) -> list[int]:
        """Add again images removed earlier, under their own ids (``records``' ids; an id is
        never given to another image, so a removed one is free) with their stored
        ``descriptors``: what a restore from the trash needs (``cfcd.index.cleanup``). Ids
        still indexed, and content indexed under another id, are skipped; returns the ids put back."""
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        put = self._put_back(descriptors, list(records))

        def replay(newer: Index) -> None:
            put[:] = newer._put_back(descriptors, list(records))

        self.journal(replay)
        return put

    def _put_back(self, descriptors: np.ndarray, records: list[ImageRecord]) -> list[int]:
        check_compatible(self, None, None, descriptors.shape[1])
        if any(r.id is None or not 0 <= r.id < self._next_id for r in records):
            raise InputError(f"ids {[r.id for r in records][:5]}: only images removed from this index can be put back")
        if self._tombstones:
            raise InputError(f"{self.path}: this index keeps the vectors of removed images ({self.factory} cannot delete "
                             "them), so they cannot be put back; give them back first (`cfcd index compact`)")
        present = self.records([r.id for r in records])
        held = self.layers.catalogue.ids_by_hash(r.sha256 for r in records)
        keep = [n for n, r in enumerate(records) if r.id not in present and (not r.sha256 or r.sha256 not in held)]
        if keep:
            ids = np.asarray([records[n].id for n in keep], dtype=np.int64)
            self.changed = True
            self.layers.insert([records[n] for n in keep], descriptors[keep], ids, self.train_size)
        return [records[n].id for n in keep]

    def add_paths(self, paths: Sequence[str | ImageRecord], replay: bool = True) -> dict[int, int]:
        """Record files whose content is indexed already as other paths of it (a byte copy in
        another folder: one descriptor, several files). Returns input position -> id of the
        paths newly recorded; paths held already and content not indexed are left out."""
        recs = [p if isinstance(p, ImageRecord) else describe_file(p) for p in paths]
        found = self._add_paths(recs)
        if replay:
            self.journal(lambda newer: (found.clear(), found.update(newer._add_paths(recs))))
        return found

    def _add_paths(self, recs: Sequence[ImageRecord]) -> dict[int, int]:
        catalogue = self.layers.catalogue
        by_hash = catalogue.ids_by_hash(r.sha256 for r in recs)
        known = set(catalogue.ids_by_path(r.path for r in recs))
        found = {}
        for pos, r in enumerate(recs):
            image_id = by_hash.get(r.sha256) if r.sha256 else None
            if image_id is not None and r.path not in known:
                known.add(r.path)
                found[pos] = image_id
        if found:
            self.changed = True
            catalogue.insert_paths([recs[p].with_id(i) for p, i in found.items()])
        return found

    def remove(self, ids: Sequence[int] = (), paths: Sequence[str] = ()) -> list[int]:
        """Remove images by id (with all their paths) or paths (an image goes with its last
        path; the others keep it); returns the ids removed (unknown ones are ignored)."""
        removed = self._remove(ids, paths)

        def replay(newer: Index) -> None:
            removed[:] = newer._remove(ids, paths)

        self.journal(replay)
        return removed

    def _remove(self, ids: Sequence[int], paths: Sequence[str]) -> list[int]:
        wanted = set(int(i) for i in ids)
        wanted |= self._drop_paths(self.layers.catalogue.ids_by_path(resolve_paths(paths)), wanted)
        present = sorted(self.records(wanted))
        if not present:
            return []
        self.changed = True
        if not self.layers.delete(np.asarray(present, dtype=np.int64)):
            # HNSW and a few others cannot delete: keep the vectors, forget the ids, and filter
            # them out of results until the index is rebuilt.
            self._tombstones += len(present)
        return present

    def _drop_paths(self, by_path: dict[str, int], removing: set[int] = frozenset()) -> set[int]:
        """Take each path of ``by_path`` (path -> id) from that image; returns the ids left with
        no path (to remove). A record whose primary path goes takes its first other path instead."""
        catalogue = self.layers.catalogue
        records = self.records(set(by_path.values()) - set(removing))
        others = catalogue.other_paths(records)
        orphans = set()
        for i, rec in records.items():
            drop = {p for p, j in by_path.items() if j == i}
            mine = others.get(i, [])
            left = [o for o in mine if o.path not in drop]
            self.changed = True
            if rec.path not in drop:
                catalogue.delete_paths(sorted(drop & {o.path for o in mine}))  # not a path given to another image since
            elif not left:
                orphans.add(i)
            else:
                self._rewrite(rec, left)
        return orphans

    def repoint(self, attach: Sequence[ImageRecord] = (), detach: dict[str, int] | None = None) -> list[int]:
        """Re-point paths without extracting anything: each record of ``attach`` (``path`` and
        ``id`` set) becomes a path of image ``id`` (taken from the image that held it, if any),
        then each path of ``detach`` (path -> id) leaves that image; images left with no path are
        removed. Returns the ids removed. Attaching first keeps an image whose file was moved
        onto the path of another that changed."""
        attach, detach = list(attach), dict(detach or {})
        removed = self._repoint(attach, detach)

        def replay(newer: Index) -> None:
            removed[:] = newer._repoint(attach, detach)

        self.journal(replay)
        return removed

    def _repoint(self, attach: Sequence[ImageRecord], detach: dict[str, int]) -> list[int]:
        catalogue = self.layers.catalogue
        held = catalogue.ids_by_path(r.path for r in attach)
        live = self.records({r.id for r in attach})
        attach = [r for r in attach if held.get(r.path) != r.id and r.id in live]
        if attach:
            self.changed = True
            catalogue.insert_paths(attach)
        taken = {r.path: held[r.path] for r in attach if r.path in held}  # from the image that held it
        orphans = self._drop_paths(taken) | self._drop_paths(detach)
        return self._remove(sorted(orphans), ())

    def restat(self, records: Sequence[ImageRecord]) -> None:
        """Record the new ``size`` and ``mtime`` of paths held with the same content (a file
        touched, not changed): each record's ``path`` of image ``id``."""
        records = list(records)
        self._restat(records)
        self.journal(lambda newer: newer._restat(records))

    def _restat(self, records: Sequence[ImageRecord]) -> None:
        catalogue = self.layers.catalogue
        held = self.records({r.id for r in records})
        mine = [r for r in records if r.id in held]
        if not mine:
            return
        self.changed = True
        primary = [r for r in mine if held[r.id].path == r.path]
        others = catalogue.other_paths(r.id for r in primary)
        for r in primary:  # the record rewritten with its new stat, its other paths beside it
            self._rewrite(held[r.id], [r, *others.get(r.id, [])])
        catalogue.insert_paths([r for r in mine if held[r.id].path != r.path])

    def _rewrite(self, record: ImageRecord, files: Sequence[ImageRecord]) -> None:
        """Give the image of ``record`` the paths ``files`` (each with its size and mtime), the
        first as its own path. The record is replaced whole (an engine keeps no partial
        updates); its vectors stay."""
        catalogue = self.layers.catalogue
        first = files[0]
        catalogue.delete([record.id])
        catalogue.insert([ImageRecord(first.path, first.size, first.mtime, record.sha256, record.id)])
        catalogue.insert_paths([f.with_id(record.id) for f in files[1:]])

    def put_first(self, paths: Sequence[str]) -> int:
        """Make each of ``paths`` (another path of an indexed image) its image's own path, the
        first of ``paths()``: a restore gives a record back the path it had. Returns how many
        records changed (a path not held, or first already, is skipped)."""
        count = [self._put_first(paths)]

        def replay(newer: Index) -> None:
            count[0] = newer._put_first(paths)

        self.journal(replay)
        return count[0]

    def _put_first(self, paths: Sequence[str]) -> int:
        held = self.layers.catalogue.ids_by_path(paths)
        count = 0
        for path, image_id in held.items():
            record = self.records([image_id])[image_id]
            if record.path == path:
                continue
            others = self.layers.catalogue.other_paths([image_id]).get(image_id, [])
            mine = [o for o in others if o.path == path]
            self._rewrite(record, mine + [record] + [o for o in others if o.path != path])
            self.changed = True
            count += 1
        return count

    def move_paths(self, moves: Sequence[tuple[str, str | ImageRecord]]) -> int:
        """Re-point each (old path, new path or record) to the same image, without extracting
        it again (a file moved or renamed); returns how many paths moved (an old path not held,
        or a new one held already, is skipped)."""
        moves = [(old, new if isinstance(new, ImageRecord) else describe_file(new)) for old, new in moves]
        held = self.layers.catalogue.ids_by_path([old for old, _ in moves] + [new.path for _, new in moves])
        moves = [(old, new) for old, new in moves if old in held and new.path not in held]
        self.repoint([new.with_id(held[old]) for old, new in moves], {old: held[old] for old, _ in moves})
        return len(moves)

    # ---- search -------------------------------------------------------------------------

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The searched vectors of ``ids`` (projected when the index has a projection;
        approximate for PQ); rows of -1 ids are zero.
        ``ValueError`` where the engine cannot return them (fast-scan codes)."""
        return self.layers.reconstruct(ids)

    def descriptors(self, ids: Sequence[int]) -> np.ndarray:
        """The descriptors (n, dim) that were added for ``ids``, as a query would give them
        (``reconstruct`` gives the searched, possibly projected, vectors)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.layers.raw is not None:
            return self.layers.raw.read(ids)
        return self.reconstruct(ids)  # an index from before raw descriptors were kept: never projected

    def search(self, queries: np.ndarray, k: int = 10, qe: int = 0, alpha: float = rerank.DEFAULT_QE_ALPHA,
               model=None, settings=None) -> SearchResult:
        """The k nearest images of each query descriptor (rows of ``queries``, L2-normalised).

        ``qe`` > 0 re-ranks with alpha query expansion over the top ``qe`` hits (see
        ``cfcd.index.rerank``). ``model`` / ``settings`` describe how the queries were made;
        when given they must match the index's (``IndexMismatchError`` otherwise).
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        check_compatible(self, model, settings, queries.shape[1])
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        queries = self.layers.searchable(queries)
        if qe > 0 and len(self.layers.vectors):
            scores, ids, _ = self.layers.nearest(queries, qe, self._tombstones)
            queries = rerank.alpha_query_expansion(queries, self.reconstruct(ids), np.where(ids >= 0, scores, 0.0), alpha)
        scores, ids, records = self.layers.nearest(queries, k, self._tombstones)
        return SearchResult(ids=ids, scores=scores, records=records, others=self.layers.catalogue.other_paths(records))

    def _view(self, vectors) -> "Index":
        """This index searching ``vectors`` (a vector layer over the same ids) instead of its
        own: in memory, for searching only, never saved (``neighbours.augmented``)."""
        view = Index.__new__(Index)
        view.__dict__.update(self.__dict__)
        view.layers = Layers(vectors, self.layers.catalogue, self.layers.raw, self.projection, self.generation)
        view._tombstones = 0
        view.store, view._journal = None, []
        return view
