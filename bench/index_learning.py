"""What an index's learned projection does for retrieval, through the real commands.

    .venv/bin/python bench/index_learning.py --images ../shared/data/instances-dev
    .venv/bin/python bench/index_learning.py --images ../shared/data/instances-hard --shape distractor-heavy --seed 0

`cfcd extract` of a folder-per-identity set with the default model and settings, then
`cfcd index build` twice from those descriptors: with every default (no projection) and with
`--learn` (the index learns its projection when it is large enough, ``cfcd.index.projection``). Each index then
ranks every image it holds against all the others (`Index.search` of the image's own stored
descriptor, what `cfcd search` does after extraction), scored leave-one-out per source group
as `cfcd eval --images` scores (an index keeps one of byte-identical files, so the set is the
images it holds; distractors, manifest rows with no identity, are in the database only).
``--shape`` builds the indexes of one collection drawn from the set
(``cfcd.evaluate.shapes.SHAPES``), given to the commands as a list of paths. Prints a markdown
table; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from cfcd.cli import main as cfcd
from cfcd.evaluate import shapes
from cfcd.evaluate.benchmarks import folder
from cfcd.index import Index
from cfcd.selection import group_of

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "instances-dev"


def leave_one_out(root: Path, full, hard: frozenset = frozenset()) -> dict:
    """Per source group, for the ``hard`` identities and the others, and pooled {mAP, R@1,
    queries} of the index at ``root``."""
    index = Index.load(root)
    ids = np.asarray(index.ids())
    paths = {i: str(Path(r.path).resolve()) for i, r in index.records(ids).items()}
    kept = set(paths.values())
    held = [n for n, p in enumerate(full.images) if str(Path(p).resolve()) in kept]
    bench = folder.leave_one_out([full.images[n] for n in held], [full.identities[n] for n in held],
                                 [group_of(full.sources[n]) for n in held])
    where = {str(Path(p).resolve()): n for n, p in enumerate(bench.images)}
    position = {i: where[p] for i, p in paths.items()}
    found = index.search(index.descriptors(ids), k=len(ids)).ids
    ranks = np.vectorize(position.get)(found).T  # (database, queries), queries in id order ...
    result = bench.score(ranks[:, np.argsort([position[i] for i in ids])])  # ... in the benchmark's order
    is_hard = np.isin(bench.identities, list(hard))
    groups = {"hard": result.summary(is_hard), "moderate": result.summary(~is_hard)} if hard else {}
    return {**result.per_source(), **groups, "pooled": result.summary(), "index": index.info()}


def hard_identities(images: Path) -> frozenset:
    """Identities of the set that ``cfcd.evaluate.shapes`` counts as hard."""
    pool = shapes.load_pool([images])
    return frozenset(i.split("/", 1)[1] for i in pool.identities[pool.hard])


def collection(images: Path, shape: str, seed: int):
    """The set's benchmark restricted to one collection of ``shape`` (positions in the set)."""
    full = folder.load("set", images)
    pool = shapes.load_pool([images])
    index = shapes.draw(pool, next(s for s in shapes.SHAPES if s.name == shape), pool.set_names[0], seed)
    return folder.leave_one_out([full.images[i] for i in index], [full.identities[i] for i in index],
                                [full.sources[i] for i in index])


def run(images: Path, work: Path, shape: str | None = None, seed: int = 0) -> dict:
    """Extract the set (or one collection of ``shape``), build the index with every default
    and with learning, and score both leave-one-out."""
    bench = folder.load("set", images) if shape is None else collection(images, shape, seed)
    source = images / "images"
    if shape is not None:
        source = work / "photos.txt"
        source.write_text("".join(f"{Path(p).resolve()}\n" for p in bench.images))
    feats = work / "feats"
    if cfcd(["extract", str(source), "-o", str(feats)]) != 0:
        raise SystemExit("cfcd extract failed")
    out = {}
    for name, extra in (("default", []), ("learned", ["--learn"])):
        if cfcd(["index", "build", str(work / name), str(feats), "--force", *extra]) != 0:
            raise SystemExit("cfcd index build failed")
        out[name] = leave_one_out(work / name, bench, hard_identities(images))
    return out


def table(out: dict) -> str:
    p, n = out["learned"]["index"]["projection"], out["learned"]["index"]["images"]
    learned = (f"the index learned a {out['learned']['index']['dim']} -> {p['dim']}-d projection (shrinkage "
               f"{p['shrinkage']:g}) from {p['learned_from']} descriptors" if p else "the index learned no projection")
    lines = [f"{n} images, {out['default']['pooled']['queries']} of them queries; with --learn {learned}\n",
             "| group | default (no projection): mAP | R@1 | --learn: mAP | R@1 | gain mAP |", "|---|---:|---:|---:|---:|---:|"]
    for group in [g for g in out["default"] if g not in ("pooled", "index")] + ["pooled"]:
        r, lr = out["default"][group], out["learned"][group]
        lines.append(f"| {group} | {100 * r['mAP']:.2f} | {100 * r['R@1']:.2f} | {100 * lr['mAP']:.2f} | "
                     f"{100 * lr['R@1']:.2f} | {100 * (lr['mAP'] - r['mAP']):+.2f} |")
    return "\n".join(lines)


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="a folder-per-identity set with a manifest")
    ap.add_argument("--shape", choices=[s.name for s in shapes.SHAPES if not s.across],
                    help="index one collection of this shape drawn from the set (default: the whole set)")
    ap.add_argument("--seed", type=int, default=0, help="which draw of --shape")
    ap.add_argument("--work", type=Path, help="keep the descriptors and indexes here (default: a temporary directory)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = run(args.images, args.work or Path(tmp), args.shape, args.seed)
    print(table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    cli()
