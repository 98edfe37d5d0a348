"""Defaults chosen on both photo sets and on collections of several shapes (issue 29).

    .venv/bin/python bench/protocol.py --part projection     # the index's learned projection
    .venv/bin/python bench/protocol.py --part model          # the default model and scales
    .venv/bin/python bench/protocol.py --part decode         # the reduced JPEG decode
    .venv/bin/python bench/protocol.py --part rerank         # query expansion, database augmentation
    .venv/bin/python bench/protocol.py --part decode --upscale 3072   # ... on phone-sized copies

Every candidate is scored on the collections of ``cfcd.evaluate.shapes.SHAPES`` drawn from
instances-dev and instances-hard (whole sets, small, two photos per identity, distractor-heavy,
hard identities only, both sets together), leave-one-out within each collection; a candidate
is accepted only if it loses no more than 0.5 mAP to the baseline in any cell (a set, its
source groups, its hard and moderate groups) of any shape and gains on the pooled mean
(``cfcd.evaluate.shapes.judge``); leave-one-set-out: the choice made on one set's collections,
scored on the other's.

projection  baseline: the default descriptors searched as they are (no projection). Candidates:
            rules ``n >= N: d = f * n (at most 256), shrinkage s`` learned from each collection's
            own descriptors (no labels), as ``cfcd.index.projection.learn`` learns them (the
            script learns them from one SVD of the centred collection, checked against
            ``learn`` on the first collection). ``--blend A`` adds each rule searched as a blend,
            similarity (1 - A) x raw + A x projected (the two L2-normalised descriptors side by
            side, weighted); ``--oracle`` adds each rule behind the best possible per-collection
            gate, one that knows the labels and keeps the projection only in a collection where
            no cell of it loses more than 0.5 (the most a label-free check could buy).
model       baseline: today's default (MobileNetV2 + EfficientNet-Lite2, scales 0.7071 and 1
            of a 384 px long side). Candidates: each member alone and the concatenation at
            384 and 512 px with scales (0.7071, 1) and (0.7071, 1, 1.4142).
rerank      baseline: the default descriptors searched as they are. Candidates: alpha-QE of the
            query over its top N results and alpha-DBA of the database over each photo's top N
            (``cfcd.index.rerank``, alpha 3), alone and together. Strict leave-one-out: the
            query's own photo is neither among the neighbours that expand it nor among those that
            augment the database (as for a photo that is not in the index yet).
decode      baseline: every JPEG decoded at full size. Candidates: the ``cfcd`` preparation's
            reduced decode straight to the largest view's size (margin 1: issue 20's) and to
            at least twice it (margin 2: today's), default model and settings. The sets'
            photos are at most 1024 px, so margin 2 decodes them at full size; ``--upscale L``
            scores copies of every photo upscaled (bicubic) to an L px long side, JPEG quality
            90, written once to a cache folder, where both margins decode at a reduced size,
            against the original photos (the copies' full decode is then the noise floor of
            the resampling itself).

Single-scale descriptors are cached (``cfcd.selection.DescriptorCache``, ~/.cache/cfcd) and
multi-scale ones are their L2-normalised sums, as ``cfcd.extract`` makes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from cfcd.evaluate import shapes
from cfcd.selection import Candidate, DescriptorCache, select_on_shapes

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SETS = (SHARED / "instances-dev", SHARED / "instances-hard")
BASELINE_MODEL = "default@384:0.7071,1"
MODEL_CANDIDATES = [f"{m}@{side}:{scales}" for side in (384, 512) for scales in ("0.7071,1", "0.7071,1,1.4142")
                    for m in ("default", "mobilenet_v2-imagenet", "efficientnet_lite2-imagenet")]
# (threshold n, d / n, shrinkage): issue 18's rule first
RULES = [(100, 0.25, 8.0), (100, 0.25, 32.0), (100, 0.5, 8.0), (100, 0.5, 32.0), (100, 1.0, 32.0),
         (100, 1.0, 128.0), (300, 0.25, 8.0), (300, 0.5, 32.0)]
NONE = "none"


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


_SVD: dict = {}


def _svd(x: np.ndarray):
    """(centred x, singular values, right singular vectors) of one collection, kept for the
    next rule (the collections are the same for every rule)."""
    key = (x.shape, hash(x.tobytes()))
    if key not in _SVD:
        centred = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
        _SVD.clear()
        _SVD[key] = (centred, *np.linalg.svd(centred, full_matrices=False)[1:])
    return _SVD[key]


def projected(x: np.ndarray, dim: int, shrinkage: float) -> np.ndarray:
    """``x`` through the PCA-whitening learned from ``x`` itself (``cfcd.index.projection``'s
    formula: eps = shrinkage * mean of the kept eigenvalues), L2-normalised."""
    centred, s, vt = _svd(x)
    dim = min(dim, len(x) - 1, x.shape[1])
    lam = s[:dim] ** 2 / len(x)
    rows = vt[:dim] / np.sqrt(lam + shrinkage * lam.mean())[:, None]
    return l2(centred @ rows.T)


def rule_name(rule) -> str:
    n, f, s = rule
    return f"n>={n}: d={f:g}n, s={s:g}"


def rule_candidate(x: np.ndarray, rule):
    n_min, f, s = rule

    def candidate(index: np.ndarray) -> np.ndarray:
        n = len(index)
        if n < n_min:
            return x[index]
        return projected(x[index], int(min(256, round(f * n))), s)
    return candidate


def blend_candidate(x: np.ndarray, rule, weight: float):
    """The rule's projection beside the raw descriptor: inner products are
    (1 - weight) x raw similarity + weight x projected similarity."""
    projection = rule_candidate(x, rule)

    def candidate(index: np.ndarray) -> np.ndarray:
        raw = l2(x[index].astype(np.float64))
        if len(index) < rule[0]:
            return raw
        return np.hstack([np.sqrt(1 - weight) * raw, np.sqrt(weight) * projection(index)])
    return candidate


def oracle_candidate(pool: shapes.PhotoPool, x: np.ndarray, rule, kept: list[bool]):
    """The rule behind a gate that sees the labels: a collection keeps the projection only if
    none of its cells loses more than the protocol's tolerance (appends each decision to ``kept``)."""
    projection = rule_candidate(x, rule)

    def candidate(index: np.ndarray) -> np.ndarray:
        identities = pool.identities[index]
        raw, projected_ = x[index], projection(index)
        before, after = shapes.query_aps(raw, identities), shapes.query_aps(projected_, identities)
        answered = ~np.isnan(before)
        ok = all(after[m].mean() - before[m].mean() >= -shapes.TOLERANCE
                 for m in (mask & answered for mask in shapes.cells_of(pool, index).values()) if m.any())
        kept.append(ok and len(index) >= rule[0])
        return projected_ if ok else raw
    return candidate


