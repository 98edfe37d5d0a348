"""cfcd eval: score a model or ready-made descriptors on Revisited Oxford / Paris (+1M) or on a
folder-per-identity photo set (leave-one-out)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from ..data import revisitop
from .extract import add_model_arguments, extract_kwargs

log = logging.getLogger(__name__)

# Rows kept per query when distractors are added: ranking 1M images in full is never needed,
# and AP over a truncated ranking is a lower bound short by at most (missed positives) / TOPK.
DEFAULT_TOPK = 10000
CROP_POLICY = {True: "queries cropped to their box", False: "queries uncropped (full image)"}
LEAVE_ONE_OUT = "leave-one-out, every image a query"
WHOLE_IMAGES = "whole images (the set has no query boxes)"
# The id suffix that marks cropped queries in a features manifest written by --cache-dir.
CROP_ID = "#crop="


def register(p) -> None:
    p.description = "Evaluate a model (--model, extracting descriptors) or descriptors made elsewhere (--features)."
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--dataset", choices=revisitop.DATASETS[:2], help="Revisited Oxford or Paris")
    target.add_argument("--images", help="a folder-per-identity set (<identity>/<image>, optional manifest.csv)")
    p.add_argument("--root", default="data", help="revisitop data folder holding DATASET/ (default: ./data)")
    p.add_argument(
        "--distractors",
        help="revisitop1m (the images under --root, needs --model and --cache-dir) or their descriptors "
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
    p.set_defaults(func=run)


def run(args) -> None:
    if args.select:
        return _select(args)
    if args.features and args.model != "default":
        raise ValueError("give either --model or --features, not both")
    if args.query_features and not args.features:
        raise ValueError("--query-features goes with --features")
    start = time.perf_counter()
    report, results = (_eval_instances if args.images else _eval_revisitop)(args)
    settings = results["settings"]
    print(f"cfcd eval: {settings['dataset']}")
    for key in ("model", "scales", "max_side", "crop"):
        value = settings[key]
        print(f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}")
    print(report)
    log.info("evaluated in %.1f s", time.perf_counter() - start)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


# descriptors ---------------------------------------------------------------------------------

def _model_settings(args, model) -> dict:
    kw = extract_kwargs(args)
    return {"model": model.name, "scales": list(kw["scales"]), "max_side": kw["max_side"]}


def _manifest_settings(manifest: dict) -> dict:
    return {"model": manifest["model"]["name"], "scales": manifest["scales"], "max_side": manifest["max_side"]}


def _file_settings(path) -> dict:
    return {"model": f"descriptors from {path}", "scales": "unknown", "max_side": "unknown"}


def _extract(model, items, ids, args, part: str) -> np.ndarray:
    """Descriptors of ``items``, through ``--cache-dir/<part>`` (resumable) when given."""
    from ..extraction import extract, extract_to_dir, load_features

    start = time.perf_counter()
    if args.cache_dir:
        out = extract_to_dir(model, items, Path(args.cache_dir) / part, ids=ids, **extract_kwargs(args))
        desc = load_features(out)[1]
    else:
        desc = extract(model, items, **extract_kwargs(args))
    elapsed = time.perf_counter() - start
    log.info("%s: %d images in %.1f s (%.2f images/s)", part, len(items), elapsed, len(items) / max(elapsed, 1e-9))
    return desc


def _is_features_dir(path: Path) -> bool:
    from ..extraction import MANIFEST

    return (path / MANIFEST).is_file()


def _read_features_dir(path: Path, count: int) -> tuple[np.ndarray, dict]:
    from ..features import read_cfcd_features

    ids, desc, manifest = read_cfcd_features(path)
    if len(ids) != count:
        raise ValueError(f"{path}: {len(ids)} descriptors, but {count} images to describe; extracted for another set?")
    return desc, manifest


def _read_distractors(source: str, args, model, dim: int) -> np.ndarray:
    path = Path(source)
    if source == revisitop.DISTRACTORS:
        if model is None:
            raise ValueError("--distractors revisitop1m extracts images; with --features give their descriptors instead")
        if not args.cache_dir:
            raise ValueError("extracting the 1M distractors takes hours: give --cache-dir DIR so an interrupted run resumes")
        images = revisitop.load_dataset(args.root, revisitop.DISTRACTORS).images
        return _extract(model, images, [str(p) for p in images], args, "distractors")
    if path.is_dir() and _is_features_dir(path):
        from ..features import read_cfcd_features

        desc = read_cfcd_features(path)[1]
    elif path.suffix.lower() == ".npy" and path.is_file():
        desc = np.load(path, mmap_mode="r")
        if desc.ndim == 2 and desc.shape[1] != dim and desc.shape[0] == dim:
            desc = desc.T
    else:
        raise ValueError(f"--distractors {source}: expected revisitop1m, a cfcd features directory or an (n, d) .npy file")
    if desc.ndim != 2 or desc.shape[1] != dim:
        raise ValueError(f"--distractors {source}: descriptors of shape {desc.shape}; the database ones are {dim}-d")
    return desc


# Revisited Oxford / Paris --------------------------------------------------------------------

def _crop_id(path, bbox) -> str:
    return f"{path}{CROP_ID}{','.join(f'{v:g}' for v in bbox)}"


def _revisitop_descriptors(args, data) -> tuple[np.ndarray, np.ndarray, dict, object]:
    """(database, queries, settings, model or None)."""
    n_db, n_q = len(data.images), len(data.queries)
    if not args.features:
        from ..model import load_model

        model = load_model(args.model, backbone=args.backbone)
        db = _extract(model, data.images, [str(p) for p in data.images], args, "db")
        if args.crop:
            items, ids = data.query_crops, [_crop_id(p, b) for p, b in data.query_crops]
        else:
            items, ids = data.queries, [str(p) for p in data.queries]
        queries = _extract(model, items, ids, args, "queries")
        return db, queries, {**_model_settings(args, model), "crop": CROP_POLICY[args.crop]}, model
    path = Path(args.features)
    if path.is_dir() and (path / "db").is_dir() and not args.query_features:
        args.features, args.query_features = path / "db", path / "queries"
        path = Path(args.features)
    if path.is_dir() and args.query_features and _is_features_dir(path):
        db, manifest = _read_features_dir(path, n_db)
        queries, q_manifest = _read_features_dir(Path(args.query_features), n_q)
        cropped = all(CROP_ID in i for i in q_manifest["ids"])
        return db, queries, {**_manifest_settings(manifest), "crop": CROP_POLICY[cropped]}, None
    from ..features import read_eval_features

    db, queries = read_eval_features(path, n_db, n_q, args.query_features)
    return db, queries, {**_file_settings(path), "crop": "as in the descriptor file"}, None


def _eval_revisitop(args) -> tuple[str, dict]:
    from ..evaluate import evaluate_revisitop, format_report, rank

    data = revisitop.load_dataset(args.root, args.dataset)
    db, queries, settings, model = _revisitop_descriptors(args, data)
    n_dis = 0
    title = f"{data.name}: {len(data.queries)} queries, {len(data.images)} database images"
    start = time.perf_counter()
    if args.distractors:
        distractors = _read_distractors(args.distractors, args, model, db.shape[1])
        n_dis = len(distractors)
        # The distractors follow the database, so the gnd indices stay valid.
        full = np.empty((len(db) + n_dis, db.shape[1]), dtype=np.float32)
        full[: len(db)], full[len(db):] = db, distractors
        del distractors
        ranks = rank(queries.astype(np.float32), full, topk=args.topk)
        title += f" + {n_dis} distractors (top {args.topk} ranked)"
    else:
        ranks = rank(queries.astype(np.float64), db.astype(np.float64))
    result = evaluate_revisitop(ranks, data.gnd)
    log.info("ranking and scoring: %.1f s", time.perf_counter() - start)
    settings = {"dataset": data.name + ("+1M" if n_dis else ""), **settings, "distractors": n_dis}
    return format_report(result, title), {"settings": settings, "results": result.to_dict()}


# folder-per-identity ---------------------------------------------------------------------------

def _instance_descriptors(args, data) -> tuple[np.ndarray, dict]:
    ids = [str(p) for p in data.paths]
    if not args.features:
        from ..model import load_model

        model = load_model(args.model, backbone=args.backbone)
        return _extract(model, data.paths, ids, args, "images"), _model_settings(args, model)
    path = Path(args.features)
    if path.is_dir() and (path / "images").is_dir() and _is_features_dir(path / "images"):
        path = path / "images"
    if path.is_dir() and _is_features_dir(path):
        from ..features import read_cfcd_features

        stored, desc, manifest = read_cfcd_features(path)
        row = {str(Path(i).resolve()): k for k, i in enumerate(stored)}
        missing = [p for p in data.paths if str(p.resolve()) not in row]
        if missing:
            raise ValueError(f"{path}: no descriptor for {len(missing)} images of the set, e.g. {missing[0]}")
        return desc[[row[str(p.resolve())] for p in data.paths]], _manifest_settings(manifest)
    from ..features import read_descriptors

    return read_descriptors(path, len(data)), _file_settings(path)


def _eval_instances(args) -> tuple[str, dict]:
    from ..data.instances import evaluate_leave_one_out, format_instance_report, load_instances

    if args.distractors:
        raise ValueError("--distractors goes with --dataset; the leave-one-out protocol has none")
    data = load_instances(args.images)
    desc, settings = _instance_descriptors(args, data)
    result = evaluate_leave_one_out(desc, data.identities, data.sources)
    n_ids = len(set(data.identities))
    title = f"{data.root}: {len(data)} images of {n_ids} identities, {LEAVE_ONE_OUT}"
    settings = {"dataset": str(data.root), **settings, "crop": WHOLE_IMAGES}
    return format_instance_report(result, title), {"settings": settings, "results": result.to_dict()}


def _select(args) -> None:
    from ..data.instances import load_instances
    from ..selection import Candidate, DescriptorCache, format_selection, run_selection

    if not args.images:
        raise ValueError("--select goes with --images (a set whose manifest.csv names each image's source)")
    data = load_instances(args.images)
    candidates = [Candidate.parse(c) for c in args.select]
    selection, seconds = run_selection(data, candidates, DescriptorCache(data.paths, args.cache_dir))
    print(f"cfcd eval: {data.root}, leave-one-source-out over {len(selection.groups)} source groups")
    print(format_selection(selection, seconds))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**selection.to_dict(), "seconds_per_image": seconds}, indent=1))
