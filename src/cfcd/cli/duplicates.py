"""cfcd duplicates: groups of near-duplicate images (or photos of the same scene) in an index."""

from __future__ import annotations

import html
import json
from pathlib import Path


def register(p) -> None:
    from ..index.duplicates import DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD

    p.add_argument("index", help="index (from `cfcd index build`): a directory, NAME.db or milvus://HOST:PORT/COLLECTION")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"similarity from which two images are grouped (default {DEFAULT_THRESHOLD}, chosen on "
                        "instances-dev: docs/results.md; higher: stricter groups)")
    p.add_argument("--neighbours", type=int, default=DEFAULT_NEIGHBOURS,
                   help=f"nearest neighbours looked at per image (default {DEFAULT_NEIGHBOURS})")
    p.add_argument("--json", action="store_true", help="print JSON: {threshold, images, groups: [{ids, paths, min_score}]}")
    p.add_argument("--html", metavar="DIR", help="also write DIR/index.html with a thumbnail of every grouped image")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..index import Index
    from ..index.duplicates import near_duplicates

    index = Index.load(args.index)
    groups = near_duplicates(index, args.threshold, args.neighbours)
    records = index.records([i for g in groups for i in g.ids])
    paths = [[records[i].path for i in g.ids] for g in groups]
    if args.html:
        print(f"wrote {write_page(Path(args.html), groups, paths, args)}")
    if args.json:
        body = {"threshold": args.threshold, "images": len(index),
                "groups": [{**g.to_dict(), "paths": p} for g, p in zip(groups, paths)]}
        print(json.dumps(body, indent=1))
        return
    grouped = sum(len(g.ids) for g in groups)
    print(f"{len(groups)} groups of near-duplicates ({grouped} of {len(index)} images) at threshold {args.threshold}")
    for n, (group, names) in enumerate(zip(groups, paths), start=1):
        print(f"# group {n}: {len(group.ids)} images, weakest link {group.min_score:.3f}")
        for image_id, path in zip(group.ids, names):
            print(f"{image_id:8d}  {path}")


def write_page(out: Path, groups, paths, args) -> Path:
    """``out/index.html``: one row of thumbnails (``out/thumbs``) per group."""
    from ..data.decoding import ImageError
    from ..serve.thumbnails import thumbnail_jpeg

    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (group, names) in enumerate(zip(groups, paths), start=1):
        figures = []
        for image_id, path in zip(group.ids, names):
            try:
                (thumbs / f"{image_id}.jpg").write_bytes(thumbnail_jpeg(path, 160))
                img = f'<img src="thumbs/{image_id}.jpg" alt="">'
            except (ImageError, OSError):  # moved or unreadable since it was indexed
                img = "<span>(not readable)</span>"
            figures.append(f'<figure>{img}<figcaption title="{html.escape(path)}">{image_id} · '
                           f'{html.escape(Path(path).name)}</figcaption></figure>')
        rows.append(f"<section><h2>Group {n}: {len(group.ids)} images, weakest link {group.min_score:.3f}</h2>"
                    f"{''.join(figures)}</section>")
    page = out / "index.html"
    page.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Near-duplicates in {html.escape(str(args.index))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem}} figure{{display:inline-block;margin:0 .5rem .5rem 0;width:160px}}
img{{max-width:160px;max-height:160px}} figcaption{{font-size:.75rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}}</style>
</head><body><h1>{len(groups)} groups of near-duplicates</h1>
<p>{html.escape(str(args.index))}, threshold {args.threshold}, {args.neighbours} neighbours per image</p>
{''.join(rows) or '<p>No near-duplicates at this threshold.</p>'}
</body></html>
""")
    return page
