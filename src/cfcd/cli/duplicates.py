"""cfcd duplicates: groups of duplicate images in an index, in tiers (exact, near, similar), each
with a suggested photo to keep; and what to do about them: move the others to a trash folder
(``--resolve``, undone by ``--restore``), or record photos as not duplicates (``--ignore``)."""

from __future__ import annotations

import html
import json
from pathlib import Path


def register(p) -> None:
    from ..index.cleanup import DEFAULT_TIERS
    from ..index.duplicates import DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD, TIERS
    from ..index.keeper import DEFAULT_RULES

    p.add_argument("index", help="index (from `cfcd index build`): a directory, NAME.db or milvus://HOST:PORT/COLLECTION")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"similarity from which two images count as the same scene, the similar tier (default "
                        f"{DEFAULT_THRESHOLD}, measured on two photo sets: docs/results.md; higher: stricter groups)")
    p.add_argument("--neighbours", type=int, default=DEFAULT_NEIGHBOURS,
                   help=f"nearest neighbours looked at per image (default {DEFAULT_NEIGHBOURS})")
    p.add_argument("--tiers", default=None,
                   help="tiers to show, comma-separated: exact (same pixels), near (one shot: resized, re-encoded, "
                        "lightly edited or cropped), similar (same scene, another shot); default all (with --resolve: "
                        f"{','.join(DEFAULT_TIERS)}). Groups are built up to the loosest tier named: with exact,near no "
                        "near group is merged into a similar one")
    p.add_argument("--prefer", action="append", default=[], metavar="RULE",
                   help=f"a rule to put first when choosing the photo to keep (repeatable): {', '.join(DEFAULT_RULES)} "
                        "or folder:NAME (for example folder:Originals); default order: " + ", ".join(DEFAULT_RULES))
    p.add_argument("--json", action="store_true",
                   help="print JSON: {threshold, tiers, images, groups: [{ids, tier, min_score, pairs, paths, keep, "
                        "keep_path, why, members}]}")
    p.add_argument("--html", metavar="DIR", help="also write DIR/index.html with a thumbnail of every grouped image")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--resolve", action="store_true",
                     help="move every file not kept of the groups (other photos, and byte copies of the kept one at "
                          "other paths) into --trash DIR (keeping its path relative to the groups' common folder; "
                          "DIR/manifest.json lists them) and remove them from the index in one write (a photo whose "
                          "copy is kept stays, with that path); safe to interrupt: run it again to finish")
    act.add_argument("--restore", action="store_true",
                     help="move the photos of --trash DIR back where they were and back into the index (same ids, "
                          "no extraction)")
    act.add_argument("--ignore", metavar="ID,ID[,ID...]",
                     help="record these photos as not duplicates: no later grouping puts any two of them together")
    act.add_argument("--unignore", metavar="ID,ID[,ID...]", help="forget what --ignore recorded about these photos")
    p.add_argument("--trash", metavar="DIR", help="the trash folder of --resolve and --restore")
    p.add_argument("--dry-run", action="store_true", help="with --resolve: print the plan, move nothing")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..errors import ConfigError
    from ..index import Index
    from ..index.cleanup import DEFAULT_TIERS
    from ..index.duplicates import TIERS, near_duplicates, parse_tiers
    from ..index.keeper import rules_order, suggest

    if (args.resolve or args.restore) != bool(args.trash):
        raise ConfigError("--trash DIR goes with --resolve or --restore (and they need it)")
    if args.dry_run and not args.resolve:
        raise ConfigError("--dry-run goes with --resolve")
    if args.ignore or args.unignore:
        return decide(args)
    if args.restore:
        return restore(args)
    tiers = parse_tiers(args.tiers or (DEFAULT_TIERS if args.resolve else TIERS))
    rules_order(args.prefer)  # a bad rule is refused before the grouping runs
    if args.resolve:
        return resolve(args, lambda index: suggest(index, near_duplicates(index, args.threshold, args.neighbours,
                                                                          tiers=tiers), args.prefer))
    args.tiers = ",".join(tiers)
    index = Index.load(args.index)
    decided = suggest(index, near_duplicates(index, args.threshold, args.neighbours, tiers=tiers), args.prefer)
    if args.html:
        print(f"wrote {write_page(Path(args.html), decided, args)}")
    if args.json:
        body = {"threshold": args.threshold, "tiers": list(tiers), "prefer": args.prefer, "images": len(index),
                "groups": [{**g, "paths": [p for m in g["members"] for p in m["paths"]]} for g in decided]}
        print(json.dumps(body, indent=1))
        return
    grouped = sum(len(g["ids"]) for g in decided)
    counts = ", ".join(f"{t} {sum(g['tier'] == t for g in decided)}" for t in tiers)
    similar = f"; similar from {args.threshold}" if "similar" in tiers else ""
    print(f"{len(decided)} groups of duplicates ({grouped} of {len(index)} images): {counts}{similar}")
    for n, group in enumerate(decided, start=1):
        print(f"# group {n}: {group['tier']}, {len(group['ids'])} images, lowest similarity {group['min_score']:.3f}; "
              f"keep {group['keep']} ({group['why']})")
        for m in group["members"]:
            for n, path in enumerate(m["paths"]):  # after the first, the same bytes at other paths
                mark = "keep" if (m["id"], path) == (group["keep"], group["keep_path"]) else ""
                print(f"{mark:4s} {m['id']:8d}  {describe(m)}  {path}" if n == 0 else
                      f"{mark:4s} {'':8s}  same file at {path}")


