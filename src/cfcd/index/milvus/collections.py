"""The Milvus engine's layers over its collections (``cfcd.index.contract``): ``MilvusVectors``
(the searched vectors, and the raw descriptors) and ``MilvusCatalogue`` (image records; the
index's settings in the collection's ``cfcd.info`` property). Rows carry a version; a reader
sees those up to the published one (``cfcd.index.milvus``). Each layer holds the store it
came from (``store.MilvusStore``: its client, its collections' names)."""

from __future__ import annotations

import json

import numpy as np

from ...errors import ConfigError
from ..records import ImageRecord
from ..vectors import Capabilities

# Milvus's largest k; ids per filter expression.
MAX_TOPK = 16384
_CHUNK = 1000
# Search parameters by index type: enough candidates that recall@10 is near exact (docs/scaling.md).
SEARCH_PARAMS = {"HNSW": {"ef": 128}, "HNSW_SQ": {"ef": 128}, "IVF_FLAT": {"nprobe": 16}, "IVF_SQ8": {"nprobe": 16},
                 "IVF_PQ": {"nprobe": 16}, "DISKANN": {"search_list": 100}}


def parse_factory(factory: str) -> tuple[str, dict]:
    """'HNSW:M=32,efConstruction=200' -> ('HNSW', {'M': 32, 'efConstruction': 200})."""
    kind, _, params = factory.partition(":")
    out = {}
    for item in filter(None, params.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"Milvus index {factory!r}: expected TYPE or TYPE:key=value,... e.g. 'HNSW:M=32,efConstruction=200'")
        out[key.strip()] = int(value) if value.strip().isdigit() else value.strip()
    return kind.strip().upper(), out


def literals(values) -> str:
    """A Milvus filter list literal (JSON string escapes are Milvus's)."""
    return "[" + ",".join(json.dumps(v, ensure_ascii=False) if isinstance(v, str) else str(int(v)) for v in values) + "]"


def chunks(values: list, size: int = _CHUNK):
    for start in range(0, len(values), size):
        yield values[start:start + size]