def check_against_index(x: np.ndarray, index: np.ndarray) -> float:
    """Largest |difference| of similarities between the script's projection and the one
    ``cfcd.index.projection.learn`` learns (issue 18's rule on this collection)."""
    from cfcd.index.projection import learn

    d = int(min(256, round(0.25 * len(index))))
    ours = projected(x[index], d, 8.0)
    theirs = learn([x[index]], d, 8.0)(x[index]).astype(np.float64)
    return float(np.abs(ours @ ours.T - theirs @ theirs.T).max())


def reranked(x: np.ndarray, qe: int, dba: int, alpha: float = 3.0) -> shapes.Similarities:
    """Scores of every photo of ``x`` for the query made from each photo, after alpha-DBA of the
    database over each photo's ``dba`` nearest (itself included) and alpha-QE of the query over
    its top ``qe``, with the query's own photo left out of both."""
    from cfcd.index.rerank import alpha_query_expansion

    x = x.astype(np.float32)
    n, sims = len(x), x @ x.T
    nn = np.argsort(-(sims - 2 * np.eye(n, dtype=np.float32)), axis=1, kind="stable")[:, : n - 1]  # others, best first

    def augment(rows: np.ndarray, lists: list[np.ndarray]) -> np.ndarray:
        return np.stack([alpha_query_expansion(x[j][None], x[l][None], sims[j, l][None], alpha)[0]
                         for j, l in zip(rows, lists)])

    m = max(dba - 1, 0)
    base = augment(np.arange(n), list(nn[:, :m])) if m else x
    out = np.full((n, n), -np.inf, dtype=np.float32)
    for i in range(n):
        db = base
        touched = np.flatnonzero((nn[:, :m] == i).any(axis=1)) if m else []
        if len(touched):  # photos whose neighbours include the query: augmented without it
            db = base.copy()
            db[touched] = augment(touched, [l[l != i][:m] for l in nn[touched, : m + 1]])
        q = x[i]
        if qe:
            s = db @ q
            s[i] = -np.inf
            top = np.argsort(-s, kind="stable")[:qe]
            q = alpha_query_expansion(q[None], db[top][None], s[top][None], alpha)[0]
        scores = db @ q
        scores[i] = -np.inf
        out[i] = scores
    return shapes.Similarities(out)


