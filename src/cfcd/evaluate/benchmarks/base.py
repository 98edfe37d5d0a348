"""The benchmark protocol: what to describe, and how to score a ranking of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ...settings import ExtractionSettings


@dataclass(frozen=True)
class Benchmark:
    """A retrieval benchmark as data; ``cfcd.evaluate.run`` describes and ranks, it scores.

    ``images``: the database, in the order ``gnd`` indexes it. ``queries``: the query inputs,
    paths or ``(path, (x0, y0, x1, y1))`` crops (the extractor crops before anything else), or
    None when every database image is a query in turn (leave-one-out; each query is then junk
    in its own ground truth). ``gnd``: per query, database indices by field (``easy``, ``hard``,
    ``junk`` for revisitop; ``ok``, ``junk`` otherwise). ``settings``: the extraction settings
    the protocol prescribes (``cfcd.settings.ExtractionSettings``; None: the model's defaults).
    """

    name: str
    images: Sequence
    queries: Sequence | None
    gnd: Sequence[Mapping]
    settings: ExtractionSettings | None = None

    @property
    def leave_one_out(self) -> bool:
        return self.queries is None

    @property
    def title(self) -> str:
        """The first line of the report: the set and its size."""
        n_q = len(self.images) if self.queries is None else len(self.queries)
        return f"{self.name}: {n_q} queries, {len(self.images)} database images"

    def query_policy(self, cropped: bool | None) -> str:
        """How the queries were described, for the report (None: not known)."""
        return "whole images (the set has no query boxes)"

    def score(self, ranks):
        """The result of ``ranks`` ((n_db, n_q) 0-based database indices, best first): an
        object with ``to_dict()`` (JSON) that ``report`` formats."""
        raise NotImplementedError

    def report(self, result, title: str) -> str:
        raise NotImplementedError
