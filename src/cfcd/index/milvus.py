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
version) a projection is learned from; ``NAME_proj`` the learned projection's rows (its mean,
then its matrix; ``cfcd.index.projection``). A projection changes the searched dimension, so
its vectors go to a new collection ``NAME_s<hex>`` that the published settings name; the one
it replaced is dropped one projection later (readers that opened it a moment ago still find
it). The index's settings (format, dim, model, extraction settings, next id, published
version, the searched collection) are the catalogue collection's property ``cfcd.info``.

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

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..errors import AlreadyExists, ConfigError, Conflict, MismatchError, NotFound, Unavailable
from .layers import Layers
from .projection import Projection
from .records import ImageRecord
from .store import LocalLock, failpoint
from .vectors import Capabilities

DEFAULT_COLLECTION = "cfcd"
DEFAULT_FACTORY = "FLAT"
INFO_KEY = "cfcd.info"
MAX_VARCHAR = 65535
# Milvus's largest k; rows per insert call (a gRPC message stays well under its 64 MB limit).
MAX_TOPK = 16384
INSERT_BATCH = 4096
_CHUNK = 1000
LEASE_SECONDS = 300
# Search parameters by index type: enough candidates that recall@10 is near exact (docs/scaling.md).
SEARCH_PARAMS = {"HNSW": {"ef": 128}, "HNSW_SQ": {"ef": 128}, "IVF_FLAT": {"nprobe": 16}, "IVF_SQ8": {"nprobe": 16},
                 "IVF_PQ": {"nprobe": 16}, "DISKANN": {"search_list": 100}}


def parse_location(location: str | Path) -> tuple[str, str, bool]:
    """(pymilvus uri, collection name, is Milvus Lite) of a location."""
    text = str(location)
    if text.startswith(("milvus://", "http://", "https://")):
        url = urlparse(text)
        scheme = "http" if url.scheme == "milvus" else url.scheme
        name = url.path.strip("/") or DEFAULT_COLLECTION
        if not url.hostname or not name.replace("_", "").isalnum():
            raise ConfigError(f"{text}: expected milvus://HOST:PORT/COLLECTION (letters, digits and _ in the name)")
        return f"{scheme}://{url.hostname}:{url.port or 19530}", name, False
    return str(Path(text).expanduser().resolve()), DEFAULT_COLLECTION, True


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


def _literals(values) -> str:
    """A Milvus filter list literal (JSON string escapes are Milvus's)."""
    return "[" + ",".join(json.dumps(v, ensure_ascii=False) if isinstance(v, str) else str(int(v)) for v in values) + "]"


def _chunks(values: list, size: int = _CHUNK):
    for start in range(0, len(values), size):
        yield values[start:start + size]


