"""A projection learned by the index from its own photos (issue 18): measurement only.

Its rule no longer decides the default: issue 29 judges projections on both photo sets and on
collections of several shapes (``bench/protocol.py --part projection``, ``cfcd.evaluate.shapes``).

The index learns PCA-whitening from the collection's own UNLABELLED descriptors (the final
per-image descriptors X (n, D) of ``cfcd.extract``) and applies it to database and queries:

    w = cfcd.model.whitening.learn_whitening(X, dim=d, power=0.5, shrinkage=s),   x' = L2(w(x)).

1. Transductive protocol on a folder set with sources (instances-dev): the projection is learned
   from ALL photos without labels (an index holding them would: the held-out source's photos plus
   the others'); the hyper-parameters (d, s) are chosen leave-one-source-out
   (``cfcd.selection.leave_one_source_out``) among "no projection" and the d x s grid.
2. Size dependence: random subsets of whole identities (about n photos), learned and scored
   leave-one-out within the subset, several seeds; the mean gain of every (d, s) over no
   projection; a rule choose(n) (``RULE``, ``--rule``); learned at n and scored once the
   collection has grown to 1.1 to 2 x n (the old projection against a re-learned one).
3. Other training-free levers on the same protocol: GeM p = 4 and 6, scale-GeM (max over the
   L2-normalised scales), horizontal-flip averaging, Lite2 alone, regional GeM vectors as extra
   whitening samples, and alpha-QE / alpha-DBA (``cfcd.index.rerank``) after whitening.

Raw GeM vectors are extracted once per member network (both flips, p = 3, 4, 6 from the same
feature map, regional GeM at p = 3), prepared exactly as ``cfcd.extract`` prepares them (checked
against ``cfcd.extract`` on the first images at every run), and cached in an npz per member under
~/.cache/cfcd/transductive. Prints markdown tables.

    .venv/bin/python bench/transductive.py --images ../shared/data/instances-dev
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cfcd.evaluate import Descriptors, open_benchmark, run
from cfcd.evaluate.benchmarks.folder import leave_one_out
from cfcd.evaluate.metrics import rank
from cfcd.model.pretrained import DEFAULT_MODEL, members
from cfcd.model.whitening import region_boxes, whitening_from_axes
from cfcd.selection import HARD_GROUPS, SOURCE_GROUPS, _group_masks, leave_one_source_out

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "instances-dev"
DIMS = (32, 48, 64, 96, 128, 192, 256)
SHRINKAGES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
POWERS = (3.0, 4.0, 6.0)  # GeM p computed from the same feature maps
REGION_LEVELS = (2, 3)  # 4 + 9 windows (cfcd.model.whitening.region_boxes)
SIZES = (50, 100, 150, 200)
RULE = (100, 0.25, 8.0)  # threshold n, d / n, s: the rule proposed in docs/results.md (issue 18)
NONE = "none"


# raw GeM vectors, cached ---------------------------------------------------------------------

@torch.no_grad()
def raw_vectors(name: str, paths, scales, max_side, progress: bool = True) -> dict[str, np.ndarray]:
    """GeM vectors of one network before any head: ``g{p}`` (n, S, 2, C) for each p in POWERS
    (flip axis: as is, mirrored) and ``regions`` (n, S, R, C) at p = 3, unmirrored; float32."""
    from tqdm import tqdm

    from cfcd.extraction import inference_copy, prepare
    from cfcd.model import load_model
    from cfcd.model.pooling import gem
    from cfcd.settings import ExtractionSettings

    model = load_model(name).eval()
    if float(model.pool.p) != 3.0:
        raise ValueError(f"{name}: expected GeM p = 3, got {float(model.pool.p)}")
    net = inference_copy(model)
    settings = ExtractionSettings(tuple(scales), max_side).for_model(model)
    c = model.backbone_channels
    n_reg = len(region_boxes(8, 8, REGION_LEVELS))
    out = {f"g{p:g}": np.zeros((len(paths), len(scales), 2, c), np.float32) for p in POWERS}
    out["regions"] = np.zeros((len(paths), len(scales), n_reg, c), np.float32)
    caught = []
    hook = net.pool.register_forward_hook(lambda module, args, res: caught.append(args[0]))
    try:
        for i, path in enumerate(tqdm(paths, unit="img", desc=name, disable=not progress)):
            for s, x in enumerate(prepare(path, settings)):
                caught.clear()
                net(torch.stack([x, x.flip(-1)]).contiguous(memory_format=torch.channels_last))
                f4 = caught[0]
                for p in POWERS:
                    out[f"g{p:g}"][i, s] = gem(f4, p).numpy()
                boxes = region_boxes(f4.shape[2], f4.shape[3], REGION_LEVELS)
                if len(boxes) == n_reg:
                    out["regions"][i, s] = torch.cat([gem(f4[:1, :, y0:y1, x0:x1], 3.0) for y0, y1, x0, x1 in boxes]).numpy()
                else:  # a map too small for distinct windows: the global vector
                    out["regions"][i, s] = out["g3"][i, s, 0]
    finally:
        hook.remove()
    return out


def cached_vectors(name: str, paths, scales, max_side, cache: Path) -> dict[str, np.ndarray]:
    key = hashlib.sha256("\n".join([name, repr(tuple(scales)), str(max_side), repr(POWERS), repr(REGION_LEVELS),
                                    *map(str, paths)]).encode()).hexdigest()[:16]
    file = cache / f"{name}-{key}.npz"
    if file.is_file():
        with np.load(file) as z:
            return dict(z)
    vectors = raw_vectors(name, paths, scales, max_side)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, **vectors)
    os.replace(tmp, file)
    return vectors


# descriptors made from them ------------------------------------------------------------------

def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def member_descriptor(v: dict, p: float = 3.0, flip: bool = False, scale_max: bool = False) -> np.ndarray:
    """L2(sum over scales (and flips) of L2(GeM)); ``scale_max``: element-wise max instead of the sum."""
    g = v[f"g{p:g}"].astype(np.float64)
    g = l2(g if flip else g[:, :, :1])  # (n, S, F, C)
    g = g.reshape(len(g), -1, g.shape[-1])
    return l2(g.max(axis=1) if scale_max else g.sum(axis=1))


def concat(parts) -> np.ndarray:
    """As ``cfcd.model.concat``: [p_1/|p_1|, ..., p_k/|p_k|] / sqrt(k)."""
    return np.concatenate([l2(p) for p in parts], axis=1) / np.sqrt(len(parts))


def region_descriptors(vs) -> np.ndarray:
    """(n * R, D) descriptors of the regional windows, made like the global ones (sum over
    scales per member, members concatenated): extra unlabelled samples for learning."""
    per = [l2(l2(v["regions"].astype(np.float64)).sum(axis=1)) for v in vs]  # (n, R, C) each
    return concat([p.reshape(-1, p.shape[-1]) for p in per])


# the projection and the protocol ---------------------------------------------------------------

def grid(n: int, dims=DIMS, shrinkages=SHRINKAGES) -> list[tuple[int, float]]:
    """(d, s) pairs with d below the number of photos learned from."""
    return [(d, s) for d in dims if d < n for s in shrinkages]


def cand(d: int, s: float) -> str:
    return f"d={d} s={s:g}"


def projections(train: np.ndarray, pairs) -> dict:
    """``learn_whitening(train, d, 0.5, s)`` for every (d, s), from one SVD of the centred
    vectors (n, D) instead of an eigendecomposition of the D x D covariance (the same axes and
    eigenvalues for d < n, the rank; ~1 s instead of ~1 min at D = 2560 on the loaded VM):
    rows = the top right singular vectors, sign fixed as ``principal_axes`` fixes it,
    variance = singular value^2 / (n - 1). tests/test_transductive_bench.py checks the equality."""
    x = torch.as_tensor(np.asarray(train), dtype=torch.float64)
    dmax = max(d for d, _ in pairs)
    if dmax >= len(x):
        raise ValueError(f"d = {dmax} needs more than {len(x)} vectors")
    mean = x.mean(dim=0)
    _, sv, vt = torch.linalg.svd(x - mean, full_matrices=False)
    rows = vt[:dmax]
    flip = torch.sign(rows.gather(1, rows.abs().argmax(dim=1, keepdim=True)))
    rows = rows * torch.where(flip == 0, torch.ones_like(flip), flip)
    variance = sv[:dmax] ** 2 / (len(x) - 1)
    return {(d, s): whitening_from_axes(mean, rows[:d], variance[:d], 0.5, s) for d, s in pairs}


def project(w, x: np.ndarray) -> np.ndarray:
    return l2(w(x)) if w is not None else x


def score(x: np.ndarray, bench, queries: np.ndarray | None = None):
    """Leave-one-out result of ``x``; with ``queries`` (one per photo, e.g. expanded) ranked
    against ``x`` as the database (``run`` takes a leave-one-out set's queries from its database)."""
    if queries is None:
        return run(Descriptors(x.astype(np.float64)), bench).result
    return bench.score(rank(queries.astype(np.float64), x.astype(np.float64)))


def candidates(x: np.ndarray, bench, pairs, train: np.ndarray | None = None) -> dict:
    """Leave-one-out results of no projection and of every (d, s), learned from ``train``
    (default: ``x`` itself, i.e. every photo of the collection, without labels)."""
    ws = projections(x if train is None else train, pairs)
    results = {NONE: score(x, bench)}
    results.update({cand(d, s): score(project(w, x), bench) for (d, s), w in ws.items()})
    return results


def rerank_result(x: np.ndarray, bench, qe: int = 0, dba: int = 0, alpha: float = 3.0):
    """Leave-one-out with alpha-DBA over the collection (the database side; each query keeps its
    own vector) and alpha-QE over each query's top ``qe`` other photos (``cfcd.index.rerank``)."""
    from cfcd.index.rerank import alpha_query_expansion, database_augmentation

    x = x.astype(np.float32)
    db = database_augmentation(x, dba, alpha) if dba else x
    q = x
    if qe:
        sims = q @ db.T
        np.fill_diagonal(sims, -np.inf)  # the query's own row is not a neighbour
        top = np.argsort(-sims, axis=1, kind="stable")[:, :qe]
        q = alpha_query_expansion(q, db[top], np.take_along_axis(sims, top, axis=1), alpha)
    return score(db, bench, q)


# reports -------------------------------------------------------------------------------------

def pct(v: float) -> str:
    return f"{100 * v:.2f}"


def held_out_table(selection, baseline: str = NONE) -> str:
    """Per held-out group: the (d, s) chosen on the other groups, its mAP / R@1 against no projection."""
    hard = set(selection.hard)
    lines = ["| held-out group | photos | chosen on the others | mAP | R@1 | no projection mAP | R@1 | gain mAP |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for f in selection.folds:
        b = selection.scores[baseline][f.group]
        lines.append(f"| {f.group}{' (hard)' if f.group in hard else ''} | {f.held_out['queries']} | `{f.chosen}` | "
                     f"{pct(f.held_out['mAP'])} | {pct(f.held_out['R@1'])} | {pct(b['mAP'])} | {pct(b['R@1'])} | "
                     f"{100 * (f.held_out['mAP'] - b['mAP']):+.2f} |")
    h = selection.held_out
    bp = pooled(selection, baseline)
    lines.append(f"| **pooled** | {h['pooled']['queries']} | | {pct(h['pooled']['mAP'])} | {pct(h['pooled']['R@1'])} | "
                 f"{pct(bp['mAP'])} | {pct(bp['R@1'])} | {100 * (h['pooled']['mAP'] - bp['mAP']):+.2f} |")
    if h["hard"]:
        bh = {m: selection.macro(baseline, list(selection.hard), m) for m in ("mAP", "R@1")}
        lines.append(f"| **hard (mean of 3)** | | | {pct(h['hard']['mAP'])} | {pct(h['hard']['R@1'])} | {pct(bh['mAP'])} | "
                     f"{pct(bh['R@1'])} | {100 * (h['hard']['mAP'] - bh['mAP']):+.2f} |")
    lines.append(f"\nChosen on all groups: `{selection.chosen}`.")
    return "\n".join(lines)


def pooled(selection, name: str) -> dict:
    s = selection.scores[name].values()
    n = sum(v["queries"] for v in s)
    return {m: sum(v[m] * v["queries"] for v in s if v["queries"]) / max(n, 1) for m in ("mAP", "R@1")}


def summary(result, sources) -> dict:
    """Pooled mAP and the mAP of each hard group present."""
    masks = _group_masks(sources, SOURCE_GROUPS)
    out = {"pooled": result.summary()["mAP"]}
    out.update({g: result.summary(masks[g])["mAP"] for g in HARD_GROUPS if g in masks})
    return out


# the size study ------------------------------------------------------------------------------

def draw(identities, sizes, rng) -> list[np.ndarray]:
    """Row indices of whole identities taken in one random order until there are at least n
    photos, for each n of ``sizes`` (nested: a larger draw holds every smaller one)."""
    ids = np.asarray(identities)
    order = rng.permutation(list(dict.fromkeys(ids)))
    out = []
    for n in sizes:
        rows, k = [], 0
        while len(rows) < n and k < len(order):
            rows.extend(np.flatnonzero(ids == order[k]))
            k += 1
        out.append(np.sort(np.array(rows)))
    return out


def subset_bench(bench, rows):
    return leave_one_out([bench.images[i] for i in rows], [bench.identities[i] for i in rows],
                         [bench.sources[i] for i in rows], name=f"{len(rows)} photos")


def choose(n: int, threshold: int, fraction: float, shrinkage: float, cap: int = 256) -> tuple[int, float] | None:
    """The proposed rule: no projection below ``threshold`` photos, else d = min(cap, round(fraction * n)), s = shrinkage."""
    if n < threshold:
        return None
    return min(cap, int(round(fraction * n))), shrinkage


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES), help="set root or images/ folder (with manifest.csv sources)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "cfcd" / "transductive"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--check", type=int, default=6, help="check the cached pipeline against cfcd.extract on this many photos")
    ap.add_argument("--rule", nargs=3, type=float, default=list(RULE), metavar=("THRESHOLD", "FRACTION", "SHRINKAGE"),
                    help="the rule scored in part 2: no projection below THRESHOLD photos, else d = FRACTION * n, s = SHRINKAGE")
    ap.add_argument("--shrinkages", type=float, nargs="+", default=list(SHRINKAGES), help="the grid's s values")
    ap.add_argument("--parts", nargs="+", default=["protocol", "size", "relearn", "levers"], choices=["protocol", "size", "relearn", "levers"])
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    from cfcd.settings import ExtractionSettings

    settings = ExtractionSettings()
    bench = open_benchmark("folder", args.images)
    names = members(DEFAULT_MODEL)
    start = time.perf_counter()
    vs = [cached_vectors(m, bench.images, settings.scales, settings.max_side, Path(args.cache)) for m in names]
    x = concat([member_descriptor(v) for v in vs])
    print(f"{bench.name}: {len(bench.images)} photos, {len(set(bench.identities))} identities; model {DEFAULT_MODEL}, "
          f"scales {settings.scales}, long side {settings.max_side}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}; vectors in {time.perf_counter() - start:.0f} s")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    if args.check:
        import cfcd

        ref = cfcd.extract(cfcd.load_model(DEFAULT_MODEL), bench.images[: args.check], settings)
        err = float(np.abs(ref - x[: args.check]).max())
        print(f"check: max |cfcd.extract - cached pipeline| over {args.check} photos = {err:.1e}\n")
        if err > 1e-4:
            raise SystemExit("the cached vectors do not reproduce cfcd.extract; delete the cache and rerun")

    pairs = grid(len(x), shrinkages=args.shrinkages)
    if "protocol" in args.parts:
        sel = leave_one_source_out(candidates(x, bench, pairs), SOURCE_GROUPS)
        print("## 1. Transductive protocol: learned from all photos, (d, s) chosen leave-one-source-out\n")
        print(held_out_table(sel) + "\n")
        print(grid_table(sel, pairs) + "\n")
    if "size" in args.parts:
        rule = (int(args.rule[0]), args.rule[1], args.rule[2])
        size_study(x, bench, args.sizes, args.seeds, rule, args.shrinkages)
    if "relearn" in args.parts:
        relearn(x, bench, (int(args.rule[0]), args.rule[1], args.rule[2]), seeds=args.seeds)
    if "levers" in args.parts:
        levers(vs, bench, pairs)
    return 0


