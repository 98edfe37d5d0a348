"""What an index's learned projection does for retrieval, through the real commands.

    .venv/bin/python bench/index_learning.py --images ../shared/data/instances-dev

`cfcd extract` of a folder-per-identity set with the default model and settings, then
`cfcd index build` twice from those descriptors: as it is (the index learns its projection
when it is large enough, ``cfcd.index.projection``) and with `--no-learn`. Each index then
ranks every image it holds against all the others (`Index.search` of the image's own stored
descriptor, what `cfcd search` does after extraction), scored leave-one-out per source group
as `cfcd eval --images` scores (an index keeps one of byte-identical files, so the set is the
images it holds). Prints a markdown table; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from cfcd.cli import main as cfcd
from cfcd.evaluate.benchmarks import folder
from cfcd.index import Index
from cfcd.selection import group_of

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "instances-dev"


def leave_one_out(root: Path, full) -> dict:
    """Per source group and pooled {mAP, R@1, queries} of the index at ``root``."""
    index = Index.load(root)
    ids = np.asarray(index.ids())
    paths = {i: r.path for i, r in index.records(ids).items()}
    kept = set(paths.values())
    held = [n for n, p in enumerate(full.images) if str(Path(p).resolve()) in kept]
    bench = folder.leave_one_out([full.images[n] for n in held], [full.identities[n] for n in held],
                                 [group_of(full.sources[n]) for n in held])
    where = {str(Path(p).resolve()): n for n, p in enumerate(bench.images)}
    position = {i: where[p] for i, p in paths.items()}
    found = index.search(index.descriptors(ids), k=len(ids)).ids
    ranks = np.vectorize(position.get)(found).T  # (database, queries), queries in id order ...
    result = bench.score(ranks[:, np.argsort([position[i] for i in ids])])  # ... in the benchmark's order
    return {**result.per_source(), "pooled": result.summary(), "index": index.info()}


def run(images: Path, work: Path) -> dict:
    feats = work / "feats"
    if cfcd(["extract", str(images / "images"), "-o", str(feats)]) != 0:
        raise SystemExit("cfcd extract failed")
    out = {}
    for name, extra in (("learned", []), ("raw", ["--no-learn"])):
        if cfcd(["index", "build", str(work / name), str(feats), "--force", *extra]) != 0:
            raise SystemExit("cfcd index build failed")
        out[name] = leave_one_out(work / name, folder.load("set", images))
    return out


def table(out: dict) -> str:
    p = out["learned"]["index"]["projection"]
    lines = [f"{out['raw']['pooled']['queries']} images; the index learned a {out['learned']['index']['dim']} -> "
             f"{p['dim']}-d projection (shrinkage {p['shrinkage']:g}) from {p['learned_from']} descriptors\n",
             "| group | no projection: mAP | R@1 | learned projection: mAP | R@1 | gain mAP |", "|---|---:|---:|---:|---:|---:|"]
    for group in [g for g in out["raw"] if g not in ("pooled", "index")] + ["pooled"]:
        r, lr = out["raw"][group], out["learned"][group]
        lines.append(f"| {group} | {100 * r['mAP']:.2f} | {100 * r['R@1']:.2f} | {100 * lr['mAP']:.2f} | "
                     f"{100 * lr['R@1']:.2f} | {100 * (lr['mAP'] - r['mAP']):+.2f} |")
    return "\n".join(lines)


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="a folder-per-identity set with a manifest")
    ap.add_argument("--work", type=Path, help="keep the descriptors and indexes here (default: a temporary directory)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = run(args.images, args.work or Path(tmp))
    print(table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    cli()
