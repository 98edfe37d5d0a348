"""Descriptors of a benchmark made elsewhere (``cfcd eval --features``), and distractors.

Accepted: a cache written by ``cfcd.evaluate.run(..., cache_dir=)`` (``db/``, ``queries/``), cfcd
features directories, and the files of ``cfcd.features`` (``.npy``, ``.mat``, ``.pkl``). Rows of
a features directory are matched to the benchmark's images by path when its ids name them all,
else taken in their stored order when the counts agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MismatchError
from .benchmarks.base import Benchmark

# Parts of a cache directory written by ``run``.
DB, QUERIES, DISTRACTORS = "db", "queries", "distractors"


@dataclass
class Descriptors:
    """Rows in the benchmark's order: ``database`` (n_db, d) and ``queries`` (n_q, d), None
    for leave-one-out. ``about``: how they were made, for the report (model, scales, max_side,
    crop: True / False / None when unknown)."""

    database: np.ndarray
    queries: np.ndarray | None = None
    about: dict = field(default_factory=dict)


def unknown_origin(path) -> dict:
    return {"model": f"descriptors from {path}", "scales": "unknown", "max_side": "unknown", "preparation": "unknown",
            "crop": None}


def manifest_origin(manifest: dict) -> dict:
    """What a features manifest says about its descriptors (its extraction settings, older
    manifests' missing ones filled in); ``crop``: all rows are crops."""
    from ..settings import ExtractionSettings

    boxes = manifest.get("boxes")
    return {"model": manifest["model"]["name"], **ExtractionSettings.from_dict(manifest).to_dict(),
            "crop": bool(boxes) and all(b is not None for b in boxes)}


def is_features_dir(path: Path) -> bool:
    from ..extraction import MANIFEST

    return (Path(path) / MANIFEST).is_file()


def features_rows(path, items) -> tuple[np.ndarray, dict]:
    """The descriptors of a features directory for ``items`` (paths or crops), in their order."""
    from ..extraction import load_features, split_input

    ids, desc, manifest = load_features(path)
    wanted = [str(Path(split_input(x)[0]).resolve()) for x in items]
    row = {str(Path(i).resolve()): k for k, i in enumerate(ids)}
    if len(set(wanted)) == len(wanted) and all(w in row for w in wanted):
        return desc[[row[w] for w in wanted]], manifest
    if len(ids) == len(items):
        return desc, manifest
    raise MismatchError(f"{path}: {len(ids)} descriptors, but {len(items)} images to describe; extracted for another set?")


def read(path, benchmark: Benchmark, query_path=None) -> Descriptors:
    """The descriptors of ``benchmark`` stored at ``path`` (and ``query_path``)."""
    from ..features import read_descriptors, read_eval_features

    path = Path(path)
    if path.is_dir() and (path / DB).is_dir() and query_path is None:
        path, query_path = path / DB, (path / QUERIES if (path / QUERIES).is_dir() else None)
    if is_features_dir(path):
        db, manifest = features_rows(path, benchmark.images)
        about = manifest_origin(manifest)
        queries = None
        if not benchmark.leave_one_out:
            if query_path is None or not is_features_dir(Path(query_path)):
                raise ConfigError(f"{path}: holds the database only; give the query descriptors (--query-features)")
            queries, q_manifest = features_rows(query_path, benchmark.queries)
            about["crop"] = manifest_origin(q_manifest)["crop"]
        return Descriptors(db, queries, about)
    if benchmark.leave_one_out:
        return Descriptors(read_descriptors(path, len(benchmark.images)), None, unknown_origin(path))
    db, queries = read_eval_features(path, len(benchmark.images), len(benchmark.queries), query_path)
    return Descriptors(db, queries, unknown_origin(path))


def read_distractors(source, dim: int):
    """Distractor descriptors from a cfcd features directory (left on disk, memory-mapped) or
    an (n, d) ``.npy`` (memory-mapped; a (d, n) one is transposed)."""
    from ..extraction import load_features

    path = Path(source)
    if path.is_dir() and is_features_dir(path):
        desc = load_features(path, mmap=True)[1]
    elif path.suffix.lower() == ".npy" and path.is_file():
        desc = np.load(path, mmap_mode="r")
        if desc.ndim == 2 and desc.shape[1] != dim and desc.shape[0] == dim:
            desc = desc.T
    else:
        raise ConfigError(f"distractors {source}: expected revisitop1m, a cfcd features directory or an (n, d) .npy file")
    if len(desc.shape) != 2 or desc.shape[1] != dim:
        raise MismatchError(f"distractors {source}: descriptors of shape {desc.shape}; the database ones are {dim}-d")
    return desc