def grid_table(selection, pairs) -> str:
    """Pooled mAP gain over no projection of every (d, s) (rows d, columns s) on the whole set
    (hindsight: for reading, not for choosing)."""
    base = pooled(selection, NONE)["mAP"]
    dims, shrinkages = sorted({d for d, _ in pairs}), sorted({s for _, s in pairs})
    lines = ["pooled mAP gain over no projection on the whole set (hindsight), rows d, columns s:", "",
             "| d | " + " | ".join(f"s={s:g}" for s in shrinkages) + " |", "|---:|" + "---:|" * len(shrinkages)]
    for d in dims:
        lines.append(f"| {d} | " + " | ".join(f"{100 * (pooled(selection, cand(d, s))['mAP'] - base):+.2f}" for s in shrinkages) + " |")
    return "\n".join(lines)


def size_study(x, bench, sizes, seeds, rule, shrinkages=SHRINKAGES):
    n_all = len(x)
    rows_by = {(n, seed): draw(bench.identities, [n], np.random.default_rng(1000 * n + seed))[0] for n in sizes for seed in range(seeds)}
    rows_by[(n_all, 0)] = np.arange(n_all)
    gains = {}  # (n, seed) -> {(d, s): {metric: gain}}
    for (n, seed), rows in rows_by.items():
        sub = subset_bench(bench, rows)
        xs = x[rows]
        pairs = grid(len(rows), shrinkages=shrinkages)
        choice = choose(len(rows), *rule)
        res = candidates(xs, sub, pairs + ([choice] if choice and choice not in pairs else []))
        base = summary(res[NONE], sub.sources)
        gains[(n, seed)] = {k: {g: v - base[g] for g, v in summary(r, sub.sources).items()} for k, r in res.items() if k != NONE}
        gains[(n, seed)]["_photos"] = len(rows)
        gains[(n, seed)]["_rule"] = gains[(n, seed)][cand(*choice)] if choice else {g: 0.0 for g in base}
    print_size_tables(gains, sizes, n_all, rule, shrinkages)


