"""``run``: describe a benchmark with a model (or take its descriptors), rank, score.

Ranking precision is decided here, once: without distractors the similarities are float64
and fully sorted (stable, ties to the lower index), so the ranking is that of exact
arithmetic whatever the descriptors' dtype; with distractors (+1M) they are float32, scored
``DEFAULT_CHUNK`` database rows at a time and cut to the best ``topk`` per query, so memory
stays O((chunk + topk) x queries) beside the descriptors, which may stay on disk.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, MismatchError
from ..sharded import ShardedArray
from .benchmarks.base import Benchmark
from .descriptors import DB, DISTRACTORS, QUERIES, Descriptors
from .metrics import rank

log = logging.getLogger(__name__)

# Rows kept per query when distractors are added: ranking 1M images in full is never needed,
# and AP over a truncated ranking is a lower bound short by at most (missed positives) / TOPK.
DEFAULT_TOPK = 10000


@dataclass
class Evaluation:
    """The benchmark's result, the ranking it scored, and how the descriptors were made."""

    benchmark: Benchmark
    result: object
    ranks: np.ndarray
    settings: dict
    title: str

    def report(self) -> str:
        return self.benchmark.report(self.result, self.title)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "results": self.result.to_dict()}


def run(
    model_or_descriptors,
    benchmark: Benchmark,
    distractors=None,
    topk: int = DEFAULT_TOPK,
    cache_dir: str | Path | None = None,
    settings=None,
    runtime=None,
) -> Evaluation:
    """Score ``benchmark`` with a model (its descriptors are extracted, through
    ``cache_dir/db``, ``/queries``, ``/distractors`` when given: resumable, and readable later by
    ``cfcd.evaluate.descriptors.read``) or with ready ``Descriptors``.

    ``distractors``: descriptors (an array, a memory map, a ``ShardedArray``) or images to
    extract (needs a model and ``cache_dir``), appended after the database so the ground truth
    stays valid; the ranking then keeps the best ``topk`` per query. ``settings``
    (``ExtractionSettings``, or a mapping of the fields to set; see ``extraction_settings``) and
    ``runtime`` (``cfcd.settings.Runtime``) go to ``cfcd.extract``.
    """
    given = isinstance(model_or_descriptors, Descriptors)
    if given and (settings or runtime):
        raise ConfigError("extraction settings and runtime need a model, not descriptors")
    if distractors is not None and not hasattr(distractors, "shape"):  # images: refuse before any work
        if given:
            raise ConfigError("distractor images need a model to describe them; with descriptors, give the distractors' descriptors")
        if cache_dir is None:
            raise ConfigError("extracting the 1M distractors takes hours: give a cache directory (--cache-dir) so an interrupted run resumes")
    if given:
        desc, model = model_or_descriptors, None
    else:
        model = model_or_descriptors
        settings = extraction_settings(model, benchmark, settings)
        desc = describe(model, benchmark, cache_dir, settings, runtime)
    database = desc.database
    queries = database if benchmark.leave_one_out else desc.queries
    for part, rows, items in (("database", database, benchmark.images), ("query", queries, benchmark.queries or benchmark.images)):
        if rows is None or len(rows.shape) != 2 or len(rows) != len(items):
            shape = None if rows is None else rows.shape
            raise MismatchError(f"{shape[0] if shape else 'no'} {part} descriptors for {len(items)} images of {benchmark.name}; "
                             f"expected ({len(items)}, d), got {shape}")
    title, n_dis = benchmark.title, 0
    start = time.perf_counter()
    if distractors is not None:
        if not hasattr(distractors, "shape"):
            distractors = _extract(model, distractors, cache_dir, DISTRACTORS, settings, runtime, mmap=True)
        n_dis = len(distractors)
        parts = distractors.parts if isinstance(distractors, ShardedArray) else [distractors]
        database = ShardedArray([np.asarray(database, np.float32), *parts])
        ranks = rank(np.asarray(queries, np.float32), database, topk=topk)
        title += f" + {n_dis} distractors (top {topk} ranked)"
    else:
        ranks = rank(np.asarray(queries, np.float64), np.asarray(database, np.float64))
    result = benchmark.score(ranks)
    log.info("ranking and scoring: %.1f s", time.perf_counter() - start)
    about = {k: v for k, v in desc.about.items() if k != "crop"}
    settings = {
        "dataset": benchmark.name + ("+1M" if n_dis else ""),
        **about,
        "crop": benchmark.query_policy(desc.about.get("crop")),
        "distractors": n_dis,
    }
    return Evaluation(benchmark, result, ranks, settings, title)


def extraction_settings(model, benchmark: Benchmark, settings=None):
    """The settings ``benchmark`` is described with: ``settings`` (an ``ExtractionSettings``,
    or a mapping whose None values mean "not given") over what the benchmark's protocol
    prescribes (Revisited Oxford/Paris: the paper's scales at the original size, prepared as
    the official extractor does), else over the model's defaults."""
    from ..settings import resolve

    return resolve(benchmark.settings, settings, model)


def describe(model, benchmark: Benchmark, cache_dir: str | Path | None = None, settings=None, runtime=None) -> Descriptors:
    """The benchmark's database and query descriptors made by ``model`` with ``settings``
    (an ``ExtractionSettings``; None: ``extraction_settings``'s choice)."""
    settings = extraction_settings(model, benchmark, settings)
    database = _extract(model, benchmark.images, cache_dir, DB, settings, runtime)
    queries = None if benchmark.leave_one_out else _extract(model, benchmark.queries, cache_dir, QUERIES, settings, runtime)
    cropped = not benchmark.leave_one_out and all(isinstance(q, tuple) for q in benchmark.queries)
    about = {"model": getattr(model, "name", "unnamed"), **settings.to_dict(), "crop": cropped}
    return Descriptors(database, queries, about)


def _extract(model, items: Sequence, cache_dir, part: str, settings, runtime, mmap: bool = False) -> np.ndarray:
    """Descriptors of ``items``, through ``cache_dir/part`` (resumable; left there with ``mmap``) when given."""
    from ..extraction import extract, extract_to_dir, load_features

    start = time.perf_counter()
    if cache_dir is not None:
        out = extract_to_dir(model, items, Path(cache_dir) / part, settings=settings, runtime=runtime)
        desc = load_features(out, mmap=mmap)[1]
    else:
        desc = extract(model, items, settings, runtime)
    elapsed = time.perf_counter() - start
    log.info("%s: %d images in %.1f s (%.2f images/s)", part, len(items), elapsed, len(items) / max(elapsed, 1e-9))
    return desc

