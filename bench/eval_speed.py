"""Speed of extraction and of evaluation at Revisited Oxford + 1M scale.

    python bench/eval_speed.py rank       # synthetic ROxf+1M: chunked top-k ranking + compute_map
    python bench/eval_speed.py extract    # images/s per scale list and batch size, default model
    python bench/eval_speed.py rank --n 100000   # a quick run with fewer distractors

``rank`` reports the peak resident memory (``resource.getrusage``) after the imports (``import
cfcd`` loads torch), after making the descriptors, and after each ranking. ``extract`` runs on the first ``--images`` photos of
../shared/data/instances-dev (or ``--photos DIR``) with the ImageNet MobileNetV2 model.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

from cfcd.evaluate import DEFAULT_CHUNK, evaluate_revisitop, rank
from cfcd.settings import CFCD_SCALES

ROXF_DB, ROXF_QUERIES, DIM = 4993, 70, 512
R1M = 1_001_001
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "instances-dev" / "images"
# Named by their length: 3 is the instances-dev reference, 5 the CFCD default.
SCALE_LISTS = {"1": (1.0,), "3": (0.7071, 1.0, 1.4142), "5": CFCD_SCALES}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def random_gnd(rng: np.random.Generator, n_queries: int, n_db: int) -> list[dict]:
    """Ground truth shaped like ROxf's: per query, tens of easy, hard and junk images."""
    gnd = []
    for _ in range(n_queries):
        picked = rng.choice(n_db, size=rng.integers(30, 150), replace=False)
        easy, hard, junk = np.array_split(picked, 3)
        gnd.append({"easy": easy, "hard": hard, "junk": junk})
    return gnd


def unit_rows(rng: np.random.Generator, n: int, block: int = 100_000) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, block):
        x = rng.standard_normal((min(block, n - start), DIM), dtype=np.float32)
        out[start:start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_rank(args) -> None:
    print(f"peak RSS after imports: {peak_rss_gib():.2f} GiB")
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    db = unit_rows(rng, ROXF_DB + args.n)
    queries = unit_rows(rng, ROXF_QUERIES)
    gnd = random_gnd(rng, ROXF_QUERIES, ROXF_DB)
    made, base = time.perf_counter() - t, peak_rss_gib()
    print(f"synthetic descriptors: {ROXF_DB} db + {args.n} distractors x {DIM} float32 ({db.nbytes / 2**30:.2f} GiB), "
          f"{ROXF_QUERIES} queries; made in {made:.1f} s; peak RSS so far {base:.2f} GiB")
    print(f"{'topk':>8s}{'chunk':>8s}{'rank s':>9s}{'map s':>8s}{'total s':>9s}{'peak RSS GiB':>14s}{'medium mAP':>12s}")
    for topk in args.topk:
        t0 = time.perf_counter()
        ranks = rank(queries, db, topk=topk, chunk=args.chunk)
        t1 = time.perf_counter()
        result = evaluate_revisitop(ranks, gnd)
        t2 = time.perf_counter()
        print(f"{topk:8d}{args.chunk:8d}{t1 - t0:9.2f}{t2 - t1:8.2f}{t2 - t0:9.2f}{peak_rss_gib():14.2f}"
              f"{100 * result.protocols['medium'].map:12.2f}")


def bench_extract(args) -> None:
    from cfcd.data.instances import load_instances
    from cfcd.extraction import extract
    from cfcd.model import load_model
    from cfcd.settings import ExtractionSettings, Runtime

    paths = load_instances(args.photos).paths[: args.images]
    model = load_model(args.model)
    extract(model, paths[:1], ExtractionSettings((1.0,), max_side=args.max_side), Runtime(progress=False))  # warm-up
    side = f"long side {args.max_side}" if args.max_side else "original size (<= 1024 px)"
    print(f"extraction: {len(paths)} photos of {args.photos}, {side}, "
          f"torch threads {__import__('torch').get_num_threads()}")
    print(f"{'scales':>36s}{'batch':>7s}{'workers':>9s}{'seconds':>9s}{'images/s':>10s}")
    for name in args.scale_lists:
        for workers in args.workers:
            for batch_size in args.batch_sizes:
                t = time.perf_counter()
                extract(model, paths, ExtractionSettings(SCALE_LISTS[name], max_side=args.max_side),
                        Runtime(batch_size=batch_size, num_workers=workers, progress=False))
                elapsed = time.perf_counter() - t
                scales = ",".join(map(str, SCALE_LISTS[name]))
                print(f"{scales:>36s}{batch_size:7d}{workers:9d}{elapsed:9.1f}{len(paths) / elapsed:10.2f}")


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    r = sub.add_parser("rank", help="ROxf+1M-sized ranking and compute_map on synthetic descriptors")
    r.add_argument("--n", type=int, default=R1M, help=f"number of distractors (default {R1M})")
    r.add_argument("--topk", type=ints, default=[1000, 10000], help="comma-separated ranking depths")
    r.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="database rows scored at once")
    r.set_defaults(func=bench_rank)
    e = sub.add_parser("extract", help="images/s on real photos with one model")
    e.add_argument("--model", default="default", help="model name or file (default: the default model)")
    e.add_argument("--photos", type=Path, default=PHOTOS, help="a folder-per-identity set")
    e.add_argument("--images", type=int, default=16, help="how many photos (default 16)")
    e.add_argument("--max-side", type=int, default=512, help="long-side cap, 0 for none (default 512)")
    e.add_argument("--batch-sizes", type=ints, default=[1, 16])
    e.add_argument("--scale-lists", type=lambda s: s.split(","), default=list(SCALE_LISTS),
                   help="comma-separated scale-list lengths among 1, 3 (reference), 5 (CFCD); default all")
    e.add_argument("--workers", type=ints, default=[0, 1], help="comma-separated decoding worker counts")
    e.set_defaults(func=bench_extract)
    args = p.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
