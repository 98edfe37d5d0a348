"""Decisions a person made about duplicate groups, stored with the index: pairs of photos that
are "not duplicates" (``cfcd duplicates --ignore``). ``near_duplicates`` keeps such a pair out
of every group (a cannot-link constraint of its complete linkage).

The pairs live in the catalogue's settings (info key ``not_duplicates``), so they are written by
the index's versioned write (published whole or not at all, replayed on a newer version when
another writer published first) and survive ``index add``, re-learning and a server restart,
on every engine. Pairs of an image removed later are harmless: its id is never reused.
"""

from __future__ import annotations

from itertools import combinations
from typing import Iterable

from ..errors import ConfigError, NotFound

INFO_KEY = "not_duplicates"


def apart(index) -> set[tuple[int, int]]:
    """The pairs (a < b) of ``index`` recorded as not duplicates."""
    return {(int(a), int(b)) for a, b in index.layers.catalogue.info().get(INFO_KEY) or []}


def parse_ids(text: str) -> list[int]:
    """Ids from "3,17,20" (at least two, all different)."""
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"ids {text!r}: give image ids separated by commas, e.g. 3,17") from None
    if len(set(ids)) < 2:
        raise ConfigError(f"ids {text!r}: give at least two different image ids, e.g. 3,17")
    return ids


def _pairs(ids: Iterable[int]) -> set[tuple[int, int]]:
    return set(combinations(sorted({int(i) for i in ids}), 2))


def _store(index, pairs: set[tuple[int, int]]) -> None:
    index.layers.catalogue.set_info(**{INFO_KEY: sorted([a, b] for a, b in pairs)})
    index.changed = True


def ignore(index, ids: Iterable[int]) -> set[tuple[int, int]]:
    """Record every pair of ``ids`` as not duplicates (ids that are not in ``index`` are
    refused); returns the pairs newly recorded."""
    ids = sorted({int(i) for i in ids})
    missing = sorted(set(ids) - set(index.records(ids)))
    if missing:
        raise NotFound(f"no image with id {', '.join(map(str, missing))} in the index: see `cfcd duplicates INDEX` "
                       "for the ids of a group")
    return _change(index, lambda held: held | _pairs(ids))


def unignore(index, ids: Iterable[int]) -> set[tuple[int, int]]:
    """Forget the decisions about every pair of ``ids``; returns the pairs forgotten."""
    pairs = _pairs(ids)
    return _change(index, lambda held: held - pairs)


def _change(index, update) -> set[tuple[int, int]]:
    held = apart(index)
    after = update(held)
    if after != held:
        _store(index, after)
        index.journal(lambda newer: _store(newer, update(apart(newer))))
    return held ^ after
