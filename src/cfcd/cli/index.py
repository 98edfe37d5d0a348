"""cfcd index build|add|remove|sync|relearn|compact|info: a persistent index of a photo collection."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

from ..errors import AlreadyExists, ConfigError, InputError
from .extract import add_model_arguments, add_runtime_arguments, read_image_list, runtime, settings_overrides

log = logging.getLogger(__name__)


def register(p) -> None:
    isub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = isub.add_parser("build", help="index a folder or list of images, or a features directory from `cfcd extract`")
    _source_arguments(build)
    build.set_defaults(model=None)  # images: the default model; a features directory: its own
    build.add_argument("--factory", default=None,
                       help="faiss index_factory string: Flat (exact, default), IVF4096,PQ64, HNSW32 ...; for a Milvus "
                            "INDEX (.db, milvus://): FLAT (default), HNSW:M=32,efConstruction=200, IVF_FLAT:nlist=4096 ... "
                            "(see docs/scaling.md)")
    build.add_argument("--force", action="store_true", help="replace an index that already exists at INDEX")
    build.add_argument("--learn", dest="learn", action="store_true", default=False,
                       help="learn a projection from the collection's own descriptors (off by default: it lost on small, "
                            "hard collections; see docs/your-photos.md)")
    build.add_argument("--no-learn", dest="learn", action="store_false", help="never learn one (the default)")
    build.set_defaults(func=run_build)

    add = isub.add_parser("add", help="add images or a features directory to an index (already indexed content is skipped)")
    _source_arguments(add)
    add.set_defaults(func=run_add, model=None)

    remove = isub.add_parser("remove", help="remove images by id or by path")
    remove.add_argument("index", help="index: a directory, NAME.db or milvus://HOST:PORT/COLLECTION")
    remove.add_argument("paths", nargs="*", help="image paths to remove")
    remove.add_argument("--id", dest="ids", type=int, action="append", default=[], help="an image id to remove (repeatable)")
    remove.set_defaults(func=run_remove)

    sync = isub.add_parser("sync", help="bring an index in step with a folder: add new files, remove deleted ones, "
                                        "re-point moved or renamed ones, re-extract changed ones (one write)")
    sync.add_argument("index", help="index: a directory, NAME.db or milvus://HOST:PORT/COLLECTION")
    sync.add_argument("folder", help="the folder of photos (searched recursively)")
    sync.add_argument("--json", action="store_true", help="print JSON: counts, and the paths of each kind")
    sync.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    sync.add_argument("--watch", action="store_true",
                      help="keep running: sync again after every batch of changes to the folder (Ctrl-C or SIGTERM stops)")
    sync.add_argument("--poll", action="store_true", help="with --watch: poll the folder instead of asking the "
                                                          "system for change events (network mounts)")
    add_runtime_arguments(sync)  # the model and its settings are the index's
    sync.set_defaults(func=run_sync)

    relearn = isub.add_parser("relearn", help="learn the index's projection from its stored descriptors now, or --off")
    relearn.add_argument("index", help="index: a directory, NAME.db or milvus://HOST:PORT/COLLECTION")
    relearn.add_argument("--dim", type=int, help="dimension of the projection (default: the one chosen for the index's size)")
    relearn.add_argument("--shrinkage", type=float, help="eigenvalue shrinkage (default: the chosen one)")
    relearn.add_argument("--off", action="store_true", help="drop the projection and stop learning one")
    relearn.set_defaults(func=run_relearn)

    compact = isub.add_parser("compact", help="give back the space of removed images, earlier versions and projections, "
                                               "and what interrupted writes left")
    compact.add_argument("index", help="index: a directory, NAME.db or milvus://HOST:PORT/COLLECTION")
    compact.add_argument("--json", action="store_true", help="print JSON")
    compact.set_defaults(func=run_compact)

    info = isub.add_parser("info", help="what an index holds and how it was made")
    info.add_argument("index", help="index: a directory, NAME.db or milvus://HOST:PORT/COLLECTION")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=run_info)


def _source_arguments(p) -> None:
    p.add_argument("index", help="index directory, Milvus Lite file (NAME.db) or milvus://HOST:PORT/COLLECTION")
    p.add_argument("source", help="a folder of images, a text file of image paths, or a `cfcd extract` output directory")
    add_model_arguments(p)


def _is_features_dir(source: str) -> bool:
    from ..extraction import MANIFEST

    return (Path(source) / MANIFEST).is_file()


# Options that only change how images are extracted: a features directory is extracted already.
EXTRACTION_OPTIONS = {"model": "--model", "backbone": "--backbone", "preset": "--settings", "scales": "--scales",
                      "max_side": "--max-side", "max_working_side": "--max-working-side", "preparation": "--preparation",
                      "batch_size": "--batch-size", "workers": "--workers",
                      "decode_threads": "--decode-threads", "image_threads": "--image-threads", "device": "--device",
                      "amp": "--amp",
                      "runtime": "--runtime"}


def _refuse_extraction_options(args, manifest: dict) -> None:
    given = [flag for name, flag in EXTRACTION_OPTIONS.items() if getattr(args, name, None) not in (None, False)]
    if given:
        made = {k: manifest.get(k) for k in ("scales", "max_side", "preparation")}
        raise ConfigError(f"{args.source}: a features directory holds descriptors extracted already, with model "
                         f"{manifest['model'].get('name')!r} and {made}; {', '.join(given)} would change nothing. "
                         "Drop them, or give the images to extract them with these options")


def _add_source(index, args, model=None):
    """Add args.source to ``index`` (images: extracted with ``model``, else the index's own or
    the one ``args`` names); returns the AddReport, the inputs (for messages) and the reasons
    of inputs that never reached the index (a features directory's unreadable files)."""
    from ..extraction import load_features

    if _is_features_dir(args.source):
        ids, desc, manifest = load_features(args.source, mmap=True)  # read once, by desc[rows]
        _refuse_extraction_options(args, manifest)
        failed = set(manifest.get("failed", []))
        rows = [i for i in range(len(ids)) if i not in failed]
        inputs = [ids[i] for i in rows]
        unread = [manifest.get("errors", {}).get(str(r), f"{ids[r]}: not readable when extracted") for r in sorted(failed)]
        return index.add(desc[rows], inputs, model=manifest["model"], settings=manifest), inputs, unread
    from ..index.searcher import add_images, load_index_model
    from ..model import load_model

    images = [str(p) for p in read_image_list(args.source)]
    if not images:
        raise InputError(f"{args.source}: no images found")
    if model is None and args.model is None and index.model:
        model = load_index_model(index)  # the index's own, from its stored config
    elif model is None:
        model = load_model(args.model or "default", backbone=args.backbone)
    return add_images(index, model, images, settings_overrides(args), runtime(args)), images, []


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _print_report(report, inputs, unread=()) -> None:
    failed = [*unread, *(reason for _, reason in sorted(report.failed.items()))]
    print(f"added {len(report.added)} images", end="")
    if report.paths:
        print(f", recorded {plural(len(report.paths), 'more path')} of indexed content", end="")
    skipped = len(report.duplicates) + len(report.repeated) - len(report.paths)
    print(f", skipped {skipped} already indexed" if skipped else "", end="")
    print(f", {len(failed)} unreadable" if failed else "")
    for reason in failed:
        print(f"skipped unreadable image: {reason}")  # the reason names the file and the cause
    for pos, existing in sorted(report.duplicates.items()):
        log.debug("%s: same content as id %d", inputs[pos], existing)


def run_build(args) -> None:
    from ..index import Index
    from ..index.engines import open_store

    if open_store(args.index).exists() and not args.force:
        raise AlreadyExists(f"{args.index}: an index already exists; use `cfcd index add`, or --force to rebuild it")
    model = None
    if _is_features_dir(args.source):
        from ..extraction import read_manifest

        dim = read_manifest(args.source)["model"]["dim"]
    else:
        from ..model import load_model

        model = load_model(args.model or "default", backbone=args.backbone)  # loaded once, used to extract
        dim = model.output_dim
    # Extraction runs without the write lock; saving checks again, under it, that no other
    # build made an index here meanwhile.
    index = Index(dim, factory=args.factory, location=args.index, learn=args.learn)
    report, inputs, unread = _add_source(index, args, model)
    index.save(args.index, overwrite=args.force)
    _print_report(report, inputs, unread)
    print(f"{args.index}: {len(index)} images, {index.factory}, version {index.generation}")


def run_add(args) -> None:
    from ..index import Index

    with Index.edit(args.index) as index:
        report, inputs, unread = _add_source(index, args)
    _print_report(report, inputs, unread)
    print(f"{args.index}: {len(index)} images, version {index.generation}")


def run_remove(args) -> None:
    from ..index import Index
    from ..index.records import resolve_paths

    if not args.ids and not args.paths:
        raise ConfigError("name images to remove: paths, or --id N")
    with Index.edit(args.index) as index:
        held = index.layers.catalogue.ids_by_path(resolve_paths(args.paths))
        removed = index.remove(ids=args.ids, paths=args.paths)
    kept = sum(i not in set(removed) for i in held.values())  # paths forgotten, their image kept by another
    forgot = f", forgot {plural(kept, 'path')} of images still indexed" if kept else ""
    print(f"removed {len(removed)} images{forgot}; {len(index)} remain")


def run_sync(args) -> None:
    from ..index.sync import sync

    if args.watch:
        if args.dry_run:
            raise ConfigError("--watch changes the index as the folder changes; it takes no --dry-run")
        from ..index.watch import check_watchable, watch

        check_watchable(args.folder)
        # Ctrl-C and a service manager's SIGTERM stop it, even when started with SIGINT ignored
        # (a background job of a script): a sync cut short is finished by the next one.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler)
        try:
            watch(args.index, args.folder, runtime=runtime(args, progress=False), poll=args.poll,
                  on_sync=lambda todo: _print_sync(args, todo))
        except KeyboardInterrupt:
            pass
        return
    _print_sync(args, sync(args.index, args.folder, runtime=runtime(args), dry_run=args.dry_run, progress=not args.dry_run))


def _print_sync(args, todo) -> None:
    if args.json:
        print(json.dumps({**todo.to_dict(), "dry_run": args.dry_run}, indent=1))
        return
    print(todo.summary(args.dry_run))
    for reason in todo.unreadable.values():
        print(f"skipped unreadable image: {reason}")
    print(f"{args.index}: {todo.images} images, version {todo.version}", flush=True)


def run_relearn(args) -> None:
    from ..index import Index
    from ..index.projection import relearn, unlearn

    if args.off and (args.dim or args.shrinkage is not None):
        raise ConfigError("--off drops the projection; it takes no --dim or --shrinkage")
    if args.dim is not None and args.dim < 1:
        raise ConfigError(f"--dim {args.dim}: expected a positive dimension")
    with Index.edit(args.index) as index:
        if args.off:
            unlearn(index)
        else:
            relearn(index, args.dim, args.shrinkage)
    print(f"{args.index}: {describe_projection(index.info())}, version {index.generation}")


def run_compact(args) -> None:
    from ..index.compaction import compact
    from ..index.index import DEFAULT_LOCK_TIMEOUT

    report = compact(args.index, DEFAULT_LOCK_TIMEOUT)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    for what in report["removed"]:
        print(f"removed {what}")
    if report["reclaimed"] is not None:
        print(f"{args.index}: reclaimed {report['reclaimed']} bytes ({report['bytes_before']} -> {report['bytes_after']})", end="")
    else:
        print(f"{args.index}: {report['rows_before']} -> {report['rows_after']} rows stored", end="")
    print(f", {report['rows_dropped']} rows of removed images dropped, version {report['version']}")


def describe_projection(info: dict) -> str:
    """One line: whether the index searches a learned projection, and of what."""
    p = info.get("projection")
    if p:
        return (f"learned projection {info['dim']} -> {p['dim']}-d (PCA-whitening, shrinkage {p['shrinkage']:g}), "
                f"learned from {p['learned_from']} of its own descriptors, no labels")
    if not info.get("learn"):
        return "no projection (learning off)"
    from ..index.projection import MIN_IMAGES

    return f"no projection yet (learned from {MIN_IMAGES} images on)"


def run_info(args) -> None:
    from ..index import Index

    info = Index.load(args.index).info()
    if args.json:
        print(json.dumps(info, indent=1))
        return
    model = info["model"] or {}
    settings = info["settings"] or {}
    print(f"index     {info['path']} (version {info['version']})")
    print(f"images    {info['images']}")
    print(f"engine    {info['engine']} {info['factory']}, {info['dim']}-d")
    print(f"search    {describe_projection(info)}")
    print(f"model     {model.get('name')} {model.get('config')}")
    print("settings  " + ", ".join(f"{k} {v}" for k, v in settings.items()))
    if info["removed_pending"]:
        print(f"note      {info['removed_pending']} removed vectors are filtered at search time; `cfcd index compact` reclaims them")
