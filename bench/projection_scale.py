"""Learning an index's projection at scale: time and peak memory of each step.

    .venv/bin/python bench/projection_scale.py                      # 1M x 2560-d (10 GB of raw segments on disk)
    .venv/bin/python bench/projection_scale.py --n 100000 --dim 512 # a quick run

The steps are those of ``cfcd.index.projection.relearn``, run here on raw segments
written straight to a directory (an index of 1M images would first have to extract them):
draw the sample of ids (``projection.sample_ids``, at most ``projection.SAMPLE``), read it
from the memory-mapped segments in blocks (``RawSegments.read``), sum the blocks' moments and
take the eigenvectors (``projection.learn``), then project every raw descriptor, block by
block, into a new FAISS Flat layer. Synthetic descriptors are unit vectors around 10k random
centres, as in bench/index_scale.py. Peak memory is the process's VmHWM after each step; it
counts the pages of the memory-mapped segments that were read (page cache the kernel can take
back), the new layer's size is printed beside it.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from cfcd.index import projection as learning
from cfcd.index.raw import RawSegments
from cfcd.index.vectors import FaissVectors


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def write_segments(directory: Path, n: int, dim: int, segment: int, seed: int = 0) -> list[str]:
    """Raw segments of ``n`` clustered unit descriptors, as an index accumulates them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10_000, dim)).astype(np.float32)
    files = []
    for start in range(0, n, segment):
        k = min(segment, n - start)
        x = centres[rng.integers(0, len(centres), k)] + 0.5 * rng.standard_normal((k, dim)).astype(np.float32)
        new = RawSegments(dim)  # the rows one publish adds
        new.add(x / np.linalg.norm(x, axis=1, keepdims=True), np.arange(start, start + k))
        files += new.write(directory)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=2560, help="raw descriptor dimension (default: the default model's)")
    ap.add_argument("--out-dim", type=int, default=64, help="projection dimension")
    ap.add_argument("--segment", type=int, default=100_000, help="rows per raw segment (one per publish)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the segments in this directory and reuse them on the next run with the same --n and --dim")
    ap.add_argument("--search-n", type=int, default=100_000, help="database size of the query timing")
    ap.add_argument("--queries", type=int, default=200, help="queries timed one at a time")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep / f"n{args.n}-d{args.dim}" if args.keep else Path(tmp)
        tic = time.perf_counter()
        files = sorted(p.name for p in where.glob("raw-*.npy") if not p.name.endswith(".ids.npy"))
        if not files:
            where.mkdir(parents=True, exist_ok=True)
            files = write_segments(where, args.n, args.dim, args.segment)
        steps = [("write raw segments (setup; 0 when kept from an earlier run)", time.perf_counter() - tic)]
        raw = RawSegments(args.dim, where, files)
        ids = np.arange(args.n, dtype=np.int64)

        tic = time.perf_counter()
        sample = learning.sample_ids(ids)
        blocks = (raw.read(sample[i:i + learning.BLOCK]) for i in range(0, len(sample), learning.BLOCK))
        projection = learning.learn(blocks, args.out_dim, learning.SHRINKAGE)
        steps.append((f"learn from a sample of {len(sample):,} (read + moments + eigh)", time.perf_counter() - tic))
        peak_learn = peak_rss_gb()

        tic = time.perf_counter()
        vectors = FaissVectors.create(projection.dim, "Flat")
        for i in range(0, args.n, learning.BLOCK):
            vectors.add(projection(raw.read(ids[i:i + learning.BLOCK])), ids[i:i + learning.BLOCK])
        steps.append((f"project all {args.n:,} into a new Flat layer", time.perf_counter() - tic))
        peak_all = peak_rss_gb()

        # One query's search, raw 2560-d Flat against the projection + the projected Flat, on
        # the first --search-n descriptors (a raw Flat of all of them may not fit in memory).
        m = min(args.n, args.search_n)
        queries = raw.read(ids[-args.queries:]) if args.queries else np.zeros((0, args.dim), np.float32)
        raw_flat, small = FaissVectors.create(args.dim, "Flat"), FaissVectors.create(projection.dim, "Flat")
        for i in range(0, m, learning.BLOCK):
            block = raw.read(ids[i:min(m, i + learning.BLOCK)])
            raw_flat.add(block, ids[i:i + len(block)])
            small.add(projection(block), ids[i:i + len(block)])
        timings = {}
        for name, run in (("raw", lambda q: raw_flat.search(q, 10)), ("projected", lambda q: small.search(projection(q), 10))):
            tic = time.perf_counter()
            for q in queries:
                run(q[None])
            timings[name] = (time.perf_counter() - tic) / max(len(queries), 1) * 1000

    print(f"Machine: {platform.processor() or platform.machine()}, {platform.node()}; n = {args.n:,}, "
          f"{args.dim} -> {projection.dim} dimensions, {args.n * args.dim * 4 / 1e9:.1f} GB of raw descriptors\n")
    print("| step | seconds |")
    print("|---|---:|")
    for name, seconds in steps:
        print(f"| {name} | {seconds:.1f} |")
    print(f"\npeak memory (VmHWM): {peak_learn:.2f} GB after learning, {peak_all:.2f} GB after projecting "
          f"(the new layer alone: {args.n * projection.dim * 4 / 1e9:.2f} GB)")
    print(f"\none query, exact top 10 of {m:,} (Flat, one at a time, mean of {args.queries}): "
          f"{timings['raw']:.2f} ms on the raw {args.dim}-d descriptors, "
          f"{timings['projected']:.2f} ms projected to {projection.dim}-d (the projection included)")


if __name__ == "__main__":
    main()