class MilvusStore:
    """Where a Milvus index lives, and how a version is published there."""

    engine = "milvus"

    def __init__(self, location: str | Path):
        self.uri, self.name, self.lite = parse_location(location)
        self._location = str(location)
        self.images = f"{self.name}_images"
        self.raw = f"{self.name}_raw"
        self.projections = f"{self.name}_proj"
        self._client = None
        self._opened_projection = None  # the Projection read by ``open`` (published already)

    @property
    def location(self) -> str:
        return self._location

    @property
    def client(self):
        if self._client is None:
            try:
                from pymilvus import MilvusClient
            except ImportError as err:
                raise Unavailable("the Milvus engine needs pymilvus (and milvus-lite for .db paths): "
                                  "pip install 'cfcd[milvus]'") from err
            try:
                self._client = MilvusClient(self.uri)
            except Exception as err:  # pymilvus raises its own exception types for any failure
                busy = " (Milvus Lite lets one process open it: serve it with `milvus-lite server`)" if self.lite else ""
                raise Unavailable(f"{self._location}: cannot open Milvus at {self.uri}{busy}: {err}") from None
        return self._client

    def close(self) -> None:
        """Let go of the connection (for Milvus Lite: of the data directory, which another
        process may then open)."""
        if self._client is not None:
            self._client.close()
            self._client = None
            if self.lite:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)

    # ---- settings in the catalogue's properties -------------------------------------------

    def _has_collections(self) -> bool:
        return self.client.has_collection(self.images) and self.client.has_collection(self.name)

    def info(self) -> dict:
        if not self._has_collections():
            return {}
        props = self.client.describe_collection(self.images).get("properties", {})
        return json.loads(props.get(INFO_KEY, "{}"))

    def _write_info(self, info: dict) -> None:
        self.client.alter_collection_properties(self.images, properties={INFO_KEY: json.dumps(info)})

    def exists(self) -> bool:
        return self.info().get("published", 0) > 0

    def version(self) -> int:
        info = self.info()
        if not info.get("published"):
            raise NotFound(f"{self._location}: no cfcd index in Milvus collection {self.name!r}; "
                           "create one with `cfcd index build`")
        return info["published"]

    def check_vacant(self) -> None:
        pass  # collections are made by ``create``; an unpublished one holds nothing visible

    # ---- opening and creating ---------------------------------------------------------------

    def _load(self, *names: str) -> None:
        for name in names:
            self.client.load_collection(name)

    def open(self) -> Layers:
        info = self.info()
        gen = self.version()
        searched = info.get("vectors_collection", self.name)
        described = info.get("projection")
        keeps_raw = bool(info.get("raw"))
        self._load(searched, self.images, *((self.raw, self.projections) if keeps_raw else ()))
        count = info.get("count", 0)
        projection = None
        if described:
            rows = self.client.query(self.projections, filter=f"version == {described['version']}",
                                     output_fields=["id", "vector"])
            rows.sort(key=lambda r: r["id"])
            projection = Projection.from_rows(np.array([r["vector"] for r in rows]), described)
        self._opened_projection = projection
        dim = projection.dim if projection else info["dim"]
        raw = MilvusVectors(self, info["dim"], "FLAT", gen, count, self.raw) if keeps_raw else None
        return Layers(MilvusVectors(self, dim, info["factory"], gen, count, searched),
                      MilvusCatalogue(self, gen, count, info), raw, projection, gen)

    def create(self, dim: int, factory: str | None) -> Layers:
        """Views of a new index (the collections are made if absent; nothing is visible
        until the first publish)."""
        factory = factory or DEFAULT_FACTORY
        kind, params = parse_factory(factory)
        info = self.info()
        if not self._has_collections():
            self._create_collection(self.name, dim, kind, params)
            self._create_collection(self.images, 2, catalogue=True)
            self._create_collection(self.raw, dim)
            self._create_collection(self.projections, dim)
            info = {"published": 0}
            self._write_info(info)
        elif info.get("published"):
            raise AlreadyExists(f"{self._location}: an index already exists there (a Milvus collection is not "
                                f"replaced by --force: drop collections {self.name!r}, {self.images!r}, {self.raw!r} "
                                f"and {self.projections!r} first)")
        self._load(self.name, self.images, self.raw, self.projections)
        gen = info.get("published", 0)
        return Layers(MilvusVectors(self, dim, factory, gen, 0, self.name), MilvusCatalogue(self, gen, 0, {}),
                      MilvusVectors(self, dim, "FLAT", gen, 0, self.raw))

    def create_vectors(self, dim: int, factory: str | None) -> "MilvusVectors":
        """An empty vector layer in a new collection (invisible until a publish names it)."""
        factory = factory or DEFAULT_FACTORY
        name = f"{self.name}_s{secrets.token_hex(4)}"
        self._create_collection(name, dim, *parse_factory(factory))
        self._load(name)
        return MilvusVectors(self, dim, factory, 0, 0, name)

    def _create_collection(self, name: str, dim: int, kind: str = "FLAT", params: dict | None = None,
                           catalogue: bool = False) -> None:
        from pymilvus import DataType

        client = self.client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("version", DataType.INT64)
        if catalogue:
            schema.add_field("path", DataType.VARCHAR, max_length=MAX_VARCHAR)
            schema.add_field("size", DataType.INT64)
            schema.add_field("mtime", DataType.DOUBLE)
            schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        index = client.prepare_index_params()
        index.add_index("vector", index_type=kind, metric_type="IP", params=params or {})
        try:
            client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
        except Exception as err:
            raise ConfigError(f"Milvus refused index {kind} {params} for {name!r}: {err}") from None

    # ---- the write lock and publishing --------------------------------------------------

    def lock(self, timeout: float = 60.0):
        # Milvus Lite: the data directory's own lock already makes this process the only one.
        return LocalLock(self._location, timeout) if self.lite else _Lease(self, timeout)

    def publish(self, layers: Layers) -> int:
        """Make the pending changes of ``layers`` the next version (with the lock held);
        returns its number."""
        vectors, catalogue, raw = layers.vectors, layers.catalogue, layers.raw
        if not isinstance(vectors, MilvusVectors):
            raise MismatchError(f"{self._location}: a Milvus location holds Milvus indexes; this index uses the "
                                f"{vectors.engine} engine (build it at this location instead)")
        info = self.info()
        base = info.get("published", 0)
        gen = base + 1
        client = self.client
        searched = info.get("vectors_collection", self.name)
        keeps = [vectors] + ([raw] if raw is not None else [])
        for name in {searched, self.images, *(v.collection for v in keeps)}:  # invisible rows of a writer that died
            client.delete(name, filter=f"version > {base}")
        for layer in keeps:
            ids, vecs = layer.pending()
            for start in range(0, len(ids), INSERT_BATCH):
                client.insert(layer.collection, [{"id": int(i), "vector": v, "version": gen} for i, v in
                                                 zip(ids[start:start + INSERT_BATCH], vecs[start:start + INSERT_BATCH])])
        updates = {}
        if raw is not None:
            updates["raw"] = self.raw
        if layers.projection is not None and layers.projection is not self._opened_projection:
            rows = layers.projection.rows()
            client.insert(self.projections, [{"id": gen * 1_000_000 + n, "vector": r, "version": gen}
                                             for n, r in enumerate(rows)])
            updates["projection"] = {**layers.projection.describe(), "version": gen}
        elif layers.projection is not None:
            updates["projection"] = info["projection"]
        retire = []
        if vectors.collection != searched:  # a new vector layer (a projection learned or dropped)
            retire = info.get("retired", [])
            updates.update(vectors_collection=vectors.collection, retired=[searched])
        records = list(catalogue.pending.values())
        for part in _chunks(records, INSERT_BATCH):
            client.insert(self.images, [{"id": r.id, "vector": [0.0, 0.0], "version": gen, "path": r.path,
                                         "size": r.size if r.size is not None else -1,
                                         "mtime": r.mtime if r.mtime is not None else -1.0,
                                         "sha256": r.sha256 or ""} for r in part])
        removed = sorted(vectors.removed | catalogue.removed)
        count = len(catalogue)
        failpoint("index.staged")  # rows written, invisible: the crash tests stop a writer here
        catalogue.set_info(**updates)
        self._write_info({**info, **catalogue.updates, "published": gen, "count": count, "writer": info.get("writer")})
        self._opened_projection = layers.projection
        for part in _chunks(removed):
            for name in (vectors.collection, self.images, *([self.raw] if raw is not None else [])):
                client.delete(name, ids=part)
        for name in retire:  # replaced two projections ago: no reader still searches it
            if name != self.name:
                client.drop_collection(name)
        for layer in keeps:
            layer.published(gen, count)
        catalogue.published(gen, count)
        return gen


