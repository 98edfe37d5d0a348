"""Duplicate groups in tiers: ``exact`` (the same pixels, after EXIF orientation), ``near`` (one
shot: resized, re-encoded, lightly edited or cropped) and ``similar`` (the same scene, another shot).

A pair's tier: ``exact`` when its descriptors are nearly equal (``EXACT_SCORE``) and its decoded
pixels hash alike; ``near`` when its descriptors are close (``NEAR_SCORE``) and its pixels align
(``same_shot.aligned_similarity`` >= ``NEAR_PIXELS``: descriptors alone rank a burst frame above
a cropped copy); ``similar`` when its searched similarity reaches ``threshold``. Descriptor
tests use the stored descriptors, the similar one the searched (possibly projected) vectors, as
a search does.

Links are each image's k nearest neighbours (searched); groups grow from them by complete
linkage, one tier after the other: exact copies first, then near groups (every pair of a group
one shot), then similar groups (every pair at least similar). A photo thus joins a group only
when it is close to every member at the level of the tier being built, so photos of different
places that are each close to a third do not chain into one group. A group's tier is that of
its loosest pair; every pair carries its own tier. Pairs a person marked "not duplicates"
(``cfcd.index.decisions``) never share a group: two groups holding such a pair do not merge.
An image whose content the index found at several paths (byte copies) is an ``exact`` group
by itself when no other image joins it (its paths: ``Index.paths``).

Memory is the neighbour search's block (``neighbours.BLOCK``), the links (at most k per image),
O(n) labels and a bounded cache of thumbnails, so a 1M-image index is grouped without an n x n
matrix; a merge reads the descriptors of the two groups it joins. Thresholds: docs/results.md,
"Duplicate tiers" (``bench/duplicate_tiers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from . import decisions
from .neighbours import BLOCK, neighbour_blocks
from .same_shot import PixelChecks

# Searched similarity from which two images count as the same scene (the ``similar`` tier):
# with complete linkage, the lowest threshold at which groups mixing places stop falling on
# instances-hard (5 at 0.725, 1 from 0.80: two football photos at 0.92), none on instances-dev
# (bench/duplicate_tiers.py; issue 21 chose 0.725 for single linkage, bench/duplicates_threshold.py).
DEFAULT_THRESHOLD = 0.8
# Descriptor cosine from which a pair's pixels are compared for the near tier: every planted
# copy pair scored >= 0.88 (bench/duplicate_tiers.py).
NEAR_SCORE = 0.85
# Descriptor cosine from which a pair is checked for identical pixels: identical pixels give
# identical descriptors, up to a JPEG decoded at a reduced size.
EXACT_SCORE = 0.99
# Neighbours looked at per image: a group larger than k + 1 still forms, through its members' links.
DEFAULT_NEIGHBOURS = 10
TIERS = ("exact", "near", "similar")


def check_threshold(threshold: float) -> float:
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold}: a cosine similarity, between -1 and 1 (default {DEFAULT_THRESHOLD})")
    return float(threshold)


def parse_tiers(tiers: str | Sequence[str]) -> tuple[str, ...]:
    """Tiers named in ``tiers`` ("exact,near" or a sequence), in tier order."""
    names = [t.strip() for t in tiers.split(",")] if isinstance(tiers, str) else list(tiers)
    for name in names:
        if name not in TIERS:
            raise ConfigError(f"tier {name!r}: use one or more of {','.join(TIERS)}, separated by commas")
    if not names:
        raise ConfigError(f"no tier given: use one or more of {','.join(TIERS)}")
    return tuple(t for t in TIERS if t in names)


@dataclass
class Group:
    """Image ids of one group (ascending), its tier, its lowest searched similarity, and every
    pair (a, b, tier, searched similarity) with a < b."""

    ids: list[int]
    tier: str
    min_score: float
    pairs: list[tuple[int, int, str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ids": self.ids, "tier": self.tier, "min_score": round(self.min_score, 4),
                "pairs": [{"a": a, "b": b, "tier": t, "score": round(s, 4)} for a, b, t, s in self.pairs]}


class _Links:
    """Neighbour pairs (positions a < b, once each) with their searched and descriptor
    similarities, kept when either could put them in a tier being built."""

    def __init__(self, index, all_ids: np.ndarray, k: int, block: int, threshold: float, near: float):
        a, b, searched, stored = [], [], [], []
        for own, found, scores in neighbour_blocks(index, k, block):
            mine = index.descriptors(own)
            theirs = index.descriptors(np.where(found >= 0, found, own[:, None]).ravel()).reshape(*found.shape, -1)
            cosine = np.einsum("bd,bkd->bk", mine, theirs)
            rows, cols = np.nonzero((found >= 0) & ((scores >= threshold) | (cosine >= near)))
            a.append(np.searchsorted(all_ids, own[rows]))
            b.append(np.searchsorted(all_ids, found[rows, cols]))
            searched.append(scores[rows, cols])
            stored.append(cosine[rows, cols])
        a, b, searched, stored = (np.concatenate(x) if x else np.zeros(0) for x in (a, b, searched, stored))
        lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
        _, first = np.unique(lo * len(all_ids) + hi, return_index=True)
        self.lo, self.hi = lo[first], hi[first]
        self.searched, self.stored = searched[first].astype(np.float32), stored[first].astype(np.float32)

    def strongest_first(self, by: np.ndarray, floor: float):
        """(a, b) of the links whose ``by`` reaches ``floor``, strongest first (ties by
        position, so the result does not depend on the block)."""
        keep = np.flatnonzero(by >= floor)
        order = keep[np.lexsort((self.hi[keep], self.lo[keep], -by[keep]))]
        return zip(self.lo[order].tolist(), self.hi[order].tolist())


def near_duplicates(index, threshold: float = DEFAULT_THRESHOLD, k: int = DEFAULT_NEIGHBOURS, block: int = BLOCK,
                    tiers: str | Sequence[str] = TIERS, near: float = NEAR_SCORE,
                    pixels: PixelChecks | None = None, apart: set[tuple[int, int]] | None = None) -> list[Group]:
    """Groups of ``index``'s images of the ``tiers`` asked for, exact first, then largest
    first (then by first id); images in no group are left out. Groups are built up to the
    loosest tier asked for: with ``tiers="exact,near"`` near groups are never merged into
    similar ones. ``threshold`` is the similar tier's, ``near`` the near tier's descriptor
    floor; ``pixels`` reads the image files (default: the paths the index records); ``apart``:
    pairs (a < b) of ids never grouped together (default: those recorded with the index)."""
    threshold = check_threshold(threshold)
    tiers = parse_tiers(tiers)
    if k < 1:
        raise ConfigError(f"neighbours {k}: look at least 1 neighbour per image")
    all_ids = np.asarray(index.ids(), dtype=np.int64)
    if pixels is None:
        pixels = PixelChecks(lambda i: index.records([i])[i].path)
    if apart is None:
        apart = decisions.apart(index)
    built = TIERS[:TIERS.index(tiers[-1]) + 1]
    links = _Links(index, all_ids, k, block, threshold if "similar" in built else 2.0, near)

    def vectors(positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        stored = index.descriptors(all_ids[positions])
        return stored, index.layers.searchable(stored)

    def one_shot(a: int, b: int, cosine: float) -> bool:
        return cosine >= near and pixels.one_shot(int(all_ids[a]), int(all_ids[b]))

    def kept_apart(one: list[int], other: list[int]) -> bool:
        return any((min(a, b), max(a, b)) in apart for a in all_ids[one].tolist() for b in all_ids[other].tolist())

    def joins(one: list[int], other: list[int], tier: str) -> bool:
        if apart and kept_apart(one, other):
            return False
        if tier == "exact":  # identical pixels are transitive: one member of each group tells
            return pixels.same_pixels(int(all_ids[one[0]]), int(all_ids[other[0]]))
        (s1, v1), (s2, v2) = vectors(one), vectors(other)
        stored, searched = s1 @ s2.T, v1 @ v2.T
        if tier == "near":
            return stored.min() >= near and all(one_shot(a, b, stored[n, m]) for n, a in enumerate(one)
                                                for m, b in enumerate(other))
        return all(searched[n, m] >= threshold or one_shot(a, b, stored[n, m])
                   for n, a in enumerate(one) for m, b in enumerate(other))

    label = np.arange(len(all_ids), dtype=np.int64)  # each image's group: the position of one member
    members: dict[int, list[int]] = {}
    labels = {}
    for tier in built:
        by, floor = {"exact": (links.stored, EXACT_SCORE), "near": (links.stored, near),
                     "similar": (links.searched, threshold)}[tier]
        for a, b in links.strongest_first(by, floor):
            ga, gb = int(label[a]), int(label[b])
            if ga == gb:
                continue
            one, other = members.get(ga, [ga]), members.get(gb, [gb])
            if joins(one, other, tier):
                if len(one) < len(other):
                    ga, gb, one, other = gb, ga, other, one
                label[other] = ga
                members[ga] = one + other
                members.pop(gb, None)
        labels[tier] = label.copy()

    def pair_tier(a: int, b: int, cosine: float) -> str:
        if labels["exact"][a] == labels["exact"][b]:
            return "exact"
        if "near" in labels and labels["near"][a] == labels["near"][b] or one_shot(a, b, cosine):
            return "near"
        return "similar"

    groups = []
    for positions in map(sorted, members.values()):
        stored, searched = vectors(positions)
        cos, sim = stored @ stored.T, searched @ searched.T
        pairs = [(int(all_ids[a]), int(all_ids[b]), pair_tier(a, b, float(cos[n, m])), float(sim[n, m]))
                 for n, a in enumerate(positions) for m, b in enumerate(positions) if m > n]
        tier = max((p[2] for p in pairs), key=TIERS.index)
        if tier in tiers:
            groups.append(Group(all_ids[positions].tolist(), tier, min(p[3] for p in pairs), pairs))
    if "exact" in tiers:  # one content at several paths (byte copies): an exact group of its own
        grouped = {i for g in groups for i in g.ids}
        several = index.layers.catalogue.other_paths(all_ids.tolist())
        groups += [Group([i], "exact", 1.0) for i in sorted(several) if i not in grouped]
    groups.sort(key=lambda g: (TIERS.index(g.tier), -len(g.ids), g.ids[0]))
    return groups


def same_group_pairs(groups: list[Group]) -> set[tuple[int, int]]:
    """Every pair (a < b) of ids that share a group: what precision and recall are scored on."""
    return {(a, b) for g in groups for n, a in enumerate(g.ids) for b in g.ids[n + 1:]}


def duplicates_of(index, image_id: int, threshold: float = DEFAULT_THRESHOLD, k: int = DEFAULT_NEIGHBOURS,
                  near: float = NEAR_SCORE, pixels: PixelChecks | None = None) -> list[dict]:
    """The photos of ``index`` that form a pair of some tier with ``image_id`` (a photo just
    added, say), by the pair tests of ``near_duplicates``, among its ``k`` nearest neighbours:
    each {id, path, paths (every path: byte copies), tier, score (searched similarity)}, closest first. Pairs recorded as not
    duplicates are left out."""
    from .neighbours import similar

    threshold = check_threshold(threshold)
    if pixels is None:
        pixels = PixelChecks(lambda i: index.records([i])[i].path)
    result = similar(index, [image_id], k)
    found = [(int(i), float(s)) for i, s in zip(result.ids[0], result.scores[0]) if i >= 0]
    if not found:
        return []
    cosines = index.descriptors([i for i, _ in found]) @ index.descriptors([image_id])[0]
    held = decisions.apart(index)
    out = []
    for (other, score), cosine in zip(found, cosines.tolist()):
        if (min(image_id, other), max(image_id, other)) in held:
            continue
        if cosine >= EXACT_SCORE and pixels.same_pixels(image_id, other):
            tier = "exact"
        elif cosine >= near and pixels.one_shot(image_id, other):
            tier = "near"
        elif score >= threshold:
            tier = "similar"
        else:
            continue
        out.append({"id": other, "path": result.records[other].path, "paths": result.paths(other), "tier": tier,
                    "score": round(score, 4)})
    return out
