"""``Index``: FAISS inner-product search over CFCD descriptors, with SQLite metadata.

The FAISS index is exact (``IDMap2,Flat``) by default; any ``faiss.index_factory`` string
(``IVF4096,PQ64``, ``HNSW32``, ``OPQ64,IVF65536_HNSW32,PQ64`` ...) can be given, and indexes
that need training are trained on a sample of the first vectors added. The model identity,
descriptor dimension and extraction settings are stored with the index, and descriptors made
any other way are refused. See ``cfcd.index.store`` for how saves are made atomic.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import metadata as meta
from . import rerank, store
from .metadata import ImageRecord

log = logging.getLogger(__name__)
# faiss reports at INFO which SIMD build it loaded, on every import: not news to a user.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

FORMAT = "cfcd-index"
VERSION = 1
DEFAULT_FACTORY = "Flat"
# Vectors used to train IVF / PQ: enough for k-means on 65k lists (faiss asks for 39 per list).
DEFAULT_TRAIN_SIZE = 256 * 1024


class IndexMismatchError(ValueError):
    """Descriptors made with another model, dimension or extraction settings than the index's."""


@dataclass
class AddReport:
    """What ``add`` did: the ids given to new images (in input order), the inputs skipped as
    already indexed (input position -> id holding that content), repeated within the call
    (input position -> first position) and inputs that could not be read."""

    added: list[int] = field(default_factory=list)
    duplicates: dict[int, int] = field(default_factory=dict)
    repeated: dict[int, int] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class SearchResult:
    """``ids`` (m, k) int64, ``scores`` (m, k) float32, best first; -1 / -inf pad rows with
    fewer than k hits. ``records`` maps every returned id to its metadata."""

    ids: np.ndarray
    scores: np.ndarray
    records: dict[int, ImageRecord]

    def hits(self, row: int = 0) -> list[dict]:
        """The hits of query ``row`` as dicts {rank, id, score, path}."""
        out = []
        for rank, (i, s) in enumerate(zip(self.ids[row], self.scores[row]), start=1):
            if i < 0:
                break
            rec = self.records.get(int(i))
            out.append({"rank": rank, "id": int(i), "score": float(s), "path": rec.path if rec else None})
        return out


def _normalise_settings(settings) -> dict | None:
    if settings is None:
        return None
    d = settings.to_dict() if hasattr(settings, "to_dict") else dict(settings)
    return {"scales": [float(s) for s in d.get("scales", [])], "max_side": d.get("max_side")}


def _model_info(model) -> dict | None:
    if model is None or isinstance(model, dict):
        return model
    from ..extraction import describe_model

    return describe_model(model)


def _uses_native_ids(factory: str) -> bool:
    # IVF indexes store ids themselves and support remove_ids; anything else gets an IDMap2.
    return "IVF" in factory or factory.startswith("IDMap")


def _layers(index) -> Iterator:
    """``index`` and the indexes it wraps (IDMap, PreTransform, Refine), downcast."""
    import faiss

    for _ in range(8):
        index = faiss.downcast_index(index)
        yield index
        inner = getattr(index, "index", None) or getattr(index, "base_index", None)
        if not isinstance(inner, faiss.Index):
            return
        index = inner


def _no_polysemous_training(index) -> None:
    """Switch off polysemous training, which ``index_factory`` turns on for every ``PQ``
    (unless written ``PQ64np``): a simulated annealing over the PQ code orderings that serves
    only Hamming-filtered search (``polysemous_ht``), which cfcd never uses, and that costs
    minutes (on 2 CPU cores, IVF1024,PQ64 trained on 65k vectors in 294 s with it, 65 s
    without). The codes and search results are otherwise the same."""
    for layer in _layers(index):
        if hasattr(layer, "do_polysemous_training"):
            layer.do_polysemous_training = False


def _fast_scan(index) -> bool:
    """Whether ``index`` stores 4-bit fast-scan codes (factory ``...x4fs``)."""
    import faiss

    return any(isinstance(layer, (faiss.IndexFastScan, faiss.IndexIVFFastScan)) for layer in _layers(index))


