"""Does a projection head learned WITHOUT labels help on sources it never saw?

Candidates (all on the same backbone, same extraction settings): no head (the L2-normalised
GeM), and PCA / PCA-whitening to ``--dim`` dimensions (``cfcd.model.whitening``, ``cfcd.whiten``) learned from
unlabelled photos: the other source groups of the set (their labels ignored), the scikit-image
sample photos of the demo, or both; from global GeM vectors, optionally with GeM over regions
of the feature maps. Each candidate's score on a held-out source group comes from the head
learned WITHOUT that group's images; the per-query results then go through the model-selection
protocol (``cfcd.selection.leave_one_source_out``): the head chosen on the other groups is
scored on the held-out one. Raw GeM vectors are computed once and cached (``--cache``).

    .venv/bin/python bench/unsupervised_head.py --images ../shared/data/instances-dev
    .venv/bin/python bench/unsupervised_head.py --model path/to/checkpoint.pt --cache /tmp/unl
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import operator
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cfcd.data.instances import load_instances
from cfcd.evaluate import Descriptors, run
from cfcd.evaluate.benchmarks.folder import InstanceResult, leave_one_out
from cfcd.model import load_model
from cfcd.model.whitening import Moments, descriptors_from_vectors, principal_axes, whitening_from_axes
from cfcd.settings import ExtractionSettings, parse_scales
from cfcd.whiten import gem_vectors

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "instances-dev"
REGION_LEVELS = (2, 3)


def skimage_photos() -> list[Path]:
    """The demo's default photos (scikit-image's bundled samples), one file per subject."""
    from cfcd.demo import DEFAULT_PHOTOS, skimage_data_dir

    root = skimage_data_dir()
    return [root / f for files, _ in DEFAULT_PHOTOS.values() for f in files]


def cached_vectors(model_name: str, paths: list[Path], settings: ExtractionSettings, cache: Path, tag: str):
    names = [str(Path(p).resolve()) for p in paths]
    key = hashlib.sha256("\n".join([model_name, str(settings.scales), str(settings.max_side), *names]).encode()).hexdigest()[:12]
    file = cache / f"{tag}-{key}.npz"
    if file.is_file():
        z = np.load(file)
        return z["glob"], z["reg"], float(z["seconds"])
    model = load_model(model_name)
    tic = time.perf_counter()
    glob, reg = gem_vectors(model, paths, settings, regions=REGION_LEVELS, progress=True)
    seconds = (time.perf_counter() - tic) / max(len(paths), 1)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(file, glob=glob, reg=reg, seconds=seconds)
    return glob, reg, seconds


def group_moments(glob, reg, rows, with_regions: bool) -> Moments:
    """Moments of every scale's global GeM vector of ``rows`` (and of their regions)."""
    c = glob.shape[-1]
    m = Moments.of(glob[rows].reshape(-1, c))
    return m + Moments.of(reg[rows].reshape(-1, c)) if with_regions else m


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default=str(DEFAULT_IMAGES), help="set root or images/ folder (with manifest.csv sources)")
    p.add_argument("--model", default="default", help="head-less model: name or weights file")
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--scales", default="0.7071,1,1.4142")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--powers", default="0,0.25,0.5", help="0: PCA, 0.5: full whitening")
    p.add_argument("--shrinkages", default="0.1,1")
    p.add_argument("--cache", default="/tmp/cfcd-unsupervised-head")
    p.add_argument("--json", help="also write the selection as JSON")
    args = p.parse_args(argv)
    from cfcd.selection import SOURCE_GROUPS, format_selection, group_of, leave_one_source_out

    data = load_instances(args.images)
    settings = ExtractionSettings(parse_scales(args.scales), args.max_side)
    cache = Path(args.cache)
    glob, reg, seconds = cached_vectors(args.model, data.paths, settings, cache, "set")
    sk_glob, sk_reg, _ = cached_vectors(args.model, skimage_photos(), settings, cache, "skimage")

    benchmark = leave_one_out(data.paths, data.identities, data.sources)

    def evaluate_leave_one_out(descriptors, *_):
        return run(Descriptors(descriptors), benchmark).result

    groups = np.array([group_of(s, SOURCE_GROUPS) for s in data.sources])
    names = list(dict.fromkeys(groups))
    results: dict[str, InstanceResult] = {
        "no head (GeM)": evaluate_leave_one_out(descriptors_from_vectors(glob), data.identities, data.sources)}

    powers = [float(v) for v in args.powers.split(",")]
    shrinkages = [float(v) for v in args.shrinkages.split(",")]
    variants = [(p, e) for p in powers for e in (shrinkages if p > 0 else [0.0])]
    pools = {"other groups": (True, False), "skimage photos": (False, True), "other groups + skimage": (True, True)}
    def score(moments: Moments) -> dict:
        rows, variance = principal_axes(moments, args.dim)
        return {v: evaluate_leave_one_out(descriptors_from_vectors(glob, whitening_from_axes(moments.mean, rows, variance, *v)),
                                          data.identities, data.sources) for v in variants}

    for with_regions in (False, True):
        per_group = {g: group_moments(glob, reg, np.flatnonzero(groups == g), with_regions) for g in names}
        skimage = group_moments(sk_glob, sk_reg, np.arange(len(sk_glob)), with_regions)
        for pool_name, (use_set, use_sk) in pools.items():
            aps = {v: np.full(len(data.paths), np.nan) for v in variants}
            r1 = {v: np.full(len(data.paths), np.nan) for v in variants}
            fixed = None if use_set else score(skimage)  # learned on no image of the set: one head for all folds
            for g in names:
                held = groups == g
                if fixed is None:
                    parts = [m for o, m in per_group.items() if o != g] + ([skimage] if use_sk else [])
                    res = score(functools.reduce(operator.add, parts))
                else:
                    res = fixed
                for v in variants:
                    aps[v][held], r1[v][held] = res[v].aps[held], res[v].recall1[held]
            for power, shrink in variants:
                name = (f"{'PCA' if power == 0 else f'whiten p={power:g} eps={shrink:g}'}, {pool_name}"
                        f"{' + regions' if with_regions else ''}")
                results[name] = InstanceResult(aps[(power, shrink)], r1[(power, shrink)], list(data.sources))
                print(f"{name:60s} pooled mAP {100 * np.nanmean(aps[(power, shrink)]):.2f}", file=sys.stderr)

    selection = leave_one_source_out(results)
    print(f"{data.root}: {len(data)} images; model {args.model}, long side {args.max_side}, scales {args.scales}; "
          f"heads to {args.dim} dims learned without labels, each group scored by the head learned without its images")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; "
          f"GeM extraction {1 / seconds:.2f} img/s (shared machine)")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print(format_selection(selection))
    if args.json:
        Path(args.json).write_text(json.dumps(selection.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
