"""Peak memory and time of one query on a very large image, per working-size cap.

    python bench/working_size.py                          # default model, caps 1024 ... 4096
    python bench/working_size.py --model resnet50 --caps 1448,2048

Two images of the kind a hostile or careless user uploads: a 6300 x 6300 PNG (a flat colour
with a few shapes: 38 KB on disk, 40 Mpx decoded) and a 6000 x 4000 JPEG (a 24 Mpx camera
frame). Each (image, cap) runs in a fresh process (``cfcd.extract`` with the default settings
and that ``max_working_side``), so the peak resident memory (``ru_maxrss``) is that query's
alone, imports and model included; "import + model" is the same process before extracting.
Uncapped runs are not made by default: at 1.41 x of 40 Mpx they take over 10 GB (issue 11).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_images(folder: Path) -> dict[str, Path]:
    png = folder / "flat-6300x6300.png"
    img = Image.new("RGB", (6300, 6300), (200, 210, 220))
    draw = ImageDraw.Draw(img)
    for i in range(8):
        draw.ellipse((400 + 600 * i, 500, 1200 + 600 * i, 1300 + 400 * i), fill=(30 * i, 90, 160))
    img.save(png, optimize=True)
    jpg = folder / "camera-6000x4000.jpg"
    y, x = np.mgrid[0:4000, 0:6000].astype(np.float32)
    noise = np.random.default_rng(0).integers(0, 40, (4000, 6000, 1), dtype=np.uint8)
    arr = np.stack([x / 6000 * 200, y / 4000 * 200, 100 + 80 * np.sin(x / 50) * np.cos(y / 70)], axis=-1)
    Image.fromarray((arr + noise).clip(0, 255).astype(np.uint8)).save(jpg, quality=90)
    return {"PNG 6300x6300": png, "JPEG 6000x4000": jpg}


def peak_rss_gib() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that over
    from the parent through fork and exec, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(model_name: str, path: str, cap: int) -> None:
    """One query in this process; prints a JSON line."""
    import cfcd

    model = cfcd.load_model(model_name)
    base = peak_rss_gib()
    start = time.perf_counter()
    settings = replace(cfcd.PAPER_SETTINGS, max_working_side=cap)  # the original size: only the cap bounds it
    cfcd.extract(model, [path], settings, cfcd.Runtime(device="cpu", progress=False))
    seconds = time.perf_counter() - start
    peak = peak_rss_gib()
    print(json.dumps({"base_gib": base, "peak_gib": peak, "seconds": seconds}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="model name or weights file (default: the default model)")
    p.add_argument("--caps", default="1024,1448,2048,2896,4096", help="max_working_side values to measure")
    p.add_argument("--child", nargs=3, metavar=("MODEL", "PATH", "CAP"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    from cfcd.extraction import working_sizes
    from cfcd.settings import PAPER_SETTINGS

    caps = [int(c) for c in args.caps.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp))
        sizes = {name: path.stat().st_size for name, path in images.items()}
        print(f"model {args.model}, default settings (five CFCD scales), one query per process, "
              f"{os.cpu_count()} cores, torch threads default")
        print("| image | file | max_working_side | largest input | import + model GiB | peak RSS GiB | seconds |")
        print("|---|---:|---:|---|---:|---:|---:|")
        for name, path in images.items():
            for cap in caps:
                out = subprocess.run([sys.executable, __file__, "--child", args.model, str(path), str(cap)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                sizes_seen = working_sizes(*Image.open(path).size, replace(PAPER_SETTINGS, max_working_side=cap, preparation="cfcd"))
                largest = "x".join(map(str, max(sizes_seen)))
                print(f"| {name} | {sizes[name] / 1e6:.2f} MB | {cap} | {largest} | {r['base_gib']:.2f} | "
                      f"{r['peak_gib']:.2f} | {r['seconds']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
