"""cfcd serve: the HTTP search service and its web page."""

from __future__ import annotations

import os

from .extract import add_engine_argument


def register(p) -> None:
    from ..serve.settings import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_QUEUE

    p.add_argument("index", help="index (from `cfcd index build`): a directory, NAME.db or milvus://HOST:PORT/COLLECTION")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("CFCD_API_KEY"),
                   help="require this key in the X-API-Key header (default: $CFCD_API_KEY; none: open)")
    p.add_argument("--model", help="model for queries (default: the index's)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    add_engine_argument(p)
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_BYTES / 2**20, help="largest upload accepted")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest image (width x height) accepted")
    p.add_argument("--workers", type=int, default=None,
                   help="queries extracted at once (threads; default: as many as half the free memory holds, at most one per core)")
    p.add_argument("--queue", type=int, default=DEFAULT_QUEUE,
                   help=f"queries that may wait for a worker; more are answered 503 with Retry-After (default {DEFAULT_QUEUE})")
    p.add_argument("--allowed-hosts", default=None,
                   help="comma-separated Host header names accepted, '*' for any (default: the --host address and localhost)")
    p.add_argument("--upload-dir", default=None,
                   help="accept POST /images (uploads, stored here) and DELETE /images/ID; without an --api-key only "
                        "on a loopback --host (default: none, read-only)")
    p.add_argument("--trash", default=None, metavar="DIR",
                   help="the trash folder of the page's \"move the others to trash\" on duplicate groups (needs "
                        "--api-key and a writable server; undo with `cfcd duplicates INDEX --restore --trash DIR`)")
    p.add_argument("--watch", metavar="DIR", default=None,
                   help="keep the index in step with folder DIR while serving (`cfcd index sync --watch`): added, "
                        "moved, changed and deleted photos show in searches within seconds")
    p.add_argument("--read-only", action="store_true", help="refuse uploads and deletions even with --upload-dir")
    p.set_defaults(func=run)


def run(args) -> None:
    import logging

    import uvicorn

    from ..serve.app import create_app
    from ..serve.security import RedactQuery
    from ..serve.settings import ServeSettings

    settings = ServeSettings(
        index=args.index,
        model=args.model,
        device=args.device,
        runtime=args.runtime,
        api_key=args.api_key or None,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        threads=args.workers,
        queue=args.queue,
        allowed_hosts=tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip()) if args.allowed_hosts else None,
        host=args.host,
        upload_dir=args.upload_dir,
        read_only=args.read_only,
        trash_dir=args.trash,
        watch=args.watch,
    )
    if args.watch:
        from ..index.watch import check_watchable

        check_watchable(args.watch)
    app = create_app(settings)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info")  # configures uvicorn's loggers
    logging.getLogger("uvicorn.access").addFilter(RedactQuery())
    print(f"serving {args.index} at http://{args.host}:{args.port}/ (API at /docs; {settings.threads} workers, "
          f"queue {settings.queue}; {'uploads to ' + args.upload_dir if not settings.read_only_reason else 'read-only'}"
          f"{'; watching ' + args.watch if args.watch else ''})",
          flush=True)
    uvicorn.Server(config).run()
