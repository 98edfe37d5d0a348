"""Does training help? Identity folds of labelled photo sets, per source group and pooled.

``--data`` names the sets (default ../shared/data/instances-dev; issue 29 runs it on
instances-dev and instances-hard together). Identities are named by their set, each photo's
group is its set's kind of photo (``cfcd.evaluate.shapes``: instances-dev's source groups,
instances-hard's kinds of change), and distractors (manifest rows with no identity) are never
trained on nor queried: they are in every fold's database.

The identities are split into ``--folds`` folds (``cfcd.train.holdout.identity_folds``: each
source's identities shuffled with the seed and dealt round-robin). For each fold, the recipe
trains on the OTHER folds' identities (``cfcd train``, which itself holds back 20% of them for
its best-model guard) and every model is scored leave-one-out on this fold's identities (every
photo a query, database = the fold's other photos, revisitop AP), which no training step and no
head ever saw. Per-query APs of all folds are then pooled, and averaged per source.

``--split sources`` is the leave-one-source-out variant (``cfcd.train.holdout.source_folds``):
one fold per source, trained on every other source's identities; that source's photos are the
queries and the database is every photo of the set, so the training photos are distractors
(a source of one identity would otherwise score 100 for every model). ``--source-groups K``
deals the sources into K groups and holds out one group per fold (K trainings, not one per
source; every source is still tested by a model that never saw it). Rows:

- the starting model: ImageNet MobileNetV2 GeM, 1280-d, no training;
- the starting model with a 512-d whitening head learned from the training photos, labels
  ignored (``cfcd.model.whitening``, ``cfcd whiten``'s defaults), no training;
- the starting model with a 512-d supervised (learned) whitening head from the training photos
  and their labels (``cfcd.model.whitening.learn_supervised_whitening``), no SGD; its shrinkage
  and power are chosen by ``cfcd.train.supervised.choose_supervised_whitening`` on the training side of
  the fold alone (inner identity folds), never on the test side (``--grid`` also prints every
  setting's test-side score, for information only);
- after stage 1 and after stage 2 (``stage{1,2}/model.pt``);
- ``best.pt``: the model the guard kept (start, or the best epoch on the held-back identities).

Reference settings (scales 0.7071 / 1 / 1.4142, long side 512). Training lists refer to the
photos in place; nothing is copied. Rerunning with the same ``--out`` resumes finished folds.

    .venv/bin/python bench/train_cpu.py [--config finetune-small] [--out runs/bench-train-cpu] [--split sources [--source-groups K]]
        [--untrained] [--grid] [--inner-folds 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cfcd import evaluate, load_model
from cfcd.evaluate.benchmarks.folder import InstanceResult, leave_one_out
from cfcd.evaluate.descriptors import Descriptors
from cfcd.model.whitening import (Whitening, descriptors_from_vectors, learn_supervised_whitening, learn_whitening,
                                  supervised_whitenings)
from cfcd.settings import REFERENCE_SETTINGS, Runtime
from cfcd.train.config import load_config
from cfcd.train.engine import run
from cfcd.train.guard import report
from cfcd.train.holdout import identity_folds, source_folds
from cfcd.train.supervised import SUPERVISED_POWERS, SUPERVISED_SHRINKAGES, choose_supervised_whitening
from cfcd.whiten import gem_vectors, labelled_vectors

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "instances-dev"
DISTRACTOR = ""
START = "mobilenet_v2-imagenet"
# as cfcd whiten and stage1.head_init=whiten learn their head (cfcd.whiten.learn_head's defaults)
REGIONS, WHITEN_POWER, WHITEN_SHRINKAGE = (2, 3), 0.5, 1.0
ROWS = ("start", "whiten", "supervised", "stage1", "stage2", "best")
TITLES = {"start": "ImageNet MobileNetV2 GeM 1280-d (no training)",
          "whiten": "+ whitening head from the training photos (no training)",
          "supervised": "supervised whitening (labels, no SGD; setting chosen on the training side)",
          "stage1": "after stage 1", "stage2": "after stage 2", "best": "best.pt (the guard's pick)"}


def read_manifest(data: Path) -> list[dict]:
    with open(data / "manifest.csv", newline="") as f:
        return [{**r, "path": str(data / r["path"])} for r in csv.DictReader(f)]


def read_sets(roots: list[Path]) -> list[dict]:
    """Rows of every set, in manifest order: identity named ``set/identity`` when there are
    several sets, ``source`` the set's kind of photo (``set: group``), ``hard`` its flag."""
    from cfcd.evaluate import shapes

    pool = shapes.load_pool(roots)
    rows = [r for root in roots for r in read_manifest(root)]
    several = len(roots) > 1
    for r, identity, group, hard, set_name in zip(rows, pool.identities, pool.groups, pool.hard, pool.sets):
        r["identity"] = str(identity) if several or identity == DISTRACTOR else r["identity"]
        r["source"] = f"{set_name}: {group}" if several else r["source"]
        r["hard"] = bool(hard)
    return rows


