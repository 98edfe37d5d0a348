"""Revisited Oxford / Paris evaluation (Radenovic et al., CVPR 2018): ranking, mAP, mP@k.

The conventions are revisitop's, so that scripts written for it work unchanged: ``ranks`` is
(n_db, n_queries) of 0-based database indices, best first; ``compute_map`` takes one dict per
query with index arrays ``'ok'`` and ``'junk'``; ``evaluate_revisitop`` takes the ``gnd`` list
of ``gnd_<dataset>.pkl`` (``'easy'``, ``'hard'``, ``'junk'``) and applies the three protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputError, MismatchError

DEFAULT_KAPPAS = (1, 5, 10)
# Database rows scored at once by ``rank(..., topk=...)``: (chunk + topk) x n_queries floats in memory.
DEFAULT_CHUNK = 65536

# protocol -> (gnd fields that are positives, gnd fields that are ignored as junk)
PROTOCOLS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def rank(query_descs, db_descs, topk: int | None = None, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Database indices by decreasing dot product, shape (n_db, n_q), or (topk, n_q).

    ``query_descs`` is (n_q, d) and ``db_descs`` (n_db, d), one descriptor per row (transpose
    revisitop's d x n matrices). similarity = db @ query.T; equal similarities rank the lower
    database index first, so the result is ``np.argsort(-sim, axis=0, kind="stable")[:topk]``.

    Without ``topk`` the whole similarity matrix is built and sorted. With ``topk`` (for +1M
    distractors) the database is scored ``chunk`` rows at a time and only the best ``topk`` per
    query are kept: memory O((chunk + topk) n_q), selection by partition, and only the final
    ``topk`` rows are sorted. ``db_descs`` may then be anything sliced by rows, such as the
    ``cfcd.sharded.ShardedArray`` of descriptors left on disk: only one chunk is read at a time.
    """
    q = _as_float(query_descs)
    db = db_descs if topk is not None and hasattr(db_descs, "shape") else _as_float(db_descs)
    if q.ndim != 2 or len(db.shape) != 2 or q.shape[1] != db.shape[1]:
        raise MismatchError(f"descriptors must be (n, d) with the same d; got queries {q.shape} and database {db.shape}")
    if topk is not None and topk < 1:
        raise ConfigError(f"topk must be at least 1; got {topk}")
    n_db, n_q = db.shape[0], q.shape[0]
    if topk is None or topk >= n_db:
        sim = _similarity(_as_float(db), q, 0)
        return np.argsort(-sim, axis=0, kind="stable")
    best_sim = np.empty((0, n_q), dtype=np.result_type(q, np.promote_types(db.dtype, np.float32)))
    best_idx = np.empty((0, n_q), dtype=np.int64)
    for start in range(0, n_db, chunk):
        sim = _similarity(_as_float(db[start:start + chunk]), q, start)
        idx = np.broadcast_to(np.arange(start, start + len(sim))[:, None], sim.shape)
        best_sim, best_idx = _keep_best(np.concatenate([best_sim, sim]), np.concatenate([best_idx, idx]), topk)
    order = np.lexsort((best_idx, -best_sim), axis=0)
    return np.take_along_axis(best_idx, order, axis=0)


def _as_float(x) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.promote_types(x.dtype, np.float32), copy=False)


def _similarity(db_block: np.ndarray, q: np.ndarray, start: int) -> np.ndarray:
    sim = db_block @ q.T
    if not np.isfinite(sim).all():
        row = start + int(np.flatnonzero(~np.isfinite(sim).all(axis=1))[0])
        raise InputError(f"database descriptor {row} or a query descriptor is not finite (NaN or inf); re-extract it")
    return sim