RERANKS = {"QE top 1": (1, 0), "QE top 2": (2, 0), "QE top 3": (3, 0), "DBA top 2": (0, 2),
           "DBA top 3": (0, 3), "DBA + QE top 2": (2, 2)}


DECODES = {"full decode": None, "reduced, margin 1 (issue 20)": 1.0, "reduced, margin 2 (default)": 2.0}


def decoded(paths) -> dict[str, np.ndarray]:
    """The default descriptors of ``paths`` under each decode of ``DECODES`` (each cached in
    its own folder: the cache's key does not hold the margin)."""
    from cfcd.data.images import get_preparation
    from cfcd.selection import default_cache_dir

    prep = get_preparation("cfcd")
    out, default = {}, prep.decode_margin
    try:
        for name, margin in DECODES.items():
            prep.decode_margin = margin
            root = default_cache_dir().parent / f"descriptors-decode-{margin}"
            out[name] = descriptors(BASELINE_MODEL, DescriptorCache(paths, root))
    finally:
        prep.decode_margin = default
    return out


def upscaled(paths, side: int) -> list[Path]:
    """Copies of ``paths`` upscaled to a ``side`` px long side (bicubic, JPEG quality 90),
    written once under ~/.cache/cfcd/upscaled-SIDE."""
    from PIL import Image

    from cfcd.selection import default_cache_dir

    root = default_cache_dir().parent / f"upscaled-{side}"
    out = []
    for path in paths:
        target = root / path.parent.parent.parent.name / path.parent.name / path.name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as img:
                img = img.convert("RGB")
                f = side / max(img.size)
                img.resize((round(img.width * f), round(img.height * f)), Image.BICUBIC).save(target, quality=90)
        out.append(target)
    return out


def descriptors(spec: str, cache: DescriptorCache) -> np.ndarray:
    return cache.descriptors(Candidate.parse(spec))[0]


