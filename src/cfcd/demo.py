"""``cfcd demo``: index a collection of photos, query it, score it, and show the result.

The default collection is built from the photographs that ship inside the scikit-image wheel
(``skimage/data``; public domain or CC0, see ``DEFAULT_PHOTOS``), so a fresh machine needs only
the package registry. Most of them are single photos, so each group is one photo seen several
ways: the photo, two off-centre crops at other scales (one rotated, one darker) and a blurred,
recompressed copy. The Middlebury motorcycle is a real two-view stereo pair. A user's folder
works the same way: one sub-folder per group gives the leave-one-out mAP (every image is a
query, the positives are the other images of its group, the query itself is ignored); a flat
folder shows the neighbours only.
"""

from __future__ import annotations

import html
import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from .data.decoding import load_image
from .data.images import list_images
from .errors import InputError, Unavailable
from .evaluate import Descriptors, rank, run as evaluate
from .evaluate.benchmarks.folder import leave_one_out
from .settings import ExtractionSettings, Runtime

VIEW_SIDE = 640
THUMB_SIDE = 160

# group -> (files in skimage/data, licence as the scikit-image documentation states it)
DEFAULT_PHOTOS = {
    "astronaut": (("astronaut.png",), "public domain (NASA)"),
    "camera": (("camera.png",), "CC0 (Lav Varshney)"),
    "chelsea": (("chelsea.png",), "CC0 (Stefan van der Walt)"),
    "coffee": (("coffee.png",), "CC0 (Rachel Michetti)"),
    "coins": (("coins.png",), "no known copyright restrictions"),
    "rocket": (("rocket.jpg",), "public domain (SpaceX)"),
    "hubble": (("hubble_deep_field.jpg",), "public domain (NASA)"),
    "retina": (("retina.jpg",), "CC0 (Haggstrom et al.)"),
    "ihc": (("ihc.png",), "no known copyright restrictions"),
    "brick": (("brick.png",), "CC0 (CC0Textures)"),
    "grass": (("grass.png",), "CC0 (CC0Textures)"),
    "gravel": (("gravel.png",), "CC0 (CC0Textures)"),
    "clock": (("clock_motion.png",), "public domain (Stefan van der Walt)"),
    "text": (("text.png",), "public domain"),
    "motorcycle": (("motorcycle_left.png", "motorcycle_right.png"), "Middlebury 2014 stereo (Scharstein et al.)"),
}
COLLECTION_SOURCE = "scikit-image's bundled sample photographs (skimage/data in the scikit-image wheel from PyPI)"


@dataclass
class DemoResult:
    paths: list[Path]
    groups: list[str] | None
    descriptors: np.ndarray
    ranks: np.ndarray  # (n, n): database indices best first, one column per query
    similarities: np.ndarray  # (n, n) float64
    mean_ap: float | None = None
    recall_at_1: float | None = None
    n_scored: int = 0  # queries with at least one positive
    queries: list[int] = field(default_factory=list)
    page: Path | None = None


