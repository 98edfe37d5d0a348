"""cfcd demo: index a collection of real photos, query it, print the ranking and its mAP, and
write a results page."""

from __future__ import annotations

import os

from .extract import add_engine_argument, add_settings_arguments, runtime, settings_overrides


def register(p) -> None:
    p.description = (
        "Without --images: scikit-image's sample photos (public domain / CC0), several views of "
        "each. With --images DIR: your folder; one sub-folder per object or place gives the "
        "leave-one-out mAP, a flat folder shows the neighbours only."
    )
    p.add_argument("--images", help="a folder of images (default: the built-in collection)")
    p.add_argument("-o", "--output", default="cfcd-demo", help="where index.html and its thumbnails go (default: cfcd-demo)")
    p.add_argument("--model", default="default", help="model name, A+B (a concatenation) or weights file (default: ImageNet MobileNetV2 + EfficientNet-Lite2)")
    add_settings_arguments(p)
    p.add_argument("--top-k", type=int, default=5, help="neighbours shown per query (default: 5)")
    p.add_argument("--queries", type=int, default=15, help="queries shown in the table and page (default: 15)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: 0 on CPU, up to 8 on GPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    add_engine_argument(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from .. import demo
    from ..model import load_model
    from ..settings import resolve

    model = load_model(args.model)
    result = demo.run(
        model, images=args.images, out_dir=args.output, settings=resolve(None, settings_overrides(args), model),
        top_k=args.top_k, n_queries=args.queries, runtime=runtime(args),
    )
    root = args.images or os.path.join(args.output, "collection")
    print(demo.format_table(result, root, args.top_k))
    print(f"\nresults page: {result.page.resolve()}  (open it in a browser)")