def report(scores: shapes.Scores, baseline: str, pool: shapes.PhotoPool, title: str) -> dict:
    verdicts = shapes.judge(scores, baseline)
    chosen = shapes.choose(verdicts, baseline)
    held = shapes.leave_one_set_out(scores, baseline, pool.set_names)
    print(f"## {title}\n")
    print(shapes.format_verdicts(scores, verdicts, baseline))
    print(f"\nChosen on both sets: `{chosen}`.\n")
    print("| held-out set | chosen on the other set | its gain there | its worst cell there |")
    print("|---|---|---:|---|")
    for s, h in held.items():
        print(f"| {s} | `{h['chosen']}` | {100 * h['gain']:+.2f} | {100 * h['worst']:+.2f} ({h['worst_cell']}) |")
    print()
    return {"chosen": chosen, "held_out": held, "verdicts": [v.__dict__ for v in verdicts], "scores": scores.table}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["projection", "model", "decode", "rerank"], required=True)
    p.add_argument("--upscale", type=int, help="decode part: score copies upscaled to this long side")
    p.add_argument("--sets", nargs="+", default=[str(s) for s in SETS], help="labelled sets (manifest.csv)")
    p.add_argument("--rules", nargs="*", help="projection rules N,F,S (default: the built-in list)")
    p.add_argument("--blend", nargs="*", type=float, default=[], help="projection part: also each rule blended at these weights")
    p.add_argument("--oracle", action="store_true", help="projection part: also each rule behind the labelled per-collection gate")
    p.add_argument("--candidates", nargs="*", help="model candidates MODEL[+MODEL]@SIDE:S1,S2 (first: the baseline)")
    p.add_argument("--cells", action="store_true", help="also print every cell of every shape")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)

    pool = shapes.load_pool(args.sets)
    cache = DescriptorCache(pool.paths)
    print(f"{len(pool)} images ({', '.join(f'{s}: {int((pool.sets == s).sum())}' for s in pool.set_names)}), "
          f"{len(pool.distractors)} distractors; machine: {platform.machine()}, {os.cpu_count()} cores")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    if args.part == "projection":
        x = descriptors(BASELINE_MODEL, cache)
        first = shapes.collections(pool)[0][3]
        print(f"check: the script's projection against cfcd.index.projection.learn on {len(first)} images: "
              f"largest similarity difference {check_against_index(x, first):.1e}\n")
        rules = [tuple(float(v) if i else int(v) for i, v in enumerate(r.split(","))) for r in args.rules] if args.rules else RULES
        candidates = {NONE: lambda index: x[index], **{rule_name(r): rule_candidate(x, r) for r in rules}}
        candidates.update({f"{rule_name(r)}, blend {w:g}": blend_candidate(x, r, w) for r in rules for w in args.blend})
        gates: dict[str, list[bool]] = {}
        if args.oracle:
            candidates.update({f"{rule_name(r)}, labelled gate": oracle_candidate(pool, x, r, gates.setdefault(rule_name(r), []))
                               for r in rules})
        baseline = NONE
    if args.part == "rerank":
        x = descriptors(BASELINE_MODEL, cache)
        candidates = {NONE: lambda index: x[index],
                      **{name: (lambda index, qe=qe, dba=dba: reranked(x[index], qe, dba)) for name, (qe, dba) in RERANKS.items()}}
        baseline = NONE
    if args.part == "decode":
        matrices = decoded(upscaled(pool.paths, args.upscale) if args.upscale else pool.paths)
        if args.upscale:  # the copies' decodes against the photos they were made from
            full = matrices["full decode"]
            for name, m in matrices.items():
                cos = (m.astype(np.float64) * full).sum(axis=1)
                print(f"{name}: cosine to the full decode of the copies: min {cos.min():.5f}, mean {cos.mean():.6f}")
            print()
            matrices = {"the original photos": descriptors(BASELINE_MODEL, cache),
                        **{f"{args.upscale} px copies, {name}": m for name, m in matrices.items()}}
        candidates = {name: (lambda index, m=m: m[index]) for name, m in matrices.items()}
        baseline = next(iter(candidates))
    if args.part == "model":  # as `cfcd eval --select ... --shapes` chooses
        specs = [Candidate.parse(c) for c in args.candidates or [BASELINE_MODEL, *[c for c in MODEL_CANDIDATES if c != BASELINE_MODEL]]]
        scores = select_on_shapes(args.sets, specs)[0]
        candidates, baseline = [c.name for c in specs], specs[0].name
    else:
        scores = shapes.score(pool, candidates)
    out = report(scores, baseline, pool, f"{args.part}: candidates against `{baseline}`")
    if args.part == "projection" and args.oracle:
        print("The labelled gate kept the projection in (collections of at least the rule's n; of "
              f"{len(shapes.collections(pool))}):")
        for name, kept in gates.items():
            print(f"- `{name}`: {sum(kept)}")
        print()
    if args.cells:
        print(format_cells(scores, list(candidates)))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def format_cells(scores: shapes.Scores, names) -> str:
    lines = ["| shape | cell | queries | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|---|---:|" + "---:|" * len(names)]
    base = names[0]
    for shape in scores.shapes:
        for cell, v in scores.table[base][shape].items():
            vals = [scores.cell(n, shape, cell) for n in names]
            lines.append(f"| {shape} | {cell} | {v['queries']} | " +
                         " | ".join(f"{100 * c['mAP']:.2f}" if c else "-" for c in vals) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
