"""A third vector engine, in memory and in NumPy: what adding an engine takes (this file plus
one registration, ``register()`` below; see ``cfcd.index.contract``).

Indexes live in this process at ``memory://NAME``; every published version is a deep copy, so
a holder's changes stay its own until it publishes. Search is exact inner product.
"""

from __future__ import annotations

import copy

import numpy as np

from cfcd.index import engines
from cfcd.index.layers import Layers
from cfcd.index.locks import LocalLock
from cfcd.index.vectors import Capabilities

PREFIX = "memory://"
_PUBLISHED: dict[str, list[Layers]] = {}  # location -> versions, oldest first


def register() -> None:
    if "memory" not in engines.ENGINES:
        engines.ENGINES.register("memory", MemoryStore, claims=lambda location: location.startswith(PREFIX))


class MemoryVectors:
    engine = "memory"

    def __init__(self, dim: int, factory: str | None):
        if factory not in (None, "Flat"):
            raise ValueError(f"the memory engine searches exactly ('Flat'), not {factory!r}")
        self.factory = "Flat"
        self.ids = np.zeros(0, np.int64)
        self.rows = np.zeros((0, dim), np.float32)

    @property
    def dim(self) -> int:
        return self.rows.shape[1]

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(needs_training=False, removes=True, reconstructs=True)

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self) -> dict:
        return {"engine": self.engine, "factory": self.factory, "vectors": len(self)}

    def train(self, sample: np.ndarray) -> None:
        pass

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.ids = np.concatenate([self.ids, np.asarray(ids, np.int64)])
        self.rows = np.concatenate([self.rows, np.asarray(vectors, np.float32)])

    def remove(self, ids: np.ndarray) -> bool:
        keep = ~np.isin(self.ids, ids)
        self.ids, self.rows = self.ids[keep], self.rows[keep]
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = queries @ self.rows.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        scores[:, :order.shape[1]] = np.take_along_axis(sims, order, 1)
        ids[:, :order.shape[1]] = self.ids[order]
        return scores, ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        where = {int(i): n for n, i in enumerate(self.ids)}
        missing = [int(i) for i in ids if int(i) not in where]
        if missing:
            raise KeyError(f"no vector stored for ids {missing[:5]}")
        return self.rows[[where[int(i)] for i in ids]]

    read = reconstruct  # the raw layer is the same structure

    def compact(self, keep: np.ndarray) -> int:
        return 0  # remove() drops rows at once


class MemoryCatalogue:
    def __init__(self):
        self.by_id: dict = {}
        self._info: dict = {}
        self.other: dict = {}  # path -> record of another path of an image's content

    def info(self) -> dict:
        return dict(self._info)

    def set_info(self, **values) -> None:
        self._info.update(values)

    def insert(self, records) -> None:
        for r in records:
            if r.id in self.by_id:
                raise ValueError(f"id {r.id} is already in the catalogue")
            self.by_id[r.id] = r

    def delete(self, ids) -> None:
        gone = {int(i) for i in ids}
        for i in gone:
            self.by_id.pop(i, None)
        self.other = {p: r for p, r in self.other.items() if r.id not in gone}

    def insert_paths(self, records) -> None:
        self.other.update({r.path: r for r in records})

    def delete_paths(self, paths) -> None:
        for p in paths:
            self.other.pop(p, None)

    def other_paths(self, ids) -> dict:
        wanted, out = {int(i) for i in ids}, {}
        for p in sorted(self.other):
            if self.other[p].id in wanted:
                out.setdefault(self.other[p].id, []).append(self.other[p])
        return out

    def records(self, ids) -> dict:
        return {int(i): self.by_id[int(i)] for i in ids if int(i) in self.by_id}

    def ids_by_hash(self, hashes) -> dict[str, int]:
        wanted = set(hashes)
        return {r.sha256: i for i, r in self.by_id.items() if r.sha256 in wanted}

    def ids_by_path(self, paths) -> dict[str, int]:
        wanted = set(paths)
        out = {p: r.id for p, r in self.other.items() if p in wanted}
        return out | {r.path: i for i, r in self.by_id.items() if r.path in wanted}

    def ids(self) -> list[int]:
        return sorted(self.by_id)

    def __len__(self) -> int:
        return len(self.by_id)


class MemoryStore:
    engine = "memory"

    def __init__(self, location: str):
        self.name = str(location)

    @property
    def location(self) -> str:
        return self.name

    def exists(self) -> bool:
        return bool(_PUBLISHED.get(self.name))

    def version(self) -> int:
        return _PUBLISHED[self.name][-1].generation

    def open(self) -> Layers:
        return copy.deepcopy(_PUBLISHED[self.name][-1])

    def create(self, dim: int, factory: str | None) -> Layers:
        return Layers(MemoryVectors(dim, factory), MemoryCatalogue(), MemoryVectors(dim, None))

    def create_vectors(self, dim: int, factory: str | None) -> MemoryVectors:
        return MemoryVectors(dim, factory)

    def lock(self, timeout: float = 60.0) -> LocalLock:
        return LocalLock(self.name, timeout)

    def check_vacant(self) -> None:
        pass  # nothing but indexes lives under memory://

    def publish(self, layers: Layers) -> int:
        versions = _PUBLISHED.setdefault(self.name, [])
        generation = versions[-1].generation + 1 if versions else 1
        snapshot = copy.deepcopy(layers)
        snapshot.generation = generation
        versions.append(snapshot)
        return generation

    def reclaim(self) -> list[str]:
        versions = _PUBLISHED[self.name]
        removed = [f"version {v.generation}" for v in versions[:-1]]
        del versions[:-1]
        return removed

    def footprint(self) -> dict:
        return {"bytes": None, "rows": sum(len(v.vectors) + len(v.raw) for v in _PUBLISHED.get(self.name, []))}

    def close(self) -> None:
        pass