class _Lease:
    """An advisory write lease in ``cfcd.info`` (owner, expiry) for a Milvus server."""

    def __init__(self, store: MilvusStore, timeout: float):
        self.store = store
        self.timeout = timeout
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"

    def __enter__(self):
        deadline = time.monotonic() + self.timeout
        while True:
            info = self.store.info()
            lease = info.get("writer") or {}
            if not lease or lease.get("until", 0) < time.time() or lease.get("owner") == self.owner or _dead(lease):
                self.store._write_info({**info, "writer": {"owner": self.owner, "until": time.time() + LEASE_SECONDS}})
                if (self.store.info().get("writer") or {}).get("owner") == self.owner:
                    return self
            if time.monotonic() > deadline:
                raise Conflict(f"{self.store.location}: {lease.get('owner')} has been writing to this index for over "
                               f"{self.timeout:.0f} s; wait for it to finish and retry")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        info = self.store.info()
        if (info.get("writer") or {}).get("owner") == self.owner:
            self.store._write_info({**info, "writer": None})


def _dead(lease: dict) -> bool:
    """Whether the lease's owner is a process of this machine that no longer runs (a killed
    writer's lease need not wait for its expiry)."""
    host, _, rest = str(lease.get("owner", "")).partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class MilvusVectors:
    """The vector layer over collection ``NAME``, as of version ``version``, plus this
    writer's pending additions and removals."""

    engine = "milvus"

    def __init__(self, store: MilvusStore, dim: int, factory: str, version: int, count: int, collection: str):
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
        for part in _chunks(sorted(set(stored))):
            for row in self.store.client.get(self.collection, ids=part, output_fields=["vector"]):
                found[row["id"]] = row["vector"]
        for n, i in enumerate(ids):
            i = int(i)
            out[n] = pvec[pos[i]] if i in pos else found[i]
        return out


    read = reconstruct  # the raw layer's name for it (``cfcd.index.raw``)


