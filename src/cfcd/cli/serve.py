"""cfcd serve: the HTTP search service and its web page."""

from __future__ import annotations

import os


def register(p) -> None:
    from ..serve.settings import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES

    p.add_argument("index", help="index (from `cfcd index build`): a directory, NAME.db or milvus://HOST:PORT/COLLECTION")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("CFCD_API_KEY"),
                   help="require this key in the X-API-Key header (default: $CFCD_API_KEY; none: open)")
    p.add_argument("--model", help="model for queries (default: the index's)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_BYTES / 2**20, help="largest upload accepted")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest image (width x height) accepted")
    p.add_argument("--workers", type=int, default=4, help="queries extracted at once (threads)")
    p.set_defaults(func=run)


def run(args) -> None:
    import uvicorn

    from ..serve.app import create_app
    from ..serve.settings import ServeSettings

    settings = ServeSettings(
        index=args.index,
        model=args.model,
        device=args.device,
        api_key=args.api_key or None,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        threads=args.workers,
    )
    app = create_app(settings)
    print(f"serving {args.index} at http://{args.host}:{args.port}/ (API at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
