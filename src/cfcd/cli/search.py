"""cfcd search: query an index with one or more images."""

from __future__ import annotations

import argparse
import json

from ..index.rerank import DEFAULT_DBA_ALPHA, DEFAULT_QE_ALPHA
from .extract import add_engine_argument, runtime


def register(p) -> None:
    p.add_argument("index", help="index (from `cfcd index build`): a directory, NAME.db or milvus://HOST:PORT/COLLECTION")
    p.add_argument("queries", nargs="*", help="query image files")
    p.add_argument("--id", type=int, action="append", dest="ids", metavar="N",
                   help="more like this: search with the stored descriptor of indexed image N (repeatable; "
                        "the image itself is left out of its results)")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--bbox", type=parse_bbox, help="query region x0,y0,x1,y1 in pixels (applied to every query)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--qe", type=int, default=0, metavar="N", help="alpha query expansion over the top N results")
    p.add_argument("--alpha", type=float, default=DEFAULT_QE_ALPHA, help=f"alpha of query expansion (default {DEFAULT_QE_ALPHA})")
    p.add_argument("--dba", type=int, nargs="?", const=10, default=0, metavar="N",
                   help="database-side augmentation over N neighbours (default 10; computed at load, O(n^2))")
    p.add_argument("--dba-alpha", type=float, default=DEFAULT_DBA_ALPHA)
    p.add_argument("--model", help="model to extract queries with (default: the index's; must match it)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    add_engine_argument(p)
    p.set_defaults(func=run)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    from ..extraction import parse_bbox as parse

    try:
        return parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def run(args) -> None:
    from ..errors import ConfigError
    from ..index import Index
    from ..index.neighbours import augmented, similar
    from ..index.searcher import Searcher
    from ..model import load_model

    if bool(args.queries) == bool(args.ids):
        raise ConfigError("give query images, or --id N for images already in the index (not both)")
    if args.ids and args.bbox:
        raise ConfigError("--bbox crops a query image; an indexed image (--id) is searched whole")
    index = Index.load(args.index)
    if args.dba:
        index = augmented(index, args.dba, args.dba_alpha)
    if args.ids:
        # an unknown id raises UnknownImage, a cfcd NotFound: one line for the user
        result = similar(index, args.ids, k=args.k, qe=args.qe, alpha=args.alpha)
        names = [{"id": i} for i in args.ids]
    else:
        model = load_model(args.model) if args.model else None  # None: the index's own
        queries = [(q, args.bbox) if args.bbox else q for q in args.queries]
        result = Searcher(index, model).search(queries, k=args.k, qe=args.qe, alpha=args.alpha,
                                               runtime=runtime(args, progress=False))
        names = args.queries
    if args.json:
        print(json.dumps([{"query": q, "results": result.hits(i)} for i, q in enumerate(names)], indent=1))
        return
    for i, q in enumerate(names):
        print(f"# id {q['id']}" if isinstance(q, dict) else f"# {q}")
        for hit in result.hits(i):
            print(f"{hit['rank']:4d}  {hit['score']:.4f}  {hit['id']:8d}  {hit['path']}")
