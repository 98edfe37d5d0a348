"""cfcd demo: index a collection of real photos, query it, print the ranking and its mAP, and
write a results page."""

from __future__ import annotations

import os

from .extract import parse_scales


def register(p) -> None:
    from ..demo import DEMO_MAX_SIDE, DEMO_SCALES

    p.description = (
        "Without --images: scikit-image's sample photos (public domain / CC0), several views of "
        "each. With --images DIR: your folder; one sub-folder per object or place gives the "
        "leave-one-out mAP, a flat folder shows the neighbours only."
    )
    p.add_argument("--images", help="a folder of images (default: the built-in collection)")
    p.add_argument("-o", "--output", default="cfcd-demo", help="where index.html and its thumbnails go (default: cfcd-demo)")
    p.add_argument("--model", default="default", help="model name or weights file (default: ImageNet MobileNetV2)")
    p.add_argument("--scales", type=parse_scales, default=DEMO_SCALES, help="comma-separated scales (default: 0.7071,1,1.4142)")
    p.add_argument("--max-side", type=int, default=DEMO_MAX_SIDE, help=f"long side before scaling (default: {DEMO_MAX_SIDE})")
    p.add_argument("--top-k", type=int, default=5, help="neighbours shown per query (default: 5)")
    p.add_argument("--queries", type=int, default=15, help="queries shown in the table and page (default: 15)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: 0 on CPU, up to 8 on GPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.set_defaults(func=run)


def run(args) -> None:
    from .. import demo
    from ..model import load_model

    model = load_model(args.model)
    result = demo.run(
        model, images=args.images, out_dir=args.output, scales=args.scales, max_side=args.max_side,
        top_k=args.top_k, n_queries=args.queries, num_workers=args.workers, device=args.device,
    )
    root = args.images or os.path.join(args.output, "collection")
    print(demo.format_table(result, root, args.top_k))
    print(f"\nresults page: {result.page.resolve()}  (open it in a browser)")
