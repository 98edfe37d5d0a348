"""The Milvus engine's store (``cfcd.index.contract.Store``): where an index's collections
live, how a version is published, and the write lock (Milvus Lite's own, or a lease on a
server); the package docstring (``cfcd.index.milvus``) describes the layout."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ...errors import AlreadyExists, ConfigError, Conflict, MismatchError, NotFound, Unavailable
from ..layers import Layers
from ..projection import Projection
from ..locks import LocalLock
from ...failpoints import failpoint
from .collections import MilvusCatalogue, MilvusVectors, chunks, literals, parse_factory

DEFAULT_COLLECTION = "cfcd"
DEFAULT_FACTORY = "FLAT"
INFO_KEY = "cfcd.info"
MAX_VARCHAR = 65535
# Rows per insert call (a gRPC message stays well under its 64 MB limit).
INSERT_BATCH = 4096
LEASE_SECONDS = 300


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


class MilvusStore:
    """Where a Milvus index lives, and how a version is published there."""

    engine = "milvus"

    def __init__(self, location: str | Path):
        self.uri, self.name, self.lite = parse_location(location)
        self._location = str(location)
        self.images = f"{self.name}_images"
        self.raw = f"{self.name}_raw"
        self.projections = f"{self.name}_proj"
        self.paths = f"{self.name}_paths"
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
        # The catalogue collection holds the settings; ``NAME`` goes once a projection or a
        # compaction moved the vectors out of it and a compaction dropped it.
        return self.client.has_collection(self.images)

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
        raw_name = self._raw_collection(info)
        self._load(searched, self.images, *((raw_name, self.projections) if keeps_raw else ()),
                   *((self.paths,) if self.client.has_collection(self.paths) else ()))
        count = info.get("count", 0)
        projection = None
        if described:
            rows = self.client.query(self.projections, filter=f"version == {described['version']}",
                                     output_fields=["id", "vector"])
            rows.sort(key=lambda r: r["id"])
            projection = Projection.from_rows(np.array([r["vector"] for r in rows]), described)
        self._opened_projection = projection
        dim = projection.dim if projection else info["dim"]
        raw = MilvusVectors(self, info["dim"], "FLAT", gen, count, raw_name) if keeps_raw else None
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
            self._create_paths()
            info = {"published": 0}
            self._write_info(info)
        elif info.get("published"):
            raise AlreadyExists(f"{self._location}: an index already exists there (a Milvus collection is not "
                                f"replaced by --force: drop collections {self.name!r}, {self.images!r}, {self.raw!r} "
                                f"and {self.projections!r} first)")
        self._create_paths()
        self._load(self.name, self.images, self.raw, self.projections, self.paths)
        gen = info.get("published", 0)
        return Layers(MilvusVectors(self, dim, factory, gen, 0, self.name), MilvusCatalogue(self, gen, 0, {}),
                      MilvusVectors(self, dim, "FLAT", gen, 0, self.raw))

    def _raw_collection(self, info: dict) -> str:
        """The raw descriptors' collection the published version names (``NAME_raw`` until a
        compaction rewrote it)."""
        return info["raw"] if isinstance(info.get("raw"), str) else self.raw

    def create_vectors(self, dim: int, factory: str | None, kind: str = "s") -> "MilvusVectors":
        """An empty vector layer in a new collection (invisible until a publish names it):
        ``NAME_s<hex>`` for searched vectors, ``NAME_r<hex>`` (``kind`` "r") for raw ones."""
        factory = factory or DEFAULT_FACTORY
        name = f"{self.name}_{kind}{secrets.token_hex(4)}"
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

    def _create_paths(self) -> None:
        """The collection of other paths of indexed content (made on the next write of an
        index from before it was kept): a path, the id of its content, its size and mtime."""
        from pymilvus import DataType

        if self.client.has_collection(self.paths):
            return
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_VARCHAR, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
        schema.add_field("version", DataType.INT64)
        schema.add_field("image", DataType.INT64)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime", DataType.DOUBLE)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="IP")
        self.client.create_collection(self.paths, schema=schema, index_params=index, consistency_level="Strong")
        self._load(self.paths)

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
        self._create_paths()
        dead = {searched, self.images, self.paths, *(v.collection for v in keeps),
                *([self.projections] if raw is not None else [])}
        for name in dead:  # invisible rows of a writer that died (a projection's too: its ids are reused)
            client.delete(name, filter=f"version > {base}")
        for layer in keeps:
            ids, vecs = layer.pending()
            for start in range(0, len(ids), INSERT_BATCH):
                client.insert(layer.collection, [{"id": int(i), "vector": v, "version": gen} for i, v in
                                                 zip(ids[start:start + INSERT_BATCH], vecs[start:start + INSERT_BATCH])])
        updates = {}
        if raw is not None:
            updates["raw"] = raw.collection
        if layers.projection is not None and layers.projection is not self._opened_projection:
            rows = layers.projection.rows()
            client.insert(self.projections, [{"id": gen * 1_000_000 + n, "vector": r, "version": gen}
                                             for n, r in enumerate(rows)])
            updates["projection"] = {**layers.projection.describe(), "version": gen}
        elif layers.projection is not None:
            updates["projection"] = info["projection"]
        retire = []
        old_raw = self._raw_collection(info)
        replaced = [old for old, new in ((searched, vectors.collection), (old_raw, raw.collection if raw else old_raw))
                    if old != new]
        if replaced:  # a new vector layer (a projection learned or dropped, a compaction)
            retire = info.get("retired", [])
            updates.update(vectors_collection=vectors.collection, retired=replaced)
        # Removed rows Milvus Lite keeps on disk until a compaction rewrites the collections.
        updates["dead_rows"] = 0 if old_raw in replaced else info.get("dead_rows", 0) + len(vectors.removed | catalogue.removed)
        records = list(catalogue.pending.values())
        for part in chunks(records, INSERT_BATCH):
            client.insert(self.images, [{"id": r.id, "vector": [0.0, 0.0], "version": gen, "path": r.path,
                                         "size": r.size if r.size is not None else -1,
                                         "mtime": r.mtime if r.mtime is not None else -1.0,
                                         "sha256": r.sha256 or ""} for r in part])
        for part in chunks(list(catalogue.pending_paths.values()), INSERT_BATCH):
            client.insert(self.paths, [{"path": r.path, "vector": [0.0, 0.0], "version": gen, "image": int(r.id),
                                        "size": r.size if r.size is not None else -1,
                                        "mtime": r.mtime if r.mtime is not None else -1.0} for r in part])
        # A record deleted then inserted again under its id (a new primary path) keeps its
        # vectors: only the vector layers' removals leave them.
        removed = sorted(vectors.removed | (raw.removed if raw is not None else set()))
        # Milvus deletes by primary key, every row of it: a record or path written again by this
        # version (a new primary path, a re-pointed path) is not deleted, its new row shadows the old.
        forgotten = sorted(catalogue.removed - set(catalogue.pending))
        dropped = set(catalogue.removed_paths)
        for part in chunks(sorted(catalogue.removed)):
            dropped |= {r["path"] for r in client.query(self.paths, filter=f"image in {literals(part)} and version <= {base}",
                                                        output_fields=["path"])}
        dropped = sorted(dropped - set(catalogue.pending_paths))
        count = len(catalogue)
        failpoint("index.staged")  # rows written, invisible: the crash tests stop a writer here
        catalogue.set_info(**updates)
        self._write_info({**info, **catalogue.updates, "published": gen, "count": count, "writer": info.get("writer")})
        self._opened_projection = layers.projection
        for part in chunks(removed):
            for name in (vectors.collection, *([raw.collection] if raw is not None else [])):
                client.delete(name, ids=part)
        for part in chunks(forgotten):
            client.delete(self.images, ids=part)
        for part in chunks(dropped):
            client.delete(self.paths, ids=part)
        for name in retire:  # replaced two projections ago: no reader still searches it
            if name != self.name and client.has_collection(name):
                client.drop_collection(name)
        for layer in keeps:
            layer.published(gen, count)
        catalogue.published(gen, count)
        return gen


    # ---- what no published version needs ---------------------------------------------------

    def _collections(self) -> list[str]:
        """The vector and raw collections this index made (``NAME`` the first)."""
        made = [f"{self.name}_s", f"{self.name}_r"]
        return sorted(n for n in self.client.list_collections()
                      if n in (self.name, self.raw) or any(n.startswith(p) and n[len(p):].isalnum() for p in made))

    def _leftovers(self, info: dict) -> list[str]:
        """Vector and raw collections the published version does not use: made by a writer
        that died before publishing, or replaced by a later projection or compaction."""
        used = {info.get("vectors_collection", self.name), self._raw_collection(info)}
        return [n for n in self._collections() if n not in used]

    def rewrites(self) -> bool:
        """Whether removed rows stay on disk until a compaction rewrites the collections: on
        Milvus Lite (its manual compaction does nothing); a server compacts its own segments."""
        return self.lite

    def dead_rows(self) -> int:
        """Rows removed since the collections were last rewritten (``rewrites``)."""
        return self.info().get("dead_rows", 0)

    def reclaim(self) -> list[str]:
        """Drop what the published version does not need (with the lock held): vector and raw
        collections it does not use (``NAME`` too, once a projection or a compaction moved the
        vectors out), rows above it and earlier projections' rows. A reader still on an
        earlier version finds its collection gone and opens the index again."""
        client, info = self.client, self.info()
        gen = self.version()
        removed = []
        for name in self._leftovers(info):
            client.drop_collection(name)
            removed.append(f"collection {name}")
        if info.get("retired"):
            self._write_info({**self.info(), "retired": []})
        failpoint("index.reclaiming")
        searched = info.get("vectors_collection", self.name)
        described = info.get("projection")
        deletions = [(name, f"version > {gen}") for name in (searched, self.images, self.paths,
                                                              self._raw_collection(info), self.projections)]
        deletions.append((self.projections, f"version != {described['version']}" if described else "id >= 0"))
        for name, expr in deletions:
            if client.has_collection(name) and self._rows(name, expr):
                client.delete(name, filter=expr)
                removed.append(f"rows of {name} where {expr}")
        if not self.lite:
            for name in (searched, self.images, self.paths, self._raw_collection(info), self.projections):
                if client.has_collection(name):
                    client.compact(name)  # the server merges segments without deleted rows, in the background
        return removed

    def _rows(self, name: str, expr: str = "version >= 0") -> int:
        self._load(name)
        return self.client.query(name, filter=expr, output_fields=["count(*)"])[0]["count(*)"]

    def footprint(self) -> dict:
        """Rows in this index's collections, and bytes on disk for Milvus Lite (its data directory)."""
        from ..store import disk_bytes

        names = [self.images, self.paths, self.projections, *self._collections()]
        rows = sum(self._rows(n) for n in dict.fromkeys(names) if self.client.has_collection(n))
        return {"bytes": disk_bytes(Path(self.uri)) if self.lite else None, "rows": rows}


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
