"""Which photo of a duplicate group to keep, by rules a person can check.

The default rules, in order, each keeping the photos best by it until one is left (the reason
given names the rules that left photos out):

1. ``pixels``: the larger upright pixel count;
2. ``format``: the better format: lossless or camera formats (HEIF/HEIC, PNG, TIFF, BMP) over
   lossy re-encodings (JPEG, WebP), those over GIF and unreadable files;
3. ``metadata``: more EXIF tags (camera, date, GPS; an orientation tag alone does not count);
4. ``older``: the older file (modification time);
5. ``folder:NAME``: a photo inside a folder NAME (any folder of its path of that name, or
   that path), only when asked for.

``--prefer RULE`` (repeatable) moves rules to the front in the order given, for example
``--prefer folder:Originals`` keeps the copy in Originals whatever its size. When every rule ties,
the lowest id is kept.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Callable, Sequence

from ..errors import ConfigError
from .photo_facts import PhotoFacts

DEFAULT_RULES = ("pixels", "format", "metadata", "older")
FORMAT_RANK = {"HEIF": 0, "PNG": 0, "TIFF": 0, "BMP": 0, "JPEG": 1, "MPO": 1, "WEBP": 1, "GIF": 2}
WORST_FORMAT = 3


def _in_folder(path: str, folder: str) -> bool:
    p, f = PurePath(path), PurePath(folder)
    return f in p.parents if f.is_absolute() else folder in p.parts[:-1]


def _rule(name: str) -> tuple[Callable[[PhotoFacts], tuple], str]:
    """(sort key, smaller is better; the reason given when it decides) of the rule ``name``."""
    if name == "pixels":
        return (lambda f: (-f.pixels,)), "largest pixel count"
    if name == "format":
        return (lambda f: (FORMAT_RANK.get(f.format, WORST_FORMAT),)), "better format"
    if name == "metadata":
        return (lambda f: (-f.exif_tags,)), "more metadata (EXIF)"
    if name == "older":
        return (lambda f: (f.mtime if f.mtime is not None else float("inf"),)), "older file"
    if name.startswith("folder:") and len(name) > len("folder:"):
        folder = name[len("folder:"):]
        return (lambda f: (not _in_folder(f.path, folder),)), f"in folder {folder}"
    raise ConfigError(f"keep rule {name!r}: use one of {', '.join(DEFAULT_RULES)} or folder:NAME")


def rules_order(prefer: Sequence[str] = ()) -> list[str]:
    """The rules in the order applied: ``prefer`` first, then the other default rules."""
    for name in prefer:
        _rule(name)  # checked before any file is read
    return list(dict.fromkeys([*prefer, *DEFAULT_RULES]))


def choose(ids: Sequence[int], facts: Sequence[PhotoFacts], rules: Sequence[str]) -> tuple[int, str]:
    """(id to keep, why) among ``ids`` whose files are described by ``facts``: each rule in
    turn keeps the photos best by it; the reasons are the rules that left some out."""
    left = list(zip(ids, facts))
    reasons = []
    for name in rules:
        key, why = _rule(name)
        best = min(key(f) for _, f in left)
        kept = [(i, f) for i, f in left if key(f) == best]
        if len(kept) < len(left):
            if name == "format":
                dropped = sorted({f.format or "unreadable" for _, f in left if key(f) != best})
                why = f"better format ({kept[0][1].format} over {', '.join(dropped)})"
            reasons.append(why)
            left = kept
        if len(left) == 1:
            break
    else:
        reasons.append("lowest id")
    return min(i for i, _ in left), ", then ".join(reasons)


def suggest(index, groups, prefer: Sequence[str] = ()) -> list[dict]:
    """Each group of ``index`` from ``cfcd.index.duplicates.near_duplicates`` as a dict: its
    fields, the id to ``keep`` and ``why``, and ``members``: each image's id, path, every path
    (``paths``: byte copies at several paths), file facts and ``score`` (its searched similarity to the kept one)."""
    from .photo_facts import read_facts

    rules = rules_order(prefer)
    paths = index.paths([i for g in groups for i in g.ids])
    out = []
    for g in groups:
        facts = [read_facts(paths[i][0]) for i in g.ids]
        keep, why = choose(g.ids, facts, rules) if len(g.ids) > 1 else (g.ids[0], "one image at several paths")
        to_keep = {b if a == keep else a: s for a, b, _, s in g.pairs if keep in (a, b)}
        members = [{"id": i, **f.to_dict(), "paths": paths[i], "score": round(to_keep.get(i, 1.0), 4)}
                   for i, f in zip(g.ids, facts)]
        out.append({**g.to_dict(), "keep": keep, "why": why, "members": members})
    return out