def print_size_tables(gains, sizes, n_all, rule, shrinkages=SHRINKAGES):
    ns = [*sizes, n_all]
    print("## 2. Size dependence: whole identities drawn at random, learned and scored within the subset\n")
    photos = {n: np.mean([g["_photos"] for (m, _), g in gains.items() if m == n]) for n in ns}
    print("Mean pooled mAP gain over no projection (points), over seeds (one draw at n = all); rows (d, s), columns n "
          "(mean photos: " + ", ".join(f"{photos[n]:.0f}" for n in ns) + "):\n")
    keys = [cand(d, s) for d in DIMS for s in shrinkages]
    print("| d, s | " + " | ".join(f"n={n}" for n in ns) + " |")
    print("|---|" + "---:|" * len(ns))
    for k in keys:
        cells = []
        for n in ns:
            vals = [g[k]["pooled"] for (m, _), g in gains.items() if m == n and k in g]
            cells.append(f"{100 * np.mean(vals):+.2f}" if vals else "-")
        print(f"| {k} | " + " | ".join(cells) + " |")
    print(f"\nThe rule (threshold, d / n, s) = {rule}: mean gain (points) over seeds, worst seed in brackets; "
          "hard groups over the seeds whose subset holds them:\n")
    print("| n | choice | pooled mAP | " + " | ".join(HARD_GROUPS) + " |")
    print("|---|---|---:|" + "---:|" * len(HARD_GROUPS))
    for n in ns:
        runs = [g for (m, _), g in gains.items() if m == n]
        choice = choose(int(round(photos[n])), *rule)
        cells = []
        for key in ("pooled", *HARD_GROUPS):
            vals = [r["_rule"][key] for r in runs if key in r["_rule"]]
            cells.append(f"{100 * np.mean(vals):+.2f} ({100 * min(vals):+.2f})" if vals else "-")
        print(f"| {n} | {'none' if choice is None else cand(*choice)} | " + " | ".join(cells) + " |")
    print()