def decide(args) -> None:
    from ..index.cleanup import edit_writer
    from ..index.decisions import ignore, parse_ids, unignore

    ids = parse_ids(args.ignore or args.unignore)
    changed = edit_writer(args.index)(lambda index: (ignore if args.ignore else unignore)(index, ids))
    if args.json:
        print(json.dumps({"ignored" if args.ignore else "unignored": sorted(changed)}))
    elif args.ignore:
        print(f"recorded {len(changed)} pairs as not duplicates: {', '.join(map(str, ids))} will not be grouped together")
    else:
        print(f"forgot {len(changed)} pairs: {', '.join(map(str, ids))} may be grouped together again")


def resolve(args, groups_of) -> None:
    from ..index.cleanup import resolve as run_resolve

    report = run_resolve(args.index, args.trash, groups_of, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    for entry in report["skipped"]:
        print(f"skipped {entry['id']}: {entry['skipped']}")
    if report["resumed"]:
        print(f"{'would finish' if args.dry_run else 'finishing'} the resolve left unfinished in {args.trash} "
              f"({len(report['planned'])} files)")
    if args.dry_run:
        print(f"plan: move {len(report['planned'])} files to {args.trash} and remove them from the index "
              "(run without --dry-run to do it)")
        for entry in report["planned"]:
            # a byte copy of the kept photo: its path leaves the index, the photo stays
            kept = f"keep {entry['keep']:<8d}" if entry["id"] != entry["keep"] else f"kept at {entry.get('keep_path')},"
            print(f"{entry['id']:8d} {entry['tier']:7s} {kept} {entry['path']} -> {entry['trash']}")
        return
    print(f"moved {len(report['moved'])} files to {args.trash} and removed them from the index; undo with "
          f"`cfcd duplicates {args.index} --restore --trash {args.trash}`")


def restore(args) -> None:
    from ..index.cleanup import restore as run_restore

    report = run_restore(args.index, args.trash)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    for entry in report["skipped"]:
        print(f"skipped {entry['id']}: {entry['skipped']}")
    print(f"restored {len(report['restored'])} files from {args.trash} into their folders and the index")


def describe(member: dict) -> str:
    """Pixel size, file size, format, date and score of a group member, in one column set."""
    size = f"{member['width']}x{member['height']}" if member["width"] else "?"
    kb = f"{member['file_size'] / 1000:.0f} kB" if member["file_size"] is not None else "?"
    return f"{size:>11s} {kb:>9s} {member['format'] or '?':5s} {(member['date'] or '?')[:19]:19s} {member['score']:.3f}"


def write_page(out: Path, groups: list[dict], args) -> Path:
    """``out/index.html``: one row of thumbnails (``out/thumbs``) per group, the kept one first."""
    from ..data.decoding import ImageError
    from ..serve.thumbnails import thumbnail_jpeg

    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, group in enumerate(groups, start=1):
        figures = []
        for member in sorted(group["members"], key=lambda m: m["id"] != group["keep"]):
            image_id, path = member["id"], member["path"]
            try:
                (thumbs / f"{image_id}.jpg").write_bytes(thumbnail_jpeg(path, 160))
                img = f'<img src="thumbs/{image_id}.jpg" alt="">'
            except (ImageError, OSError):  # moved or unreadable since it was indexed
                img = "<span>(not readable)</span>"
            keep = "keep · " if image_id == group["keep"] else ""
            every = html.escape("\n".join(member["paths"]))  # byte copies at other paths too
            figures.append(f'<figure>{img}<figcaption title="{every}">{keep}{image_id} · '
                           f'{html.escape(Path(path).name)}<br>{html.escape(describe(member))}</figcaption></figure>')
        rows.append(f"<section><h2>Group {n}: {group['tier']}, {len(group['ids'])} images, lowest similarity "
                    f"{group['min_score']:.3f}; keep {group['keep']} ({html.escape(group['why'])})</h2>"
                    f"{''.join(figures)}</section>")
    page = out / "index.html"
    page.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Duplicates in {html.escape(str(args.index))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem}} figure{{display:inline-block;margin:0 .5rem .5rem 0;width:160px}}
img{{max-width:160px;max-height:160px}} figcaption{{font-size:.75rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}}</style>
</head><body><h1>{len(groups)} groups of duplicates</h1>
<p>{html.escape(str(args.index))}, tiers {html.escape(args.tiers)}, similar from {args.threshold}, {args.neighbours} neighbours per image</p>
{''.join(rows) or '<p>No duplicates at this threshold.</p>'}
</body></html>
""")
    return page