def _keep_best(sim: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k rows per column with the largest ``sim``, ties to the smallest ``idx``.

    ``idx`` must increase down every column; the kept rows keep that order.
    """
    n = sim.shape[0]
    if n <= k:
        return sim, idx
    threshold = np.partition(sim, n - k, axis=0)[n - k]  # the k-th largest of each column
    above = sim > threshold
    tied = sim == threshold
    keep = above | (tied & (np.cumsum(tied, axis=0) <= k - above.sum(axis=0)))
    rows = np.nonzero(keep.T)[1].reshape(sim.shape[1], k).T
    return np.take_along_axis(sim, rows, axis=0), np.take_along_axis(idx, rows, axis=0)


def compute_ap(ranks, nres: int) -> float:
    """Average precision of one query, by the trapezoid rule (revisitop; not sklearn's AP).

    ``ranks``: the junk-free 0-based ranks of the retrieved positives, ascending; ``nres``: the
    number of positives (> 0). The j-th positive (0-based) at rank r adds

        (p_before + p_after) / 2 / nres,  p_before = 1 if r == 0 else j / r,  p_after = (j + 1) / (r + 1)

    so a positive that is not in ``ranks`` adds nothing.
    """
    r = np.asarray(ranks, dtype=np.float64)
    j = np.arange(len(r), dtype=np.float64)
    before = np.divide(j, r, out=np.ones_like(r), where=r > 0)
    after = (j + 1) / (r + 1)
    return float(((before + after) / 2).sum() / nres)


def _precision_at(pos: np.ndarray, nres: int, kappas: Sequence[int]) -> np.ndarray:
    """revisitop's mP@k of one query: pos = junk-free 1-based ranks of the retrieved positives,

        k' = min(max(pos), k),  P@k = |{p in pos : p <= k'}| / k'

    (so a query whose positives all rank above k is not penalised for having fewer than k).
    A positive missing from a truncated ranking lies below all of it: max(pos) is then unknown
    but beyond the retrieved rows, and k' = k.
    """
    last = pos.max() if len(pos) == nres else np.inf
    return np.array([np.count_nonzero(pos <= min(last, k)) / min(last, k) for k in kappas], dtype=np.float64)


def compute_map(ranks, gnd: Sequence[Mapping], kappas: Sequence[int] = DEFAULT_KAPPAS):
    """mAP and mP@k over queries, with revisitop's signature and return values.

    ``ranks``: (n_db, n_q) 0-based database indices, best first. ``gnd[i]['ok']``: the
    positives of query i; ``gnd[i]['junk']`` (optional): indices removed from its ranking
    before anything is measured. Returns ``(map, aps, pr, prs)``: the mean AP, the AP per
    query (n_q,), the mean precision at each of ``kappas`` (len(kappas),) and the precisions
    per query (n_q, len(kappas)). A query without positives gets NaN in ``aps`` and ``prs`` and
    is left out of both means; if no query has positives the means are NaN.

    Truncated rankings: ``ranks`` may hold only the first L rows of every column (``rank(...,
    topk=L)``, as +1M evaluations do). A positive absent from a column counts as not retrieved.
    Its AP term is then 0 instead of at most 1 / L', L' being the number of non-junk rows
    retrieved, so AP is a lower bound short by at most n_missing / L'; in mP@k it sets k' = k,
    the exact value whenever L' >= k. With full rankings the values equal revisitop's.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        raise MismatchError(f"ranks must be (n_db, n_queries) with one column per gnd entry; got {ranks.shape} for {len(gnd)} queries")
    kappas = tuple(kappas)
    aps = np.full(len(gnd), np.nan)
    prs = np.full((len(gnd), len(kappas)), np.nan)
    for i, query in enumerate(gnd):
        ok = np.asarray(query["ok"]).ravel()
        if ok.size == 0:
            continue
        junk = np.asarray(query.get("junk", ())).ravel()
        column = ranks[:, i]
        pos = np.flatnonzero(np.isin(column, ok))
        junk_at = np.flatnonzero(np.isin(column, junk))
        pos = pos - np.searchsorted(junk_at, pos)  # minus the junk ranked above each positive
        aps[i] = compute_ap(pos, ok.size)
        prs[i] = _precision_at(pos + 1, ok.size, kappas)
    valid = ~np.isnan(aps)
    if not valid.any():
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return float(aps[valid].mean()), aps, prs[valid].mean(axis=0), prs


@dataclass(frozen=True)
class ProtocolResult:
    """``compute_map``'s outputs for one protocol; ``n_queries`` counts queries with positives."""

    map: float
    aps: np.ndarray
    pr: np.ndarray
    prs: np.ndarray

    @property
    def n_queries(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.aps)))


@dataclass(frozen=True)
class RevisitopResult:
    """Results of the Easy, Medium and Hard protocols (keys of ``protocols``, in that order)."""

    kappas: tuple[int, ...]
    protocols: dict[str, ProtocolResult]

    def to_dict(self) -> dict:
        """Means as plain floats in [0, 1], for JSON: {protocol: {"mAP": .., "mP@k": .., "queries": ..}}."""
        return {
            name: {"mAP": r.map, **{f"mP@{k}": float(p) for k, p in zip(self.kappas, r.pr)}, "queries": r.n_queries}
            for name, r in self.protocols.items()
        }


def protocol_gnd(gnd_full: Sequence[Mapping], protocol: str) -> list[dict]:
    """``compute_map``'s ``{'ok', 'junk'}`` per query for one protocol of ``PROTOCOLS``."""
    ok_fields, junk_fields = PROTOCOLS[protocol]

    def join(query, fields):
        return np.concatenate([np.asarray(query[f], dtype=np.int64).ravel() for f in fields])

    return [{"ok": join(q, ok_fields), "junk": join(q, junk_fields)} for q in gnd_full]


def evaluate_revisitop(ranks, gnd_full: Sequence[Mapping], kappas: Sequence[int] = DEFAULT_KAPPAS) -> RevisitopResult:
    """Easy / Medium / Hard evaluation of ``ranks`` against the ``gnd`` of ``gnd_<dataset>.pkl``.

    | protocol | positives   | junk        |
    | easy     | easy        | junk + hard |
    | medium   | easy + hard | junk        |
    | hard     | hard        | junk + easy |
    """
    kappas = tuple(kappas)
    return RevisitopResult(
        kappas,
        {p: ProtocolResult(*compute_map(ranks, protocol_gnd(gnd_full, p), kappas)) for p in PROTOCOLS},
    )


def format_report(result: RevisitopResult, title: str, metadata: Mapping[str, object] | None = None) -> str:
    """The results table in percent, then one ``key: value`` line per ``metadata`` entry.

    ``metadata`` says how the numbers were made; the spec asks for the crop policy, the
    scales and the model / training set, e.g. ``{"crop": "queries cropped to their box",
    "scales": (0.7071, 1.0, 1.4142), "model": "cfcd_r50_gldv2"}``. Sequences are joined with ", ".
    """
    mp_names = [f"mP@{k}" for k in result.kappas]
    header = f"{'':8s}{'mAP':>8s}" + "".join(f"{n:>8s}" for n in mp_names) + f"{'queries':>9s}"
    lines = [title, header]
    for name, r in result.protocols.items():
        cells = f"{100 * r.map:8.2f}" + "".join(f"{100 * p:8.2f}" for p in r.pr)
        lines.append(f"{name.capitalize():8s}{cells}{r.n_queries:9d}")
    for key, value in (metadata or {}).items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        lines.append(f"{key}: {value}")
    return "\n".join(lines)