def relearn(x, bench, rule, bases=(80, 120), growths=(1.1, 1.25, 1.5, 2.0), seeds=5):
    """Learned on about n photos, scored once the collection has grown to about g x n (the n
    plus new identities): no projection, the old projection (learned on the n, d = fraction x n)
    and a new one (re-learned on all, d = fraction x photos), both with the rule's shrinkage
    whatever its threshold."""
    _, fraction, shrinkage = rule
    print(f"Re-learning: learned at n, the collection grows to about g x n; pooled mAP / hard mAP on the grown "
          f"collection, mean over {seeds} seeds; d = {fraction:g} x (photos learned from), s = {shrinkage:g}\n")
    print("| n -> grown | no projection | old projection (learned at n) | new projection (re-learned) |")
    print("|---|---:|---:|---:|")
    for n in bases:
        for g in growths:
            out = {k: [] for k in ("none", "old", "new")}
            photos = []
            for seed in range(seeds):
                first, grown = draw(bench.identities, (n, int(round(g * n))), np.random.default_rng(7000 * n + seed))
                sub, xs = subset_bench(bench, grown), x[grown]
                photos.append((len(first), len(grown)))
                out["none"].append(_pooled_hard(score(xs, sub), sub.sources))
                for key, train in (("old", x[first]), ("new", xs)):
                    choice = choose(len(train), 0, fraction, shrinkage)
                    out[key].append(_pooled_hard(score(project(projections(train, [choice])[choice], xs), sub), sub.sources))
            a, b = np.mean(photos, axis=0)
            cells = [" / ".join(pct(v) for v in np.nanmean(out[k], axis=0)) for k in ("none", "old", "new")]
            print(f"| {a:.0f} -> {b:.0f} | " + " | ".join(cells) + " |", flush=True)
    print()


