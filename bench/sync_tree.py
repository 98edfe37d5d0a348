"""`cfcd index sync` of a large tree where 1 % changed, against a full build of the same tree.

    OMP_NUM_THREADS=1 python bench/sync_tree.py                  # 100k files
    OMP_NUM_THREADS=1 python bench/sync_tree.py --files 10000    # the scale docs/results.md reports

The tree: ``--files`` tiny distinct JPEGs (32x32, about 1 KB) in folders of 1000, indexed with a
tiny random model (MobileNetV2, 16-d, one scale), so extraction is as cheap as it gets and the
comparison is not flattered: with the default model each extracted photo costs far more, and the
sync's share shrinks further. Then 1 % of the files change: a quarter moved to another folder, a
quarter renamed, a fifth deleted, a fifth new, a tenth re-encoded (other bytes, same size class).

Each phase is a real `cfcd` process, timed from start to exit (Python start-up and model loading
included, about 2-3 s of each): the full build, the sync after the changes, and a second sync
with nothing changed (every file only stat()ed). The sync's counts are printed and checked.

``--planted N``: the full build is timed on the first N files only and scaled to the tree
(extraction is linear in the number of files); the index of the whole tree is then N extracted
images plus the others' real records (path, size, mtime, sha256 of the file on disk) with random
descriptors, written through ``Index.edit``, so the syncs run on a 100k tree in minutes. What a
sync does with an unchanged file (stat, compare with its record) does not depend on where its
descriptor came from.

    OMP_NUM_THREADS=1 python bench/sync_tree.py --files 100000 --planted 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def tiny_photo(path: Path, rng: np.random.Generator, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, quality=quality)


def checkpoint(path: Path) -> Path:
    import torch

    from cfcd.model import CFCDNet, ModelConfig, save_checkpoint

    torch.manual_seed(0)
    model = CFCDNet(ModelConfig("mobilenet_v2", dim=16))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # statistics of one batch of noise: descriptors that differ
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 64, 64))
    save_checkpoint(path, model.eval())
    return path


def timed(*args) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cfcd", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"cfcd {' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def change(tree: Path, files: list[Path], fraction: float, rng: np.random.Generator) -> dict[str, int]:
    """Change ``fraction`` of ``files``; returns the counts a sync must report."""
    n = max(10, round(len(files) * fraction))
    kinds = {"moved": n // 4, "renamed": n // 4, "removed": n // 5, "changed": n // 10}
    added = n - sum(kinds.values())
    picked = iter(files[i] for i in rng.choice(len(files), n - added, replace=False))
    (tree / "sorted").mkdir()
    for kind, count in kinds.items():
        for _ in range(count):
            path = next(picked)
            if kind == "moved":
                path.rename(tree / "sorted" / path.name)
            elif kind == "renamed":
                path.rename(path.with_name("renamed-" + path.name))
            elif kind == "removed":
                path.unlink()
            else:
                tiny_photo(path, rng, quality=60)  # re-encoded: other content at the same path
    for i in range(added):
        tiny_photo(tree / "new" / f"n{i:06d}.jpg", rng)
    return {"added": added, "removed": kinds["removed"], "moved": kinds["moved"] + kinds["renamed"],
            "changed": kinds["changed"], "unchanged": len(files) - (n - added), "unreadable": 0}


def plant(tree: Path, index: Path, model: Path, files: list[Path], built: int) -> float:
    """Build the first ``built`` files for real (timed, then scaled to all ``files``), and add the
    other files' records with random unit descriptors in one write."""
    from cfcd.index import Index
    from cfcd.index.records import describe_file

    sample = tree.parent / "sample"
    for path in files[:built]:
        target = sample / path.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    seconds, _ = timed("index", "build", index, sample, "--model", model, "--scales", "1")
    with Index.edit(index) as edit:
        edit.remove(paths=[str(sample / path.relative_to(tree)) for path in files[:built]])
    records = [describe_file(path) for path in files]
    rng = np.random.default_rng(1)
    with Index.edit(index) as edit:
        x = rng.standard_normal((len(records), edit.dim)).astype(np.float32)
        edit.add(x / np.linalg.norm(x, axis=1, keepdims=True), records)
    return seconds * len(files) / built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of the files changed (default 0.01)")
    parser.add_argument("--workdir", type=Path, help="where the tree and index go (default: a temporary folder)")
    parser.add_argument("--planted", type=int, metavar="N",
                        help="build N files for real, plant the others' records (see above)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sync-bench-"))
    tree, index, rng = work / "tree", work / "idx", np.random.default_rng(0)
    model = checkpoint(work / "tiny.pt")
    files = [tree / f"d{i // 1000:04d}" / f"p{i:07d}.jpg" for i in range(args.files)]
    for path in files:
        tiny_photo(path, rng)
    if args.planted:
        build_s = plant(tree, index, model, files, args.planted)
    else:
        build_s, _ = timed("index", "build", index, tree, "--model", model, "--scales", "1")
    want = change(tree, files, args.changed, rng)
    sync_s, out = timed("index", "sync", index, tree, "--json")
    body = json.loads(out)
    if body["counts"] != want:
        sys.exit(f"sync counted {body['counts']}, expected {want}")
    again_s, out = timed("index", "sync", index, tree, "--json")
    now = args.files + want["added"] - want["removed"]
    if json.loads(out)["counts"] != {**dict.fromkeys(want, 0), "unchanged": now}:
        sys.exit(f"the second sync changed something: {json.loads(out)['counts']}")
    rows = [("full build" + (f" (scaled from {args.planted})" if args.planted else ""), args.files, args.files, build_s),
            (f"sync, {args.changed:.0%} changed", args.files, len(body["extracted"]), sync_s),
            ("sync, nothing changed", now, 0, again_s)]
    print(f"{args.files} files, tiny model (MobileNetV2 16-d, 32x32 JPEGs), OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; sync counts: {body['counts']}")
    print(f"| {'phase':24s} | {'files':>7s} | {'extracted':>9s} | {'seconds':>8s} | {'of the build':>12s} |")
    print(f"|{'-' * 26}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 14}|")
    for name, n, extracted, seconds in rows:
        print(f"| {name:24s} | {n:7d} | {extracted:9d} | {seconds:8.1f} | {seconds / build_s:11.1%} |")


if __name__ == "__main__":
    main()
