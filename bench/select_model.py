"""Model selection by leave-one-source-out on a folder-per-identity set with sources.

Scores every candidate (models x long side x scale set) leave-one-out on the set, then, for each
held-out source group, picks the candidate best on the other groups and reports its score on the
held-out one (``cfcd.selection``). Single-scale descriptors are cached on disk (``--cache``,
default ~/.cache/cfcd/descriptors) so scale sets are sums of cached vectors and reruns are free;
images/s is estimated from the single-scale extraction times (one process, this machine).

    .venv/bin/python bench/select_model.py --images ../shared/data/instances-dev
    .venv/bin/python bench/select_model.py --models mobilenet_v2-imagenet efficientnet_lite2-imagenet \
        --sides 512 768 --scale-sets 1 0.7071,1,1.4142 --concat mobilenet_v2-imagenet+efficientnet_lite2-imagenet
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from cfcd.evaluate import open_benchmark
from cfcd.selection import Candidate, DescriptorCache, format_selection, run_selection

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "instances-dev"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default=str(DEFAULT_IMAGES), help="set root or images/ folder (with manifest.csv sources)")
    p.add_argument("--models", nargs="+", default=["mobilenet_v2-imagenet"], help="model names or weights files")
    p.add_argument("--concat", nargs="*", default=[], help="extra models written A+B (descriptors concatenated)")
    p.add_argument("--sides", nargs="+", default=["512"], help="long sides in px, or 'orig'")
    p.add_argument("--scale-sets", nargs="+", default=["1", "0.7071,1,1.4142"], help="comma-separated scale sets")
    p.add_argument("--candidates", nargs="*", default=[], help="more candidates written MODEL[+MODEL]@SIDE:S1,S2")
    p.add_argument("--metric", default="mAP", choices=["mAP", "R@1"])
    p.add_argument("--cache", default=None, help="descriptor cache folder (default ~/.cache/cfcd/descriptors)")
    p.add_argument("--json", help="also write the selection as JSON")
    p.add_argument("--speed-images", type=int, default=0,
                   help="measure images/s of each candidate end to end on this many images (best of 2) instead of "
                   "estimating it from the cached single-scale times")
    p.add_argument("--min-speed", type=float, default=0.0,
                   help="choose only among candidates measured at >= this many images/s (needs --speed-images)")
    args = p.parse_args(argv)
    if args.min_speed and not args.speed_images:
        p.error("--min-speed needs measured speeds: give --speed-images N")

    benchmark = open_benchmark("folder", args.images)
    candidates = [Candidate.parse(f"{m}@{side}:{scales}") for m in [*args.models, *args.concat]
                  for side in args.sides for scales in args.scale_sets]
    candidates += [Candidate.parse(c) for c in args.candidates]
    cache = DescriptorCache(benchmark.images, args.cache)
    measured, eligible = None, None
    if args.speed_images:  # before any descriptor is extracted: nothing else runs meanwhile
        spread = benchmark.images[:: max(1, len(benchmark.images) // args.speed_images)][: args.speed_images]  # all sources
        measured = {c.name: measure_seconds(c, spread) for c in candidates}
    if args.min_speed:
        eligible = [name for name, s in measured.items() if 1 / s >= args.min_speed]
    selection, seconds = run_selection(benchmark, candidates, cache, metric=args.metric, eligible=eligible)
    how = "estimated from single-scale extraction times"
    if measured:
        seconds = measured
        how = f"measured end to end on {args.speed_images} images, best of 2"
        if args.min_speed:
            how += f"; only candidates at >= {args.min_speed:g} img/s can be chosen"
    print(f"{benchmark.name}: {len(benchmark.images)} images, {len(set(benchmark.identities))} identities; "
          f"leave-one-source-out over {len(selection.groups)} source groups, choosing by {args.metric}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}; img/s {how} (shared machine: indicative)")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print(format_selection(selection, seconds))
    if args.json:
        Path(args.json).write_text(json.dumps({**selection.to_dict(), "seconds_per_image": seconds}, indent=1))
    return 0


def measure_seconds(candidate: Candidate, images) -> float:
    """Seconds per image of ``cfcd.extract`` with the candidate's models and settings (best of 2)."""
    from cfcd import Runtime, extract, load_model

    models = [load_model(m) for m in candidate.models]
    settings = candidate.settings
    quiet = Runtime(progress=False)
    for m in models:  # warm-up: BatchNorm folding, first-call allocations
        extract(m, images[:1], settings, quiet)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for m in models:
            extract(m, images, settings, quiet)
        best = min(best, (time.perf_counter() - start) / len(images))
    return best


if __name__ == "__main__":
    sys.exit(main())
