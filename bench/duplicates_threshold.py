"""The threshold of `cfcd duplicates`, chosen by measurement on a folder-per-identity set.

    .venv/bin/python bench/duplicates_threshold.py --images ../shared/data/instances-dev

`cfcd index build` of the set with the default model and settings (the index learns its
projection, as a user's would), then `cfcd.index.duplicates.near_duplicates` at each threshold.
A pair of images is positive when both show the same identity (same scene or object); a pair is
predicted when both fall in one group. Precision and recall of those pairs are given per source
group (pairs touching the group) and pooled. The threshold of each row "held out" is chosen on
the other groups only (best F1 of their pairs) and scored on the held-out one, so no group
grades a threshold it helped to choose; the last row is the threshold chosen on all groups
(issue 21's default for single linkage; the tiers of issue 30 group by complete linkage and chose
theirs with bench/duplicate_tiers.py). Prints markdown tables; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from itertools import combinations
from pathlib import Path

import numpy as np

from cfcd.cli import main as cfcd
from cfcd.data.instances import load_instances
from cfcd.index import Index
from cfcd.index.duplicates import DEFAULT_NEIGHBOURS, near_duplicates, same_group_pairs
from cfcd.selection import group_of

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "instances-dev"
THRESHOLDS = np.round(np.arange(0.40, 0.951, 0.025), 3)


def counts(predicted: set, positive: set, touches) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) over the pairs ``touches`` accepts."""
    pred = {p for p in predicted if touches(p)}
    pos = {p for p in positive if touches(p)}
    return len(pred & pos), len(pred - pos), len(pos - pred)


def scores(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "pairs": tp + fn, "predicted": tp + fp}


def measure(index_path: Path, images: Path, neighbours: int) -> dict:
    full = load_instances(images)
    index = Index.load(index_path)
    by_path = {str(Path(p).resolve()): n for n, p in enumerate(full.paths)}
    ids = index.ids()
    recs = index.records(ids)
    row = {i: by_path[recs[i].path] for i in ids}
    group = {i: group_of(full.sources[row[i]]) for i in ids}
    positive = {(a, b) for a, b in combinations(sorted(ids), 2) if full.identities[row[a]] == full.identities[row[b]]}
    groups = sorted(set(group.values()))
    # counts[threshold][source group or "pooled" or ("without", group)]
    table = {}
    for t in THRESHOLDS:
        predicted = same_group_pairs(near_duplicates(index, float(t), neighbours))
        cell = {"pooled": counts(predicted, positive, lambda p: True)}
        for g in groups:
            cell[g] = counts(predicted, positive, lambda p, g=g: g in (group[p[0]], group[p[1]]))
            cell["without " + g] = counts(predicted, positive, lambda p, g=g: g not in (group[p[0]], group[p[1]]))
        table[float(t)] = cell
    best = lambda key: max(table, key=lambda t: (scores(*table[t][key])["f1"], t))  # noqa: E731
    held_out = {g: (best("without " + g), scores(*table[best("without " + g)][g])) for g in groups}
    chosen = best("pooled")
    return {"images": len(ids), "neighbours": neighbours, "index": index.info(), "held_out": held_out,
            "chosen": chosen, "at_chosen": {k: scores(*table[chosen][k]) for k in ["pooled", *groups]},
            "sweep": {t: scores(*cell["pooled"]) for t, cell in table.items()}}


def markdown(out: dict) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = ["| source group | pairs | threshold chosen without it | precision | recall | at the default: precision | recall |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for g, (t, s) in out["held_out"].items():
        d = out["at_chosen"][g]
        lines.append(f"| {g} | {s['pairs']} | {t:.3f} | {pct(s['precision'])} | {pct(s['recall'])} | "
                     f"{pct(d['precision'])} | {pct(d['recall'])} |")
    p = out["at_chosen"]["pooled"]
    lines.append(f"| pooled, threshold chosen on all ({out['chosen']:.3f}) | {p['pairs']} | | | | "
                 f"{pct(p['precision'])} | {pct(p['recall'])} |")
    lines += ["", "| threshold | predicted pairs | precision | recall | F1 |", "|---:|---:|---:|---:|---:|"]
    for t, s in out["sweep"].items():
        if round(t * 40) % 2 == 0:  # every 0.05
            lines.append(f"| {t:.2f} | {s['predicted']} | {pct(s['precision'])} | {pct(s['recall'])} | {pct(s['f1'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder-per-identity set with manifest.csv")
    parser.add_argument("--index", type=Path, help="an index of the set already built (default: build one)")
    parser.add_argument("--neighbours", type=int, default=DEFAULT_NEIGHBOURS)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cfcd-dup-") as work:
        index = args.index or Path(work) / "idx"
        if args.index is None and cfcd(["index", "build", str(index), str(args.images / "images")]) != 0:
            raise SystemExit("cfcd index build failed")
        out = measure(index, args.images, args.neighbours)
    print(markdown(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
