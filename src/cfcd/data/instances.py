"""Folder-per-identity photo sets scored leave-one-out (UKBench / Holidays style).

    <root>/images/<identity>/<file>.jpg      (or <root>/<identity>/<file>.jpg)
    <root>/manifest.csv                      optional: path, identity, source (paths relative to root)

Protocol: every image is a query once; the database is every other image; the positives are
the other images of its identity. Similarities are float64 dot products ranked with a stable
sort (``cfcd.evaluate.rank``); AP is revisitop's trapezoid rule (``cfcd.evaluate.compute_map``,
the query itself counted as junk so it leaves its own ranking) and recall@1 says whether the
best other image shares the query's identity. Results are pooled and per source.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from ..evaluate import compute_map, rank
from .images import list_images

MANIFEST = "manifest.csv"
# Source of every image when the set has no manifest.
NO_SOURCE = "all"


@dataclass(frozen=True)
class InstanceSet:
    """Images with their identity and source, in the set's order (the manifest's, else sorted)."""

    root: Path
    paths: list[Path]
    identities: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def _find_manifest(folder: Path) -> Path | None:
    """``folder/manifest.csv``, or the one beside ``folder`` when ``folder`` is the ``images`` folder."""
    for candidate in (folder / MANIFEST, folder.parent / MANIFEST if folder.name == "images" else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _read_manifest(path: Path) -> InstanceSet:
    base = path.parent
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "identity"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: lacks the column(s) {', '.join(sorted(missing))}; expected path, identity[, source]")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no images listed")
    paths = [base / r["path"] for r in rows]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise FileNotFoundError(f"{path}: {len(absent)} listed images are missing, e.g. {absent[0]}")
    sources = [r.get("source") or NO_SOURCE for r in rows]
    return InstanceSet(base, paths, [r["identity"] for r in rows], sources)


def load_instances(folder: str | Path) -> InstanceSet:
    """Read a folder-per-identity set; ``folder`` is its root or its ``images`` folder.

    With a ``manifest.csv`` (in ``folder``, or beside it when ``folder`` is ``images``) its rows
    give the images, identities and sources; otherwise every image under ``folder`` is one of
    the identity named by its parent folder, all of source ``"all"``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder; expected <identity>/<image> sub-folders")
    manifest = _find_manifest(folder)
    if manifest is not None:
        return _read_manifest(manifest)
    images_dir = folder / "images" if (folder / "images").is_dir() else folder
    paths = [p for p in list_images(images_dir) if p.parent != images_dir]
    if not paths:
        raise ValueError(f"{images_dir}: no images in identity sub-folders (<identity>/<image>)")
    return InstanceSet(folder, paths, [p.parent.name for p in paths], [NO_SOURCE] * len(paths))


def leave_one_out_gnd(identities) -> list[dict]:
    """``compute_map``'s ground truth for leave-one-out over all images: query i has as
    positives the other images of its identity and itself as junk."""
    identities = np.asarray(identities)
    gnd = []
    for i, identity in enumerate(identities):
        same = np.flatnonzero(identities == identity)
        gnd.append({"ok": same[same != i], "junk": np.array([i])})
    return gnd


@dataclass(frozen=True)
class InstanceResult:
    """Per-query AP and recall@1 (NaN for an identity with a single image, left out of means)."""

    aps: np.ndarray
    recall1: np.ndarray
    sources: list[str]

    def summary(self, mask: np.ndarray | None = None) -> dict:
        """{"mAP", "R@1", "queries"} over the queries of ``mask`` (all by default), in [0, 1]."""
        keep = ~np.isnan(self.aps) & (np.ones(len(self.aps), bool) if mask is None else mask)
        if not keep.any():
            return {"mAP": float("nan"), "R@1": float("nan"), "queries": 0}
        return {"mAP": float(self.aps[keep].mean()), "R@1": float(self.recall1[keep].mean()), "queries": int(keep.sum())}

    def per_source(self) -> dict[str, dict]:
        sources = np.asarray(self.sources)
        return {s: self.summary(sources == s) for s in dict.fromkeys(self.sources)}

    def to_dict(self) -> dict:
        return {"pooled": self.summary(), "sources": self.per_source()}


def evaluate_leave_one_out(descriptors, identities, sources=None) -> InstanceResult:
    """Leave-one-out AP and recall@1 of (n, d) ``descriptors`` (see the module docstring)."""
    x = np.asarray(descriptors, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(identities):
        raise ValueError(f"descriptors of shape {x.shape} for {len(identities)} images; expected ({len(identities)}, d)")
    ranks = rank(x, x)
    # P@1 of revisitop is 1 exactly when the best non-junk image is a positive: recall@1.
    _, aps, _, prs = compute_map(ranks, leave_one_out_gnd(identities), kappas=(1,))
    sources = list(sources) if sources is not None else [NO_SOURCE] * len(x)
    return InstanceResult(aps, prs[:, 0], sources)


def format_instance_report(result: InstanceResult, title: str) -> str:
    """The results table in percent: pooled mAP and R@1, then one row per source if there are several."""
    lines = [title, f"{'':26s}{'mAP':>8s}{'R@1':>8s}{'queries':>9s}"]

    def row(name: str, s: dict) -> str:
        return f"{name:26s}{100 * s['mAP']:8.2f}{100 * s['R@1']:8.2f}{s['queries']:9d}"

    lines.append(row("pooled", result.summary()))
    per_source = result.per_source()
    if len(per_source) > 1:
        lines.extend(row(f"  {name}", s) for name, s in per_source.items())
    return "\n".join(lines)