class MilvusCatalogue:
    """The catalogue over collection ``NAME_images`` (image records) and its ``cfcd.info``
    property (settings), as of version ``version``, plus this writer's pending changes."""

    def __init__(self, store: MilvusStore, version: int, count: int, info: dict):
        self.store = store
        self.version = version
        self.count = count
        self._info = dict(info)
        self.updates: dict = {}
        self.pending: dict[int, ImageRecord] = {}
        self.removed: set[int] = set()

    def published(self, version: int, count: int) -> None:
        self.version, self.count = version, count
        self._info.update(self.updates)
        self.updates, self.pending, self.removed = {}, {}, set()

    def info(self) -> dict:
        return {**self._info, **self.updates}

    def set_info(self, **values) -> None:
        self.updates.update(values)

    def insert(self, records) -> None:
        self.pending.update({r.id: r for r in records})

    def delete(self, ids) -> None:
        for i in map(int, ids):
            if self.pending.pop(i, None) is None:
                self.removed.add(i)

    def _query(self, expr: str) -> list[ImageRecord]:
        rows = self.store.client.query(self.store.images, filter=f"({expr}) and version <= {self.version}",
                                       output_fields=["id", "path", "size", "mtime", "sha256"])
        return [ImageRecord(r["path"], None if r["size"] < 0 else r["size"], None if r["mtime"] < 0 else r["mtime"],
                            r["sha256"] or None, r["id"]) for r in rows if r["id"] not in self.removed]

    def records(self, ids) -> dict[int, ImageRecord]:
        wanted = sorted({int(i) for i in ids})
        out = {i: self.pending[i] for i in wanted if i in self.pending}
        for part in _chunks([i for i in wanted if i not in self.pending]):
            out.update({r.id: r for r in self._query(f"id in {_literals(part)}")})
        return out

    def _ids_by(self, field: str, values) -> dict[str, int]:
        values = sorted(set(values))
        out = {}
        for part in _chunks(values):
            out.update({getattr(r, field): r.id for r in self._query(f"{field} in {_literals(part)}")})
        wanted = set(values)
        out.update({getattr(r, field): i for i, r in self.pending.items() if getattr(r, field) in wanted})
        return out

    def ids_by_hash(self, hashes) -> dict[str, int]:
        return self._ids_by("sha256", (h for h in hashes if h))

    def ids_by_path(self, paths) -> dict[str, int]:
        return self._ids_by("path", paths)

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