def _pooled_hard(result, sources) -> tuple[float, float]:
    s = summary(result, sources)
    hard = [s[g] for g in HARD_GROUPS if g in s]
    return s["pooled"], float(np.mean(hard)) if hard else float("nan")


def levers(vs, bench, pairs, rerank_n: int = 2):
    """Each variant scored without projection and with the projection chosen leave-one-source-out."""
    mnv2, lite2 = vs
    base = concat([member_descriptor(v) for v in vs])
    variants = {
        "default (GeM p=3, scales summed)": (base, None, {}),
        "GeM p=4": (concat([member_descriptor(v, p=4) for v in vs]), None, {}),
        "GeM p=6": (concat([member_descriptor(v, p=6) for v in vs]), None, {}),
        "scale-GeM (max over scales)": (concat([member_descriptor(v, scale_max=True) for v in vs]), None, {}),
        "horizontal-flip averaging": (concat([member_descriptor(v, flip=True) for v in vs]), None, {}),
        "Lite2 alone": (member_descriptor(lite2), None, {}),
        "MobileNetV2 alone": (member_descriptor(mnv2), None, {}),
        "learned with regional GeM vectors too": (base, np.concatenate([base, region_descriptors(vs)]), {}),
        f"alpha-QE (top {rerank_n}, alpha 3)": (base, None, {"qe": rerank_n}),
        f"alpha-DBA (top {rerank_n}, alpha 3)": (base, None, {"dba": rerank_n}),
        f"DBA + QE (top {rerank_n})": (base, None, {"qe": rerank_n, "dba": rerank_n}),
    }
    print("## 3. Other training-free levers, same protocol\n")
    print("Held-out: the projection (d, s) chosen leave-one-source-out among no projection and the grid, as in "
          "part 1; QE / DBA applied after the projection for every candidate.\n")
    print("| variant | no projection: pooled mAP | R@1 | hard mAP | projected, held-out: pooled mAP | R@1 | hard mAP | "
          + " | ".join(HARD_GROUPS) + " | chosen on all |")
    print("|---|" + "---:|" * (6 + len(HARD_GROUPS)) + "---|")
    for name, (x, train, rr) in variants.items():
        ws = projections(x if train is None else train, pairs)
        results = {NONE: rerank_result(x, bench, **rr) if rr else score(x, bench)}
        for (d, s), w in ws.items():
            px = project(w, x)
            results[cand(d, s)] = rerank_result(px, bench, **rr) if rr else score(px, bench)
        sel = leave_one_source_out(results, SOURCE_GROUPS)
        b = pooled(sel, NONE)
        h = sel.held_out
        hard = [sel.held_out["groups"][g]["mAP"] for g in HARD_GROUPS]
        print(f"| {name} | {pct(b['mAP'])} | {pct(b['R@1'])} | {pct(sel.macro(NONE, list(HARD_GROUPS)))} | "
              f"{pct(h['pooled']['mAP'])} | {pct(h['pooled']['R@1'])} | {pct(h['hard']['mAP'])} | "
              + " | ".join(pct(v) for v in hard) + f" | `{sel.chosen}` |", flush=True)
    print()


if __name__ == "__main__":
    sys.exit(main())
