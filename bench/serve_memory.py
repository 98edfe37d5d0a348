"""Peak memory of one query in a real `cfcd serve` process, by uploaded canvas size.

For each canvas: a fresh server on a default-settings index (default model, five scales, no
long-side cap stored), one small warm-up query, then one upload of that canvas; the server's
resident memory is read from /proc (VmRSS after the warm-up, VmHWM after the query). The
difference is what one query adds at that size; the largest, at the 40 Mpx upload limit, sets
``cfcd.serve.settings.QUERY_PEAK_BYTES`` (the budget ``--workers`` divides free memory by).

Canvases are photo-like JPEGs (noise over gradients, so decoding cannot be skipped) and the
38 KB all-black 6300x6300 gray PNG of issue 11.

    python bench/serve_memory.py --index photos.idx       # an index built with `cfcd index build`'s defaults
    python bench/serve_memory.py --index photos.idx --sides 1024 4000 6300
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from samples import png_canvas  # noqa: E402
from servers import serve_process  # noqa: E402

MB = 2**20


def photo_like(width: int, height: int) -> bytes:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height:8, 0:width:8]
    small = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    small = np.clip(small + rng.integers(-40, 40, small.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(out, "JPEG", quality=85)
    return out.getvalue()


def gray_png(side: int) -> bytes:
    return png_canvas(side, side, bit_depth=8, color_type=0, rows=bytes((side + 1) * side))


def measure(index: Path, name: str, data: bytes) -> dict:
    with serve_process(index, "--workers", "1") as server:
        warm = photo_like(320, 240)
        httpx.post(f"{server.url}/search", files={"image": ("w.jpg", warm, "image/jpeg")}, timeout=600).raise_for_status()
        base = server.rss_bytes()
        start = time.perf_counter()
        res = httpx.post(f"{server.url}/search", files={"image": ("q", data, "application/octet-stream")}, timeout=1800)
        seconds = time.perf_counter() - start
        peak = server.rss_bytes("VmHWM")
    return {"canvas": name, "file_kb": len(data) / 1024, "status": res.status_code, "seconds": seconds,
            "base_mb": base / MB, "peak_mb": peak / MB, "query_mb": (peak - base) / MB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--sides", type=int, nargs="+", default=[1024, 4000, 7700])
    args = parser.parse_args()
    cases = [(f"{s}x{round(s * 2 / 3)} JPEG", photo_like(s, round(s * 2 / 3))) for s in args.sides]
    cases.append(("6300x6300 gray PNG", gray_png(6300)))
    print("| canvas | file | status | time | server before | server peak | one query adds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, data in cases:
        r = measure(args.index, name, data)
        print(f"| {r['canvas']} | {r['file_kb']:.0f} KB | {r['status']} | {r['seconds']:.1f} s | {r['base_mb']:.0f} MB "
              f"| {r['peak_mb']:.0f} MB | {r['query_mb']:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