class Index:
    """A searchable collection of image descriptors.

    >>> idx = Index(dim=512, model=model, settings=ExtractionSettings())   # or Index.build(...)
    >>> idx.add(descriptors, paths); idx.save("photos.idx")
    >>> Index.load("photos.idx").search(queries, k=10).hits(0)
    """

    def __init__(self, dim: int, factory: str = DEFAULT_FACTORY, model=None, settings=None,
                 train_size: int = DEFAULT_TRAIN_SIZE):
        import faiss

        self.dim = int(dim)
        self.factory = factory
        self.model = _model_info(model)
        self.settings = _normalise_settings(settings)
        self.train_size = train_size
        if self.model and self.model.get("dim") not in (None, self.dim):
            raise IndexMismatchError(f"model {self.model['name']} makes {self.model['dim']}-d descriptors, not {self.dim}-d")
        spec = factory if _uses_native_ids(factory) else f"IDMap2,{factory}"
        try:
            self.faiss = faiss.index_factory(self.dim, spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise ValueError(f"index factory string {factory!r} is not understood by faiss: {err}") from None
        _no_polysemous_training(self.faiss)
        self._enable_reconstruct()
        self._db = meta.connect_memory()
        self._next_id = 0
        self._tombstones = 0
        self.path: Path | None = None
        self.generation: int | None = None
        self._lock: store.WriteLock | None = None
        self._writable = True
        self.changed = True  # unsaved changes

    # ---- construction and persistence -------------------------------------------------

    @classmethod
    def build(cls, descriptors: np.ndarray, paths: Sequence[str], factory: str = DEFAULT_FACTORY, model=None,
              settings=None, **kwargs) -> "Index":
        """A new index holding ``descriptors`` (n, d) of the images ``paths``."""
        descriptors = np.asarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2:
            raise ValueError(f"descriptors must be a 2-d array (n, d), got shape {descriptors.shape}")
        index = cls(descriptors.shape[1], factory, model, settings, **kwargs)
        index.add(descriptors, paths)
        return index

    @classmethod
    def load(cls, path: str | Path) -> "Index":
        """The published version of the index at ``path`` (a consistent snapshot, even while
        another process is writing)."""
        import faiss

        root = Path(path)
        for attempt in range(5):
            gen, vdir = store.current(root)
            try:
                db = meta.connect_readonly(vdir / store.META_FILE)
                info = meta.get_info(db)
                vectors = faiss.read_index(str(vdir / store.FAISS_FILE))
                break
            except (RuntimeError, FileNotFoundError, meta.sqlite3.Error):
                # The version was collected between reading CURRENT and opening it: a newer
                # one is published, read CURRENT again.
                if attempt == 4 or store.current(root)[0] == gen:
                    raise
        if info.get("format") != FORMAT:
            raise ValueError(f"{root}: not a cfcd index (format {info.get('format')!r})")
        index = cls.__new__(cls)
        index.dim = info["dim"]
        index.factory = info["factory"]
        index.model = info.get("model")
        index.settings = info.get("settings")
        index.train_size = info.get("train_size", DEFAULT_TRAIN_SIZE)
        index.faiss = vectors
        index._enable_reconstruct()
        index._db = db
        index._next_id = info["next_id"]
        index._tombstones = info.get("tombstones", 0)
        index.path = root
        index.generation = gen
        index._lock = None
        index._writable = False
        index.changed = False
        return index

    @classmethod
    @contextmanager
    def edit(cls, path: str | Path, timeout: float = 60.0, **create) -> Iterator["Index"]:
        """Load (or, with ``create`` arguments such as ``dim=512``, create) the index at ``path``
        holding its write lock, and save it when the block ends without an exception."""
        lock = store.WriteLock(path, timeout).acquire()
        try:
            index = cls.load(path) if store.is_index(path) else cls(**create) if create else None
            if index is None:
                raise FileNotFoundError(f"{path}: not a cfcd index; create one with `cfcd index build`")
            index._lock = lock
            yield index
            if index.changed:
                index.save(path)
        finally:
            lock.release()

    def save(self, path: str | Path | None = None, overwrite: bool = False) -> Path:
        """Publish this index as the next version at ``path`` (default: where it was loaded).

        Refuses to overwrite an index it was not loaded from, or one that another process
        changed since it was loaded, unless ``overwrite``.
        """
        import faiss

        root = Path(path) if path is not None else self.path
        if root is None:
            raise ValueError("save(path): this index was never saved; give a directory")
        lock = self._lock if self._lock is not None and self._lock.path.parent == root else store.WriteLock(root)
        own_lock = not lock.held
        if own_lock:
            lock.acquire()
        try:
            if store.is_index(root) and not overwrite:
                gen, _ = store.current(root)
                same = self.path is not None and Path(self.path).resolve() == root.resolve()
                if not same:
                    raise FileExistsError(f"{root}: an index already exists there; remove it or choose overwrite")
                if gen != self.generation:
                    raise RuntimeError(
                        f"{root}: changed by another process since it was loaded (version {self.generation} -> {gen}); "
                        "load it again and repeat the change"
                    )
            elif root.exists() and not store.is_index(root) and any(root.iterdir()):
                stray = [p.name for p in root.iterdir() if p.name != store.LOCK][:3]
                if stray:
                    raise FileExistsError(f"{root}: exists and is not a cfcd index (holds {stray}); choose another path")
            db = self._writable_db()
            meta.set_info(db, format=FORMAT, version=VERSION, dim=self.dim, factory=self.factory, model=self.model,
                          settings=self.settings, next_id=self._next_id, tombstones=self._tombstones,
                          train_size=self.train_size)
            staging = store.new_staging(root)
            faiss.write_index(self.faiss, str(staging / store.FAISS_FILE))
            meta.write_file(db, staging / store.META_FILE)
            self.generation = store.publish(root, staging)
            self.path = root
            self.changed = False
        finally:
            if own_lock:
                lock.release()
        return root

    # ---- contents -----------------------------------------------------------------------

    def __len__(self) -> int:
        return meta.count(self._db)

    def info(self) -> dict:
        return {
            "path": str(self.path) if self.path else None,
            "version": self.generation,
            "images": len(self),
            "dim": self.dim,
            "factory": self.factory,
            "faiss": type(self.faiss).__name__,
            "trained": bool(self.faiss.is_trained),
            "vectors_in_faiss": int(self.faiss.ntotal),
            "removed_pending": self._tombstones,
            "model": self.model,
            "settings": self.settings,
        }

    def records(self, ids: Sequence[int]) -> dict[int, ImageRecord]:
        return meta.by_ids(self._db, ids)

    def record(self, image_id: int) -> ImageRecord | None:
        return self.records([image_id]).get(int(image_id))

    def ids(self) -> list[int]:
        return meta.all_ids(self._db)

    def check_compatible(self, model=None, settings=None, dim: int | None = None) -> None:
        """Raise ``IndexMismatchError`` unless descriptors made by ``model`` with ``settings``
        (either may be None: not checked) belong in this index."""
        info = _model_info(model)
        if dim is not None and dim != self.dim:
            raise IndexMismatchError(f"descriptors are {dim}-d but the index holds {self.dim}-d descriptors")
        if info is not None and self.model is not None and info != self.model:
            raise IndexMismatchError(
                f"query model {info.get('name')!r} ({info.get('config')}) differs from the index's model "
                f"{self.model.get('name')!r} ({self.model.get('config')}); search with the index's model "
                "(the default) or rebuild the index"
            )
        s = _normalise_settings(settings)
        if s is not None and self.settings is not None and s != self.settings:
            raise IndexMismatchError(
                f"query extraction settings {s} differ from the index's {self.settings}; "
                "use the index's scales and max_side (the default) or rebuild the index"
            )

    # ---- updates ------------------------------------------------------------------------

    def _writable_db(self):
        if not self._writable:
            self._db = meta.connect_memory(self._db)
            self._writable = True
        self.changed = True
        return self._db

    def _enable_reconstruct(self) -> None:
        # IVF indexes need a direct map to return stored vectors (query expansion, DBA).
        import faiss

        try:
            ivf = faiss.extract_index_ivf(self.faiss)
        except RuntimeError:
            return
        if ivf.direct_map.type != faiss.DirectMap.Hashtable:
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)

    def _train(self, vectors: np.ndarray) -> None:
        if self.faiss.is_trained:
            return
        rng = np.random.default_rng(0)
        sample = vectors if len(vectors) <= self.train_size else vectors[rng.choice(len(vectors), self.train_size, replace=False)]
        log.info("training %s on %d vectors", self.factory, len(sample))
        try:
            self.faiss.train(np.ascontiguousarray(sample))
        except RuntimeError as err:
            raise ValueError(
                f"cannot train {self.factory!r} on {len(sample)} vectors ({str(err).splitlines()[-1] if str(err) else err}); "
                "add more images at once or choose a smaller index (fewer IVF lists, or Flat)"
            ) from None
        self._enable_reconstruct()

    def add(self, descriptors: np.ndarray, paths: Sequence[str | ImageRecord], model=None, settings=None) -> AddReport:
        """Add descriptors of the images ``paths`` (or full ``ImageRecord``s).

        An image whose content (sha256) or, for names that are not files here, whose path is
        already indexed, or repeated in this call, is skipped. ``model`` / ``settings``, when
        given, must match the index's (they are adopted by an index created without them).
        """
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or len(descriptors) != len(paths):
            raise ValueError(f"{len(paths)} paths for descriptors of shape {descriptors.shape}")
        self.check_compatible(model, settings, descriptors.shape[1])
        self.model = self.model or _model_info(model)
        self.settings = self.settings or _normalise_settings(settings)
        recs = [p if isinstance(p, ImageRecord) else meta.describe_file(p) for p in paths]
        report = AddReport()
        keep = self._deduplicate(recs, report)
        if not keep:
            return report
        db = self._writable_db()
        vectors = descriptors if len(keep) == len(descriptors) else descriptors[keep]  # no 2 GB copy at 1M
        self._train(vectors)
        ids = np.arange(self._next_id, self._next_id + len(keep), dtype=np.int64)
        self.faiss.add_with_ids(vectors, ids)
        meta.insert(db, [ImageRecord(recs[k].path, recs[k].size, recs[k].mtime, recs[k].sha256, int(i)) for k, i in zip(keep, ids)])
        self._next_id += len(keep)
        report.added = ids.tolist()
        return report

    def _deduplicate(self, recs: list[ImageRecord], report: AddReport) -> list[int]:
        """Input positions to add; fills ``report.duplicates`` for the others."""
        by_hash = meta.ids_by_hash(self._db, (r.sha256 for r in recs))
        by_path = meta.ids_by_path(self._db, (r.path for r in recs if not r.sha256))
        seen: dict[str, int] = {}
        keep = []
        for pos, r in enumerate(recs):
            key = r.sha256 or f"path:{r.path}"
            existing = by_hash.get(r.sha256) if r.sha256 else by_path.get(r.path)
            if existing is not None:
                report.duplicates[pos] = existing
            elif key in seen:
                report.repeated[pos] = seen[key]
            else:
                seen[key] = pos
                keep.append(pos)
        return keep

    def add_images(self, model, images: Sequence[str | Path], progress: bool = True, **extract_kwargs) -> AddReport:
        """Extract and add images (paths); only images not already indexed are extracted.
        ``extract_kwargs`` go to ``cfcd.extract`` (scales, max_side, batch_size, ...)."""
        from ..extraction import CFCD_SCALES, ExtractionSettings, extract, failed_rows

        settings = ExtractionSettings(tuple(float(s) for s in extract_kwargs.pop("scales", None) or CFCD_SCALES),
                                      extract_kwargs.pop("max_side", None))
        self.check_compatible(model, settings)
        recs = [meta.describe_file(p) for p in images]
        report = AddReport()
        keep = self._deduplicate(recs, report)
        if not keep:
            return report
        desc = extract(model, [recs[k].path for k in keep], scales=settings.scales, max_side=settings.max_side,
                       skip_errors=True, progress=progress, **extract_kwargs)
        bad = set(failed_rows(desc).tolist())
        for row in sorted(bad):
            report.failed[keep[row]] = f"{recs[keep[row]].path}: not a readable image"
        good = [row for row in range(len(keep)) if row not in bad]
        inner = self.add(desc[good], [recs[keep[row]] for row in good], model=model, settings=settings)
        report.added = inner.added
        return report

    def remove(self, ids: Sequence[int] = (), paths: Sequence[str] = ()) -> list[int]:
        """Remove images by id or by path; returns the ids removed (unknown ones are ignored)."""
        wanted = set(int(i) for i in ids) | set(meta.ids_by_path(self._db, meta.resolve_paths(paths)).values())
        present = sorted(self.records(wanted))
        if not present:
            return []
        db = self._writable_db()
        try:
            self.faiss.remove_ids(np.asarray(present, dtype=np.int64))
        except RuntimeError:
            # HNSW and a few others cannot delete: keep the vectors, forget the ids, and filter
            # them out of results until the index is rebuilt.
            self._tombstones += len(present)
        meta.delete(db, present)
        return present

    # ---- search -------------------------------------------------------------------------

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (approximate for PQ); rows of -1 ids are zero.

        Refused (``ValueError``) on fast-scan indexes (``PQ..x4fs``): faiss 1.15 crashes the
        process when reconstructing from one read back from disk."""
        if _fast_scan(self.faiss):
            raise ValueError(
                f"index factory {self.factory!r} stores fast-scan (x4fs) codes, from which faiss cannot "
                "reliably return stored vectors (it crashes on an index read from disk): query expansion "
                "and DBA are not available on it; search without them, or rebuild with a plain PQ "
                "(e.g. 'IVF4096,PQ64') or Flat index"
            )
        flat = np.asarray(ids, dtype=np.int64).ravel()
        out = np.zeros((len(flat), self.dim), np.float32)
        for n, i in enumerate(flat):
            if i >= 0:
                out[n] = self.faiss.reconstruct(int(i))
        return out.reshape(*np.shape(ids), self.dim)

    def _raw_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, dict]:
        total = int(self.faiss.ntotal)
        if total == 0:
            m = len(queries)
            return np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64), {}
        want = min(total, k + self._tombstones)
        scores, ids = self.faiss.search(queries, want)
        records = self.records(ids[ids >= 0])
        if self._tombstones:
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

    def search(self, queries: np.ndarray, k: int = 10, qe: int = 0, alpha: float = rerank.DEFAULT_QE_ALPHA,
               model=None, settings=None) -> SearchResult:
        """The k nearest images of each query descriptor (rows of ``queries``, L2-normalised).

        ``qe`` > 0 re-ranks with alpha query expansion over the top ``qe`` hits (see
        ``cfcd.index.rerank``). ``model`` / ``settings`` describe how the queries were made;
        when given they must match the index's (``IndexMismatchError`` otherwise).
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        self.check_compatible(model, settings, queries.shape[1])
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if qe > 0 and self.faiss.ntotal:
            scores, ids, _ = self._raw_search(queries, qe)
            queries = rerank.alpha_query_expansion(queries, self.reconstruct(ids), np.where(ids >= 0, scores, 0.0), alpha)
        scores, ids, records = self._raw_search(queries, k)
        return SearchResult(ids=ids, scores=scores, records=records)

    def search_images(self, images: Sequence, k: int = 10, model=None, qe: int = 0,
                      alpha: float = rerank.DEFAULT_QE_ALPHA, **extract_kwargs) -> SearchResult:
        """Search with query images (paths, PIL images or (image, (x0, y0, x1, y1)) crops),
        extracted with the index's model (loaded by name if ``model`` is None) and settings."""
        from ..extraction import extract

        model = model if model is not None else self.load_model()
        self.check_compatible(model)
        scales = self.settings["scales"] if self.settings else extract_kwargs.pop("scales")
        max_side = self.settings["max_side"] if self.settings else extract_kwargs.pop("max_side", None)
        extract_kwargs.setdefault("progress", False)
        desc = extract(model, list(images), scales=scales, max_side=max_side, **extract_kwargs)
        return self.search(desc, k, qe=qe, alpha=alpha)

    def load_model(self):
        """The model that made this index's descriptors, loaded by its stored name."""
        from ..model import load_model

        if not self.model:
            raise ValueError("this index was built from descriptors without a model description; pass the model explicitly")
        model = load_model(self.model["name"])
        self.check_compatible(model)
        return model

    def augmented(self, n: int = 10, alpha: float = rerank.DEFAULT_DBA_ALPHA) -> "Index":
        """A copy (in memory) whose database vectors are replaced by their alpha-DBA versions
        (see ``cfcd.index.rerank.database_augmentation``); exact k-NN over the whole index."""
        import faiss

        ids = np.asarray(self.ids(), dtype=np.int64)
        vectors = rerank.database_augmentation(self.reconstruct(ids), n, alpha)
        copy = Index.__new__(Index)
        copy.__dict__.update(self.__dict__)
        copy.faiss = faiss.clone_index(self.faiss)
        copy.faiss.reset()
        copy._enable_reconstruct()
        copy.faiss.add_with_ids(vectors, ids)
        copy._tombstones = 0
        copy._lock = None
        return copy
