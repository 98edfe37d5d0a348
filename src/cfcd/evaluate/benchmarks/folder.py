"""Folder-per-identity photo sets scored leave-one-out (UKBench / Holidays style).

Every image is a query once; the database is every other image; the positives are the other
images of its identity (an image of no identity, a distractor, is in the database only), and the query itself is junk so that it leaves its own ranking. AP is
revisitop's trapezoid rule (``cfcd.evaluate.compute_map``) and recall@1 says whether the best
other image shares the query's identity. Results are pooled and per source (the ``source``
column of the set's ``manifest.csv``; ``cfcd.data.instances`` reads the set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...data.instances import DISTRACTOR, NO_SOURCE, load_instances
from ...errors import MismatchError
from ..metrics import compute_map
from .base import Benchmark


def leave_one_out_gnd(identities) -> list[dict]:
    """``compute_map``'s ground truth for leave-one-out over all images: query i has as
    positives the other images of its identity and itself as junk. A distractor (identity
    ``DISTRACTOR``, the empty string) is in the database only: it has no positives (its AP is
    NaN, left out of every mean) and is nobody's positive."""
    identities = np.asarray(identities)
    gnd = []
    for i, identity in enumerate(identities):
        same = np.flatnonzero(identities == identity) if identity != DISTRACTOR else np.array([i])
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


@dataclass(frozen=True)
class FolderBenchmark(Benchmark):
    identities: Sequence[str] = ()
    sources: Sequence[str] = ()

    @property
    def title(self) -> str:
        return f"{self.name}: {len(self.images)} images of {len(set(self.identities))} identities, leave-one-out, every image a query"

    def score(self, ranks) -> InstanceResult:
        # revisitop's P@1 is 1 exactly when the best non-junk image is a positive: recall@1.
        _, aps, _, prs = compute_map(ranks, self.gnd, kappas=(1,))
        return InstanceResult(aps, prs[:, 0], list(self.sources))

    def report(self, result: InstanceResult, title: str) -> str:
        return format_instance_report(result, title)


def leave_one_out(images: Sequence, identities: Sequence[str], sources: Sequence[str] | None = None,
                  name: str = "images") -> FolderBenchmark:
    """The leave-one-out benchmark of ``images`` with these identities (and sources)."""
    if len(identities) != len(images):
        raise MismatchError(f"{len(identities)} identities for {len(images)} images")
    sources = list(sources) if sources is not None else [NO_SOURCE] * len(images)
    return FolderBenchmark(name, list(images), None, leave_one_out_gnd(identities), identities=list(identities), sources=sources)


def load(name: str, root, **options) -> FolderBenchmark:
    """The set at ``root`` (its root or ``images`` folder; see ``cfcd.data.instances``)."""
    data = load_instances(root)
    return leave_one_out(data.paths, data.identities, data.sources, name=str(data.root))

