"""cfcd eval: score a model or ready-made descriptors on Revisited Oxford / Paris (+1M) or on a
folder-per-identity photo set (leave-one-out); the work is ``cfcd.evaluate.run``'s."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ..errors import ConfigError
from ..evaluate.benchmarks import BENCHMARKS
from .extract import add_model_arguments, runtime, settings_overrides

log = logging.getLogger(__name__)

FOLDER = "folder"
DISTRACTOR_SET = "revisitop1m"
# Rows kept per query with distractors (cfcd.evaluate.DEFAULT_TOPK, repeated so --help needs no numpy).
DEFAULT_TOPK = 10000


def register(p) -> None:
    p.description = "Evaluate a model (--model, extracting descriptors) or descriptors made elsewhere (--features)."
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--dataset", choices=[n for n in BENCHMARKS if n != FOLDER], help="Revisited Oxford or Paris")
    target.add_argument("--images", help="a folder-per-identity set (<identity>/<image>, optional manifest.csv)")
    p.add_argument("--root", default="data", help="revisitop data folder holding DATASET/ (default: ./data)")
    p.add_argument(
        "--distractors",
        help=f"{DISTRACTOR_SET} (the images under --root, needs --model and --cache-dir) or their descriptors "
        "(a cfcd features directory or an (n, d) .npy)",
    )
    add_model_arguments(p)
    p.add_argument(
        "--features",
        help="evaluate these descriptors instead of a model: a --cache-dir of this command (db/, queries/), "
        "a cfcd features directory, .npy, .mat (X, Q) or .pkl (db, query)",
    )
    p.add_argument("--query-features", help="the query descriptors when --features holds only the database")
    p.add_argument("--crop", action=argparse.BooleanOptionalAction, default=True,
                   help="crop queries to their box before extraction (default: crop, as the protocol says)")
    p.add_argument("--cache-dir", help="write the extracted descriptors here (resumable); --features reads them back")
    p.add_argument("--topk", type=int, default=DEFAULT_TOPK, help=f"ranking depth with distractors (default {DEFAULT_TOPK})")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument(
        "--select", nargs="+", metavar="CANDIDATE",
        help="with --images: choose among candidates MODEL[+MODEL][@MAX_SIDE][:S1,S2,...] by leave-one-source-out "
        "(docs/evaluation.md); single-scale descriptors are cached in --cache-dir (default ~/.cache/cfcd/descriptors)",
    )
    p.add_argument(
        "--shapes", nargs="*", metavar="DIR", default=None,
        help="with --select: judge the candidates on collections of several shapes drawn from --images and these "
        "other labelled sets, against the first candidate; one is accepted only if it loses nowhere (docs/evaluation.md)",
    )
    p.set_defaults(func=run)


def run(args) -> None:
    from .. import evaluate
    from ..evaluate import descriptors

    if args.select:
        return _select(args)
    if args.features and args.model != "default":
        raise ConfigError("give either --model or --features, not both")
    if args.query_features and not args.features:
        raise ConfigError("--query-features goes with --features")
    if args.images and args.distractors:
        raise ConfigError("--distractors goes with --dataset; the leave-one-out protocol has none")
    if args.distractors == DISTRACTOR_SET and not (args.cache_dir and not args.features):
        raise ConfigError(f"--distractors {DISTRACTOR_SET} extracts images for hours: it needs --model and --cache-dir DIR "
                         "(an interrupted run resumes); with --features give the distractors' descriptors instead")
    start = time.perf_counter()
    if args.images:
        benchmark = evaluate.open_benchmark(FOLDER, args.images)
    else:
        benchmark = evaluate.open_benchmark(args.dataset, args.root, crop=args.crop)
    options = {}
    if args.features:
        source = descriptors.read(args.features, benchmark, args.query_features)
    else:
        from ..model import load_model

        source = load_model(args.model, backbone=args.backbone)
        options = {"settings": settings_overrides(args), "runtime": runtime(args)}
    distractors = args.distractors
    if distractors == DISTRACTOR_SET:
        from ..evaluate.benchmarks.revisitop import distractor_images

        distractors = distractor_images(args.root)
    elif distractors is not None:
        distractors = descriptors.read_distractors(distractors, _dim(source))
    result = evaluate.run(source, benchmark, distractors=distractors, topk=args.topk, cache_dir=args.cache_dir, **options)
    print(f"cfcd eval: {result.settings['dataset']}")
    for key in ("model", "scales", "max_side", "preparation", "crop"):
        value = result.settings[key]
        print(f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}")
    print(result.report())
    log.info("evaluated in %.1f s", time.perf_counter() - start)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1))


def _dim(source) -> int:
    """The descriptor dimension of a model or of ready descriptors."""
    return source.database.shape[1] if hasattr(source, "database") else (getattr(source, "output_dim", None) or source.config.dim)


def _select(args) -> None:
    from ..selection import Candidate, DescriptorCache, format_selection, run_selection

    if not args.images:
        raise ConfigError("--select goes with --images (a set whose manifest.csv names each image's source)")
    from ..evaluate import open_benchmark

    candidates = [Candidate.parse(c) for c in args.select]
    if args.shapes is not None:
        return _select_on_shapes(args, candidates)
    benchmark = open_benchmark(FOLDER, args.images)
    selection, seconds = run_selection(benchmark, candidates, DescriptorCache(benchmark.images, args.cache_dir))
    print(f"cfcd eval: {benchmark.name}, leave-one-source-out over {len(selection.groups)} source groups")
    print(format_selection(selection, seconds))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**selection.to_dict(), "seconds_per_image": seconds}, indent=1))


def _select_on_shapes(args, candidates) -> None:
    from ..evaluate.shapes import format_verdicts
    from ..selection import select_on_shapes

    scores, verdicts, chosen, held = select_on_shapes([args.images, *args.shapes], candidates, args.cache_dir)
    print(f"cfcd eval: {len(candidates)} candidates on collections of {len(scores.shapes)} shapes, "
          f"against {candidates[0].name}")
    print(format_verdicts(scores, verdicts, candidates[0].name))
    print(f"\nChosen: {chosen}" + "".join(f"\nchosen without {s}: {h['chosen']} ({100 * h['gain']:+.2f} there, worst cell "
                                         f"{100 * h['worst']:+.2f})" for s, h in held.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"chosen": chosen, "held_out": held, "verdicts": [v.__dict__ for v in verdicts],
                                               "scores": scores.table}, indent=1))