def skimage_data_dir() -> Path:
    """The folder of sample images inside the installed scikit-image (not imported: only read)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(
            "the default demo collection comes from scikit-image's sample photos, and scikit-image is "
            "not installed: run `pip install 'cfcd[demo]'` (bash scripts/setup.sh does), or pass --images DIR"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _fit(img: Image.Image, side: int) -> Image.Image:
    f = side / max(img.size)
    return img if f >= 1 else img.resize((round(img.width * f), round(img.height * f)), Image.BILINEAR)


def _crop(img: Image.Image, frac: float, cx: float, cy: float) -> Image.Image:
    """A crop of ``frac`` of each side, centred at (cx, cy) in relative coordinates (clamped)."""
    w, h = img.size
    cw, ch = round(w * frac), round(h * frac)
    x0 = min(max(0, round(cx * w - cw / 2)), w - cw)
    y0 = min(max(0, round(cy * h - ch / 2)), h - ch)
    return img.crop((x0, y0, x0 + cw, y0 + ch))


def photo_views(img: Image.Image) -> dict[str, Image.Image]:
    """Four views of one photo: itself, a rotated crop, a darker zoomed crop, a blurred small copy
    (numbered so that the photo itself sorts first and is the group's query in the table)."""
    rotated = _crop(img, 0.7, 0.4, 0.45).rotate(8, resample=Image.BILINEAR, expand=False, fillcolor=(128, 128, 128))
    zoomed = ImageEnhance.Brightness(_crop(img, 0.55, 0.6, 0.55)).enhance(0.7)
    small = img.resize((max(32, img.width // 3), max(32, img.height // 3)), Image.BILINEAR)
    blurred = ImageEnhance.Contrast(small.filter(ImageFilter.GaussianBlur(1.2))).enhance(1.3)
    return {"0-photo": img, "1-crop-rotated": rotated, "2-crop-darker": zoomed, "3-small-blurred": blurred}


def build_default_collection(dest: str | Path) -> Path:
    """Write the default collection as ``dest/<group>/<view>.jpg`` (folder-per-group) and a
    SOURCES.txt naming the origin and licence of each photo; returns ``dest``."""
    src, dest = skimage_data_dir(), Path(dest)
    if dest.exists():
        if not (dest / "SOURCES.txt").is_file():
            raise InputError(f"{dest}: exists and was not written by cfcd demo; choose another output folder")
        shutil.rmtree(dest)  # an earlier demo's collection: rebuild it whole
    lines = [f"Collection built by `cfcd demo` from {COLLECTION_SOURCE}.", ""]
    for group, (files, licence) in DEFAULT_PHOTOS.items():
        missing = [f for f in files if not (src / f).is_file()]
        if missing:
            raise Unavailable(f"{src}: missing {missing}; this scikit-image version does not bundle them")
        photos = [_fit(load_image(src / f), VIEW_SIDE) for f in files]
        if len(photos) == 1:
            views = photo_views(photos[0])
        else:  # a real multi-view scene: each photo plus one crop of it
            views = {f"{k}-{Path(f).stem}": p for k, (f, p) in enumerate(zip(files, photos))}
            views.update({f"{k + len(photos)}-{Path(f).stem}-crop": _crop(p, 0.65, 0.5, 0.5) for k, (f, p) in enumerate(zip(files, photos))})
        (dest / group).mkdir(parents=True, exist_ok=True)
        for name, view in views.items():
            view.convert("RGB").save(dest / group / f"{name}.jpg", quality=88)
        lines.append(f"{group}: {', '.join(files)} -- {licence}; views: {', '.join(views)}")
    (dest / "SOURCES.txt").write_text("\n".join(lines) + "\n")
    return dest


def folder_groups(root: str | Path) -> tuple[list[Path], list[str] | None]:
    """The images under ``root`` and their groups (the first sub-folder of each), or None when
    the images are not all in sub-folders or no group has two images."""
    root = Path(root)
    paths = list_images(root)
    if not paths:
        raise InputError(f"{root}: no images found (looked for {', '.join(sorted({'.jpg', '.png', '.webp'}))} ...)")
    rel = [p.relative_to(root).parts for p in paths]
    if any(len(parts) < 2 for parts in rel):
        return paths, None
    groups = [parts[0] for parts in rel]
    return paths, groups if len(set(groups)) < len(groups) else None


def pick_queries(paths: Sequence[Path], groups: Sequence[str] | None, n: int) -> list[int]:
    """The first image of each group (or the first images of a flat folder), at most ``n``."""
    if groups is None:
        return list(range(min(n, len(paths))))
    first: dict[str, int] = {}
    for i, g in enumerate(groups):
        first.setdefault(g, i)
    return list(first.values())[:n]


def neighbours(result: DemoResult, query: int, top_k: int) -> list[int]:
    return [int(j) for j in result.ranks[:, query] if j != query][:top_k]


def run(
    model,
    images: str | Path | None = None,
    out_dir: str | Path = "cfcd-demo",
    settings: ExtractionSettings | None = None,
    top_k: int = 5,
    n_queries: int = 15,
    runtime: Runtime | None = None,
) -> DemoResult:
    """Extract, rank (exact inner product), score and write ``out_dir/index.html``.

    ``model`` is a CFCDNet (see ``cfcd.load_model``); ``images`` a folder, or None for the
    default collection, which is then written to ``out_dir/collection``; ``settings`` None:
    the model's defaults (``cfcd.settings.default_settings``).
    """
    from .extraction import extract

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(images) if images is not None else build_default_collection(out / "collection")
    paths, groups = folder_groups(root)
    desc = extract(model, paths, settings, runtime)
    similarities = desc.astype(np.float64) @ desc.astype(np.float64).T
    if groups is None:
        result = DemoResult(paths, groups, desc, rank(desc, desc), similarities)
    else:
        scored = evaluate(Descriptors(desc), leave_one_out(paths, groups))
        result = DemoResult(paths, groups, desc, scored.ranks, similarities)
        summary = scored.result.summary()
        result.mean_ap, result.recall_at_1, result.n_scored = summary["mAP"], summary["R@1"], summary["queries"]
    result.queries = pick_queries(paths, groups, n_queries)
    result.page = write_page(result, out, root, top_k, title=_title(images), model_name=getattr(model, "name", "model"))
    return result


def _title(images) -> str:
    return f"cfcd demo: {images}" if images is not None else "cfcd demo: scikit-image sample photos"


def format_table(result: DemoResult, root: str | Path, top_k: int = 5) -> str:
    """The ranked neighbours of each shown query, with scores; '+' marks a same-group match."""
    root = Path(root)
    name = lambda i: str(result.paths[i].relative_to(root)) if result.paths[i].is_relative_to(root) else str(result.paths[i])  # noqa: E731
    width = max(len(name(i)) for i in range(len(result.paths)))
    lines = [f"{'query':<{width}}  rank  score   {'neighbour':<{width}}"]
    for q in result.queries:
        for r, j in enumerate(neighbours(result, q, top_k), 1):
            mark = ""
            if result.groups is not None:
                mark = " +" if result.groups[j] == result.groups[q] else " -"
            lines.append(f"{name(q) if r == 1 else '':<{width}}  {r:>4}  {result.similarities[j, q]:.3f}  {name(j):<{width}}{mark}")
    if result.mean_ap is not None:
        lines.append(
            f"\nmAP {100 * result.mean_ap:.2f}  recall@1 {100 * result.recall_at_1:.2f}  "
            f"(leave-one-out: {result.n_scored} queries, positives = same folder; + same group, - other group)"
        )
    else:
        lines.append("\nno groups (put images in one sub-folder per object or place to get the mAP)")
    return "\n".join(lines)


def _thumb(src: Path, dest: Path) -> None:
    img = load_image(src)
    img.thumbnail((THUMB_SIDE, THUMB_SIDE))
    img.save(dest, quality=85)


def write_page(result: DemoResult, out: Path, root: Path, top_k: int, title: str, model_name: str) -> Path:
    """``out/index.html`` with thumbnails copied to ``out/thumbs``: one row per query, its
    neighbours in rank order with their scores, green border = same group, red = other."""
    thumbs = out / "thumbs"
    if thumbs.exists():
        shutil.rmtree(thumbs)
    thumbs.mkdir(parents=True)
    shown = sorted({i for q in result.queries for i in [q, *neighbours(result, q, top_k)]})
    thumb_of = {}
    for i in shown:
        thumb_of[i] = f"thumbs/{i:05d}.jpg"
        _thumb(result.paths[i], out / thumb_of[i])

    def label(i: int) -> str:
        p = result.paths[i]
        return html.escape(str(p.relative_to(root)) if p.is_relative_to(root) else p.name)

    def cell(i: int, caption: str, cls: str) -> str:
        return (
            f'<figure class="{cls}"><img src="{thumb_of[i]}" alt="{label(i)}" title="{label(i)}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )

    rows = []
    for q in result.queries:
        cells = [cell(q, f"<b>query</b><br>{label(q)}", "query")]
        for r, j in enumerate(neighbours(result, q, top_k), 1):
            cls = "" if result.groups is None else ("hit" if result.groups[j] == result.groups[q] else "miss")
            cells.append(cell(j, f"#{r} score {result.similarities[j, q]:.3f}<br>{label(j)}", cls))
        rows.append(f'<div class="row">{"".join(cells)}</div>')
    if result.mean_ap is not None:
        summary = (
            f"<p class=summary>mAP <b>{100 * result.mean_ap:.2f}</b>, recall@1 <b>{100 * result.recall_at_1:.2f}</b> "
            f"over {result.n_scored} leave-one-out queries (every image is a query; positives are the other images of its "
            f"folder). Green border: same group; red: another group.</p>"
        )
    else:
        summary = "<p class=summary>No groups (a flat folder): neighbours only.</p>"
    sources = root / "SOURCES.txt"
    credits = f"<pre>{html.escape(sources.read_text())}</pre>" if sources.is_file() else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
.row {{ display: flex; gap: 8px; margin-bottom: 14px; align-items: flex-start; }}
figure {{ margin: 0; width: {THUMB_SIDE + 8}px; font-size: 11px; text-align: center; }}
figure img {{ max-width: {THUMB_SIDE}px; max-height: {THUMB_SIDE}px; border: 4px solid #ccc; }}
figure.query img {{ border-color: #36c; }}
figure.hit img {{ border-color: #2a2; }}
figure.miss img {{ border-color: #d33; }}
.summary {{ font-size: 16px; }}
pre {{ font-size: 11px; color: #555; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(result.paths)} images, model <code>{html.escape(model_name)}</code>, {result.descriptors.shape[1]}-d descriptors;
each row: a query (blue) and its {top_k} nearest neighbours by cosine similarity.</p>
{summary}
{''.join(rows)}
{credits}
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path
