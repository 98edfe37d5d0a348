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
import platform
import sys
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
    args = p.parse_args(argv)

    benchmark = open_benchmark("folder", args.images)
    candidates = [Candidate.parse(f"{m}@{side}:{scales}") for m in [*args.models, *args.concat]
                  for side in args.sides for scales in args.scale_sets]
    candidates += [Candidate.parse(c) for c in args.candidates]
    cache = DescriptorCache(benchmark.images, args.cache)
    selection, seconds = run_selection(benchmark, candidates, cache, metric=args.metric)
    print(f"{benchmark.name}: {len(benchmark.images)} images, {len(set(benchmark.identities))} identities; "
          f"leave-one-source-out over {len(selection.groups)} source groups, choosing by {args.metric}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          "img/s estimated from single-scale extraction times (shared machine: indicative)")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print(format_selection(selection, seconds))
    if args.json:
        Path(args.json).write_text(json.dumps({**selection.to_dict(), "seconds_per_image": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