class MilvusVectors:
    """The vector layer over collection ``NAME``, as of version ``version``, plus this
    writer's pending additions and removals."""

    engine = "milvus"

    def __init__(self, store, dim: int, factory: str, version: int, count: int, collection: str):
        self.store = store
        self.collection = collection
        self.dim = int(dim)
        self.factory = factory
        self.version = version
        self.count = count  # vectors in ``version`` (kept in cfcd.info: Milvus counts by scanning)
        self._ids: list[np.ndarray] = []
        self._vecs: list[np.ndarray] = []
        self.removed: set[int] = set()
        kind, _ = parse_factory(factory)
        self._search_params = {"metric_type": "IP", "params": SEARCH_PARAMS.get(kind, {})}

    @property
    def capabilities(self) -> Capabilities:
        # Milvus trains its own index types and keeps the raw vectors beside them.
        return Capabilities(needs_training=False, removes=True, reconstructs=True)

    def describe(self) -> dict:
        return {"engine": self.engine, "factory": self.factory, "uri": self.store.uri, "collection": self.collection,
                "vectors": len(self)}

    def pending(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._ids:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        if len(self._ids) > 1:
            self._ids, self._vecs = [np.concatenate(self._ids)], [np.concatenate(self._vecs)]
        return self._ids[0], self._vecs[0]

    def published(self, version: int, count: int) -> None:
        self.version, self.count = version, count
        self._ids, self._vecs, self.removed = [], [], set()

    def _filter(self) -> str:
        return f"version <= {self.version}"

    def __len__(self) -> int:
        return self.count + len(self.pending()[0]) - len(self.removed)

    def train(self, sample: np.ndarray) -> None:
        pass

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self._ids.append(np.asarray(ids, dtype=np.int64))
        self._vecs.append(np.ascontiguousarray(vectors, dtype=np.float32))

    def remove(self, ids: np.ndarray) -> bool:
        ids = np.asarray(ids, dtype=np.int64)
        pid, pvec = self.pending()
        keep = ~np.isin(pid, ids)
        if not keep.all():
            self._ids, self._vecs = [pid[keep]], [pvec[keep]]
        self.removed |= set(ids[~np.isin(ids, pid)].tolist())
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        m = len(queries)
        scores = np.full((m, k), -np.inf, np.float32)
        ids = np.full((m, k), -1, np.int64)
        limit = min(MAX_TOPK, k + len(self.removed))
        hits = self.store.client.search(self.collection, data=np.asarray(queries, np.float32).tolist(), limit=limit,
                                        filter=self._filter(), anns_field="vector", search_params=self._search_params,
                                        output_fields=["id"])
        pid, pvec = self.pending()
        own = queries @ pvec.T if len(pid) else None
        for row, found in enumerate(hits):
            cand = [(h["distance"], h["id"]) for h in found if h["id"] not in self.removed]
            if own is not None:
                cand += list(zip(own[row].tolist(), pid.tolist()))
            cand.sort(key=lambda c: -c[0])
            for col, (s, i) in enumerate(cand[:k]):
                scores[row, col], ids[row, col] = s, i
        return scores, ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors (n, d) of ``ids`` (n,); ``read`` for the raw layer."""
        out = np.zeros((len(ids), self.dim), np.float32)
        pid, pvec = self.pending()
        pos = {int(i): n for n, i in enumerate(pid)}
        stored = [int(i) for i in ids if int(i) not in pos]
        found = {}
        for part in chunks(sorted(set(stored))):
            for row in self.store.client.get(self.collection, ids=part, output_fields=["vector"]):
                found[row["id"]] = row["vector"]
        for n, i in enumerate(ids):
            i = int(i)
            out[n] = pvec[pos[i]] if i in pos else found[i]
        return out

    read = reconstruct  # the raw layer's name for it (``cfcd.index.raw``)

    def compact(self, keep: np.ndarray) -> int:
        """Where removed rows stay on disk (Milvus Lite, ``store.rewrites``): move the rows of
        ``keep`` to a new collection, published in place of this one; returns the rows left
        behind. A server compacts its own segments: nothing to do."""
        dead = self.store.dead_rows() if self.store.rewrites() else 0
        if not dead:
            return 0
        keep = np.asarray(keep, dtype=np.int64)
        rows = self.reconstruct(keep)
        raw = self.collection == self.store._raw_collection(self.store.info())
        fresh = self.store.create_vectors(self.dim, self.factory, "r" if raw else "s")
        self.collection, self.count, self.removed = fresh.collection, 0, set()
        self._ids, self._vecs = [keep], [rows]
        return dead


class MilvusCatalogue:
    """The catalogue over collection ``NAME_images`` (image records) and its ``cfcd.info``
    property (settings), as of version ``version``, plus this writer's pending changes."""

    def __init__(self, store, version: int, count: int, info: dict):
        self.store = store
        self.version = version
        self.count = count
        self._info = dict(info)
        self.updates: dict = {}
        self.pending: dict[int, ImageRecord] = {}
        self.removed: set[int] = set()
        # Other paths of the same content (collection NAME_paths): pending ones by path, and
        # the published paths this writer dropped.
        self.pending_paths: dict[str, ImageRecord] = {}
        self.removed_paths: set[str] = set()

    def published(self, version: int, count: int) -> None:
        self.version, self.count = version, count
        self._info.update(self.updates)
        self.updates, self.pending, self.removed = {}, {}, set()
        self.pending_paths, self.removed_paths = {}, set()

    def info(self) -> dict:
        return {**self._info, **self.updates}

    def set_info(self, **values) -> None:
        self.updates.update(values)

    def insert(self, records) -> None:
        self.pending.update({r.id: r for r in records})

    def delete(self, ids) -> None:
        """Remove records and their other paths; a record inserted again under the same id
        (a new primary path) replaces the published one."""
        ids = set(map(int, ids))
        for i in ids:
            if self.pending.pop(i, None) is None:
                self.removed.add(i)
        self.pending_paths = {p: r for p, r in self.pending_paths.items() if r.id not in ids}

    def _live(self, i: int) -> bool:
        """Whether the published row of ``i`` is still this writer's (not removed or replaced)."""
        return i not in self.removed

    def _query(self, expr: str) -> list[ImageRecord]:
        rows = self.store.client.query(self.store.images, filter=f"({expr}) and version <= {self.version}",
                                       output_fields=["id", "path", "size", "mtime", "sha256"])
        return [ImageRecord(r["path"], None if r["size"] < 0 else r["size"], None if r["mtime"] < 0 else r["mtime"],
                            r["sha256"] or None, r["id"]) for r in rows if self._live(r["id"])]

    def records(self, ids) -> dict[int, ImageRecord]:
        wanted = sorted({int(i) for i in ids})
        out = {i: self.pending[i] for i in wanted if i in self.pending}
        for part in chunks([i for i in wanted if i not in self.pending]):
            out.update({r.id: r for r in self._query(f"id in {literals(part)}")})
        return out

    def _ids_by(self, field: str, values) -> dict[str, int]:
        values = sorted(set(values))
        out = {}
        for part in chunks(values):
            out.update({getattr(r, field): r.id for r in self._query(f"{field} in {literals(part)}")})
        wanted = set(values)
        out.update({getattr(r, field): i for i, r in self.pending.items() if getattr(r, field) in wanted})
        return out

    def ids_by_hash(self, hashes) -> dict[str, int]:
        return self._ids_by("sha256", (h for h in hashes if h))

    def ids_by_path(self, paths) -> dict[str, int]:
        """path -> id, for the paths held, primary or other."""
        paths = list(paths)
        out = {r.path: r.id for part in chunks(sorted(set(paths))) for r in self._query_paths(f"path in {literals(part)}")}
        wanted = set(paths)  # and this writer's, not yet published
        out.update({p: r.id for p, r in self.pending_paths.items() if p in wanted})
        out.update(self._ids_by("path", paths))
        return out

    # ---- other paths of the same content ----------------------------------------------

    def _query_paths(self, expr: str) -> list[ImageRecord]:
        """The published other paths matching ``expr``, less those this writer dropped, plus its pending ones."""
        rows = []
        if self.store.client.has_collection(self.store.paths):  # an index from before other paths were kept has none
            rows = self.store.client.query(self.store.paths, filter=f"({expr}) and version <= {self.version}",
                                           output_fields=["path", "image", "size", "mtime"])
        return [ImageRecord(r["path"], None if r["size"] < 0 else r["size"], None if r["mtime"] < 0 else r["mtime"],
                            None, r["image"]) for r in rows
                if r["path"] not in self.removed_paths and r["path"] not in self.pending_paths and self._live(r["image"])]

    def insert_paths(self, records) -> None:
        self.pending_paths.update({r.path: r for r in records})

    def delete_paths(self, paths) -> None:
        for p in paths:
            self.pending_paths.pop(p, None)
            self.removed_paths.add(p)

    def other_paths(self, ids) -> dict[int, list[ImageRecord]]:
        wanted = sorted({int(i) for i in ids})
        found = [r for part in chunks(wanted) for r in self._query_paths(f"image in {literals(part)}")]
        found += [r for r in self.pending_paths.values() if r.id in set(wanted)]
        out: dict[int, list[ImageRecord]] = {}
        for r in sorted(found, key=lambda r: r.path):
            out.setdefault(r.id, []).append(r)
        return out

    def __len__(self) -> int:
        return self.count + len(self.pending) - len(self.removed)

    def ids(self) -> list[int]:
        out = []
        it = self.store.client.query_iterator(self.store.images, batch_size=_CHUNK * 4, filter=f"version <= {self.version}",
                                              output_fields=["id"])
        while batch := it.next():
            out += [r["id"] for r in batch if r["id"] not in self.removed]
        it.close()
        return sorted(out + list(self.pending))
