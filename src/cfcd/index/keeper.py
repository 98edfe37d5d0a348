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
the lowest id is kept. The rules weigh files, so among byte copies of one image (its several
paths) they choose a path the same way, and when those tie the image's first path is kept.
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


def narrow(facts: Sequence[PhotoFacts], rules: Sequence[str]) -> tuple[list[int], list[str]]:
    """(positions of ``facts`` left, the reasons): each rule in turn keeps the files best by
    it, until one is left; the reasons are the rules that left some out."""
    left = list(range(len(facts)))
    reasons = []
    for name in rules:
        if len(left) == 1:
            break
        key, why = _rule(name)
        best = min(key(facts[n]) for n in left)
        kept = [n for n in left if key(facts[n]) == best]
        if len(kept) < len(left):
            if name == "format":
                dropped = sorted({facts[n].format or "unreadable" for n in left if key(facts[n]) != best})
                why = f"better format ({facts[kept[0]].format} over {', '.join(dropped)})"
            reasons.append(why)
            left = kept
    return left, reasons


def choose(ids: Sequence[int], facts: Sequence[PhotoFacts], rules: Sequence[str]) -> tuple[int, str]:
    """(id to keep, why) among ``ids`` whose files are described by ``facts``: ``narrow``,
    then the lowest id."""
    left, reasons = narrow(facts, rules)
    if len(left) > 1:
        reasons.append("lowest id")
    return min(ids[n] for n in left), ", then ".join(reasons)


def suggest(index, groups, prefer: Sequence[str] = ()) -> list[dict]:
    """Each group of ``index`` from ``cfcd.index.duplicates.near_duplicates`` as a dict: its
    fields, the file to keep (``keep``: its id, ``keep_path``: which of that image's paths) and
    ``why``, and ``members``: each image's id, path, every path (``paths``: byte copies at
    several paths), file facts and ``score`` (its searched similarity to the kept one). The
    rules choose among every path of every member, so a byte copy in another folder is weighed
    like another image (``older``, ``folder:NAME`` tell such copies apart)."""
    from .photo_facts import read_facts

    rules = rules_order(prefer)
    paths = index.paths([i for g in groups for i in g.ids])
    out = []
    for g in groups:
        files = [(i, p) for i in g.ids for p in paths[i]]
        facts = [read_facts(p) for _, p in files]
        left, reasons = narrow(facts, rules)
        if len(left) > 1:
            reasons.append("lowest id" if len({files[n][0] for n in left}) > 1 else "first path")
        keep, keep_path = min((files[n] for n in left), key=lambda f: (f[0], paths[f[0]].index(f[1])))
        first = {i: facts[files.index((i, paths[i][0]))] for i in g.ids}
        to_keep = {b if a == keep else a: s for a, b, _, s in g.pairs if keep in (a, b)}
        members = [{"id": i, **first[i].to_dict(), "paths": paths[i], "score": round(to_keep.get(i, 1.0), 4)}
                   for i in g.ids]
        out.append({**g.to_dict(), "keep": keep, "keep_path": keep_path, "why": ", then ".join(reasons),
                    "members": members})
    return out