def start_vectors(rows: list[dict], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Raw GeM vectors (global (n, S, C), regional (n, S, R, C)) of the starting model, cached."""
    if cache.is_file():
        saved = np.load(cache)
        if list(saved["paths"]) == [r["path"] for r in rows]:
            return saved["glob"], saved["reg"]
    glob, reg = gem_vectors(load_model(START), [r["path"] for r in rows], REFERENCE_SETTINGS, REGIONS, progress=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, glob=glob, reg=reg, paths=np.array([r["path"] for r in rows]))
    return glob, reg


def score(model_or_desc, rows: list[dict], queries: np.ndarray) -> InstanceResult:
    """Leave-one-out over ``rows`` (the database), kept for the ``queries`` (a mask of rows)."""
    benchmark = leave_one_out([r["path"] for r in rows], [r["identity"] for r in rows], [r["source"] for r in rows])
    if isinstance(model_or_desc, np.ndarray):
        result = evaluate.run(Descriptors(model_or_desc), benchmark).result
    else:
        runtime = Runtime(batch_size=8, progress=False)
        result = evaluate.run(model_or_desc, benchmark, settings=REFERENCE_SETTINGS, runtime=runtime).result
    return InstanceResult(result.aps[queries], result.recall1[queries], [s for s, q in zip(result.sources, queries) if q])


def same_as(best: Path, cfg, fold: dict[str, InstanceResult]) -> InstanceResult | None:
    """The result already scored for the model best.pt holds, when it is one of them: the
    starting model, or a stage's last epoch (its model.pt)."""
    candidate = torch.load(best, weights_only=True)["guard"]["candidate"]
    last = {f"stage{n} epoch {getattr(cfg, f'stage{n}').epochs}": f"stage{n}" for n in (1, 2)}
    return fold.get({"init": "start"}.get(candidate, last.get(candidate, "")))


def supervised_head(glob: np.ndarray, reg: np.ndarray, identities: list[str], sources: list[str],
                    train: list[int], dim: int = 512, **grid) -> tuple[Whitening, dict, dict]:
    """(head, chosen setting, inner scores): the ``dim``-d supervised whitening of the ``train``
    photos, its setting chosen on them alone; no other row of ``glob`` / ``reg`` is read."""
    ids, srcs = [identities[n] for n in train], [sources[n] for n in train]
    chosen, inner = choose_supervised_whitening(glob[train], ids, srcs, reg[train], dim, **grid)
    x, y, extra = labelled_vectors(glob[train], ids, reg[train])
    head = learn_supervised_whitening(x, y, dim, chosen["shrinkage"], chosen["power"], unlabelled=extra)
    return head, chosen, inner


def pooled(results: list[InstanceResult]) -> InstanceResult:
    return InstanceResult(np.concatenate([r.aps for r in results]), np.concatenate([r.recall1 for r in results]),
                          [s for r in results for s in r.sources])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", type=lambda p: Path(p).resolve(), default=[DATA],
                        help="labelled sets (default instances-dev)")
    parser.add_argument("--config", default="finetune-small", help="the recipe to train (default finetune-small)")
    parser.add_argument("--out", default="runs/bench-train-cpu")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--split", choices=("identities", "sources"), default="identities",
                        help="identity folds (default) or leave-one-source-out")
    parser.add_argument("--source-groups", type=int, default=None,
                        help="with --split sources: deal the sources into this many groups and hold out one group "
                             "per fold (one training per group instead of one per source)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the identity folds and source groups")
    parser.add_argument("--only-fold", type=int, default=None, help="run this fold only (1-based; for quick searches)")
    parser.add_argument("--untrained", action="store_true", help="only the rows without training (seconds, from the cache)")
    parser.add_argument("--inner-folds", type=int, default=2,
                        help="identity folds inside a fold's training side that choose the supervised whitening's setting")
    parser.add_argument("--grid", action="store_true",
                        help="also score every supervised-whitening setting on the test side (information only; "
                             "the row's setting is always chosen on the training side)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.source_groups is not None and args.split != "sources":
        parser.error("--source-groups deals sources into groups: use it with --split sources")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = Path(args.out)
    rows = read_sets(args.data)
    glob, reg = start_vectors(rows, Path("runs") / "bench-train-cpu-gem.npz")
    identities, sources = [r["identity"] for r in rows], [r["source"] for r in rows]
    people = [n for n, i in enumerate(identities) if i != DISTRACTOR]
    distractors = [n for n, i in enumerate(identities) if i == DISTRACTOR]
    ids_of, sources_of = [identities[n] for n in people], [sources[n] for n in people]
    if args.split == "sources":
        named = source_folds(ids_of, sources_of, args.source_groups, args.seed)
        if args.source_groups:
            for f, (label, _, _) in enumerate(named, 1):
                print(f"source group {f}: {label}")
            named = [(f"source group {f}", *rest) for f, (_, *rest) in enumerate(named, 1)]
    else:
        named = [(f"fold {f}", *pair) for f, pair in enumerate(identity_folds(ids_of, args.folds, args.seed, sources_of), 1)]
    results: dict[str, list[InstanceResult]] = {k: [] for k in ROWS}
    per_fold: list[tuple[str, dict[str, float]]] = []
    chosen_per_fold: list[tuple[str, dict]] = []
    grid_results: dict[tuple[float, float], list[InstanceResult]] = {}
    minutes = 0.0
    for f, (label, train_ids, test_ids) in enumerate(named, start=1):
        if args.only_fold is not None and f != args.only_fold:
            continue
        train = [n for n, r in enumerate(rows) if r["identity"] in set(train_ids)]
        test = [n for n, r in enumerate(rows) if r["identity"] in set(test_ids)]
        # the database: the fold's own photos and the distractors, or every photo (leave-one-source-out)
        base = list(range(len(rows))) if args.split == "sources" else test + distractors
        test_rows = [rows[n] for n in base]
        queries = np.isin(base, test)
        folder = out / f"fold{f}"
        folder.mkdir(parents=True, exist_ok=True)
        listing = folder / "train_list.txt"
        listing.write_text("".join(f"{rows[n]['path']} {rows[n]['identity']}\n" for n in train))
        print(f"{label}: train {len(train)} photos of {len(train_ids)} identities; "
              f"test {len(test)} photos of {len(test_ids)} other identities (database {len(base)} photos)", flush=True)
        fold: dict[str, InstanceResult] = {"start": score(descriptors_from_vectors(glob[base]), test_rows, queries)}
        c = glob.shape[-1]
        head = learn_whitening(np.concatenate([glob[train].reshape(-1, c), reg[train].reshape(-1, c)]), 512,
                               power=WHITEN_POWER, shrinkage=WHITEN_SHRINKAGE)
        fold["whiten"] = score(descriptors_from_vectors(glob[base], head), test_rows, queries)
        head, chosen, inner = supervised_head(glob, reg, identities, sources, train, folds=args.inner_folds)
        fold["supervised"] = score(descriptors_from_vectors(glob[base], head), test_rows, queries)
        best_inner = inner[(chosen["shrinkage"], chosen["power"])]
        print(f"  supervised whitening: shrinkage {chosen['shrinkage']}, power {chosen['power']} "
              f"(inner mAP on the training identities {best_inner:.2f}; "
              + ", ".join(f"{s}/{p}: {v:.2f}" for (s, p), v in inner.items()) + ")", flush=True)
        chosen_per_fold.append((label, chosen))
        if args.grid:
            x, y, extra = labelled_vectors(glob[train], [identities[n] for n in train], reg[train])
            for setting, h in supervised_whitenings(x, y, 512, SUPERVISED_SHRINKAGES, SUPERVISED_POWERS,
                                                    unlabelled=extra).items():
                grid_results.setdefault(setting, []).append(
                    score(descriptors_from_vectors(glob[base], h), test_rows, queries))
        if not args.untrained:
            cfg = load_config(args.config, [f"data.train={listing}", "data.root=/", f"run.out_dir={folder / 'run'}",
                                            *args.overrides])
            tic = time.perf_counter()
            paths = run(cfg, "both", resume=True)
            minutes += (time.perf_counter() - tic) / 60
            print(report(cfg.out_dir)[0], flush=True)
            for key in ("stage1", "stage2"):
                if key in paths:  # a recipe may leave stage 2 out (0 epochs)
                    fold[key] = score(load_model(paths[key]), test_rows, queries)
            if "best" in paths:
                fold["best"] = same_as(paths["best"], cfg, fold) or score(load_model(paths["best"]), test_rows, queries)
        for key, result in fold.items():
            results[key].append(result)
        per_fold.append((label, {k: 100 * v.summary()["mAP"] for k, v in fold.items()}))

    keys = [k for k in ROWS if results[k] and len(results[k]) == len(per_fold)]
    table = {k: pooled(results[k]) for k in keys}
    split = f"{args.folds} identity folds"
    if args.split == "sources":
        held_out = f"{args.source_groups} groups of sources held out in turn" if args.source_groups else "leave-one-source-out"
        split = f"{held_out} (database: all photos)"
    print(f"\n{', '.join(d.name for d in args.data)}, {split}, leave-one-out on the held-out fold, "
          f"scales {list(REFERENCE_SETTINGS.scales)} at {REFERENCE_SETTINGS.max_side} px; mAP %")
    for k in keys:
        print(f"  {k}: {TITLES[k]}")
    print("\n| | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
    print("| **pooled** | " + " | ".join(f"**{100 * table[k].summary()['mAP']:.2f}**" for k in keys) + " |")
    if args.split != "sources":  # a source's fold is that source: its row follows, per source
        for label, values in per_fold:
            print(f"| {label} | " + " | ".join(f"{values[k]:.2f}" for k in keys) + " |")
    for source, first in (table[keys[0]].per_source() if keys else {}).items():
        cells = [table[k].per_source()[source] for k in keys]
        print(f"| {source} ({first['queries']} q) | " + " | ".join(f"{100 * c['mAP']:.2f}" for c in cells) + " |")
    print("\nsupervised whitening, setting chosen per fold on its training side: "
          + "; ".join(f"{label} {c['shrinkage']}/{c['power']}" for label, c in chosen_per_fold))
    if grid_results and all(len(v) == len(per_fold) for v in grid_results.values()):
        print("\nTEST-SIDE scores of every supervised-whitening setting (information only, not used to choose), mAP %:")
        print("\n| shrinkage / power | pooled | " + " | ".join(table[keys[0]].per_source()) + " |\n|---|---:|"
              + "---:|" * len(table[keys[0]].per_source()))
        for (s, p), res in grid_results.items():
            t = pooled(res)
            print(f"| {s} / {p} | {100 * t.summary()['mAP']:.2f} | "
                  + " | ".join(f"{100 * c['mAP']:.2f}" for c in t.per_source().values()) + " |")
    print(f"\ntraining time: {minutes:.1f} min on {torch.get_num_threads()} CPU thread(s) (guard evaluations included)")
    print("command: .venv/bin/python bench/train_cpu.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
