"""Near-duplicate grouping at scale: time and peak memory of ``cfcd.index.duplicates.near_duplicates``
on synthetic FAISS indexes (exact Flat engine, the default).

    python bench/duplicates_scale.py                      # 10k and 100k images, 512-d
    python bench/duplicates_scale.py --sizes 1000000      # the 1M case (long on a CPU)

Descriptors are random unit vectors (unrelated images: their cosine similarities stay near 0)
plus planted groups of 2 to 5 near-duplicates (a random base vector and noise: about 0.8 between
members), so the grouping's answer is known and checked (pair precision and recall).

Each size is built and saved first, then grouped in a fresh child process so that its peak
resident memory is the grouping's, not the build's: the table gives the child's resident memory
after loading the index (and one search), its peak resident memory during the grouping (VmHWM
reset through /proc/self/clear_refs just before), the difference, and tracemalloc's peak of the
Python/numpy allocations the grouping made (FAISS's own buffers are not traced; they show in the
resident peak).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, dim: int, planted: float, seed: int = 0) -> tuple[np.ndarray, list[str], set[tuple[int, int]]]:
    """n unit vectors of which a fraction ``planted`` are in near-duplicate groups of 2..5,
    their names, and the planted same-group pairs (by row)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):  # in chunks: no float64 copy of the whole array
        x[start:start + 50_000] = unit(rng.standard_normal((min(50_000, n - start), dim)))
    names = [f"single/{i}.jpg" for i in range(n)]
    pairs, row, group = set(), 0, 0
    while row < int(n * planted):
        size = int(rng.integers(2, 6))
        base = rng.standard_normal(dim)
        members = list(range(row, min(row + size, n)))
        # noise of half the base's norm: cosine ~0.89 to the base, ~0.8 between members
        x[members] = unit(base + 0.5 * rng.standard_normal((len(members), dim)))
        for m in members:
            names[m] = f"group{group}/{m}.jpg"
        pairs |= {(a, b) for i, a in enumerate(members) for b in members[i + 1:]}
        row, group = row + size, group + 1
    return x, names, pairs


def proc_status(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def child(location: str, threshold: float, k: int) -> dict:
    """Run in its own process: load, then group, measuring only the grouping."""
    from cfcd.index import Index
    from cfcd.index.duplicates import near_duplicates, same_group_pairs

    index = Index.load(location)
    # One search first: the search path imports torch lazily (3.5 s, ~600 MB), which is the
    # cost of any search, not of the grouping; traced, that import alone took 20 s.
    index.search(index.descriptors(index.ids()[:1]), 2)
    rss_loaded = proc_status("VmRSS")
    # Reset the peak to what is resident now (Linux >= 4.0), so VmHWM afterwards is the
    # grouping's peak rather than the import's; where refused, ru_maxrss (the process's peak).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        peak = lambda: proc_status("VmHWM")  # noqa: E731
    except OSError:
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # noqa: E731
    tracemalloc.start()
    start = time.perf_counter()
    groups = near_duplicates(index, threshold, k)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": seconds, "groups": len(groups), "pairs": sorted(same_group_pairs(groups)),
            "rss_loaded": rss_loaded, "rss_peak": peak(), "traced_peak": traced_peak}


def run(n: int, dim: int, planted: float, threshold: float, k: int, workdir: Path) -> dict:
    from cfcd.index import Index

    x, names, truth = synthetic(n, dim, planted)
    start = time.perf_counter()
    index = Index.build(x, names, learn=False)  # the raw 512-d descriptors, as the issue asks
    location = index.save(workdir / f"dup{n}.idx")
    build = time.perf_counter() - start
    del index, x
    out = subprocess.run([sys.executable, __file__, "--child", str(location), "--threshold", str(threshold),
                          "--neighbours", str(k)], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    found = {tuple(p) for p in got.pop("pairs")}  # ids are rows: Index.build numbers from 0
    hit = len(found & truth)
    return {"n": n, "build_s": build, **got, "planted_pairs": len(truth),
            "precision": 100 * hit / max(len(found), 1), "recall": 100 * hit / max(len(truth), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000", help="comma-separated image counts")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--planted", type=float, default=0.02, help="fraction of images in planted groups")
    p.add_argument("--threshold", type=float, default=None, help="default: cfcd's DEFAULT_THRESHOLD")
    p.add_argument("--neighbours", type=int, default=None, help="default: cfcd's DEFAULT_NEIGHBOURS")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    from cfcd.index.duplicates import DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    k = DEFAULT_NEIGHBOURS if args.neighbours is None else args.neighbours
    if args.child:
        print(json.dumps(child(args.child, threshold, k)))
        return
    mb = 1 / 2**20
    print(f"threshold {threshold}, {k} neighbours per image, {args.dim}-d, {args.planted:.0%} planted, "
          f"FAISS Flat, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    print("| images | build + save | grouping | groups | pair precision | pair recall | RSS after load | RSS peak | grouping adds | traced peak (numpy) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory(prefix="cfcd-dup-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            r = run(n, args.dim, args.planted, threshold, k, Path(tmp))
            print(f"| {n:,} | {r['build_s']:.1f} s | {r['seconds']:.1f} s | {r['groups']} | {r['precision']:.1f} | "
                  f"{r['recall']:.1f} | {r['rss_loaded'] * mb:.0f} MB | {r['rss_peak'] * mb:.0f} MB | "
                  f"{(r['rss_peak'] - r['rss_loaded']) * mb:.0f} MB | "
                  f"{r['traced_peak'] * mb:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
