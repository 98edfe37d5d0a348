"""Near-duplicate groups: images joined when one is among the other's k nearest neighbours with
a similarity of at least ``threshold``, grouped by connected components (union-find).

Memory is the neighbour search's block (``neighbours.BLOCK``) plus O(n) ids, so a 1M-image
index is grouped without an n x n matrix (``bench/duplicates_scale.py`` measures it). The
default threshold was chosen on instances-dev (docs/results.md, "Near-duplicate groups").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .neighbours import BLOCK, neighbour_blocks

# Cosine similarity from which two images count as the same scene; measured on instances-dev
# with the default model and index (bench/duplicates_threshold.py, table in docs/results.md).
DEFAULT_THRESHOLD = 0.725
# Neighbours looked at per image: a group larger than k + 1 still forms, by chaining.
DEFAULT_NEIGHBOURS = 10


def check_threshold(threshold: float) -> float:
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold}: a cosine similarity, between -1 and 1 (default {DEFAULT_THRESHOLD})")
    return float(threshold)


class UnionFind:
    """Disjoint sets over 0..n-1, with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]

    def groups(self) -> list[np.ndarray]:
        """Sets of more than one element, as sorted position arrays."""
        roots = np.fromiter((self.find(i) for i in range(len(self.parent))), np.int64, len(self.parent))
        order = np.argsort(roots, kind="stable")
        cuts = np.flatnonzero(np.diff(roots[order])) + 1
        return [g for g in np.split(order, cuts) if len(g) > 1]


@dataclass
class Group:
    """Image ids of one group (ascending) and its weakest link (the lowest similarity of
    the neighbour pairs that joined it)."""

    ids: list[int]
    min_score: float

    def to_dict(self) -> dict:
        return {"ids": self.ids, "min_score": round(self.min_score, 4)}


def near_duplicates(index, threshold: float = DEFAULT_THRESHOLD, k: int = DEFAULT_NEIGHBOURS,
                    block: int = BLOCK) -> list[Group]:
    """Groups of ``index``'s images, largest first (then by first id); images in no group are
    left out."""
    threshold = check_threshold(threshold)
    if k < 1:
        raise ConfigError(f"neighbours {k}: look at least 1 neighbour per image")
    all_ids = np.asarray(index.ids(), dtype=np.int64)
    sets = UnionFind(len(all_ids))
    weakest = np.full(len(all_ids), np.inf, np.float32)
    for own, found, scores in neighbour_blocks(index, k, block):
        rows, cols = np.nonzero((found >= 0) & (scores >= threshold))
        a = np.searchsorted(all_ids, own[rows])
        b = np.searchsorted(all_ids, found[rows, cols])
        for i, j, s in zip(a.tolist(), b.tolist(), scores[rows, cols].tolist()):
            sets.union(i, j)
            weakest[i] = min(weakest[i], s)
            weakest[j] = min(weakest[j], s)
    groups = [Group(all_ids[g].tolist(), float(weakest[g].min())) for g in sets.groups()]
    groups.sort(key=lambda g: (-len(g.ids), g.ids[0]))
    return groups


def same_group_pairs(groups: list[Group]) -> set[tuple[int, int]]:
    """Every pair (a < b) of ids that share a group: what precision and recall are scored on."""
    return {(a, b) for g in groups for n, a in enumerate(g.ids) for b in g.ids[n + 1:]}
