"""Indexing a phone's photo library: images/s of `cfcd index build`, decode vs network, peak memory.

    python bench/phone_library.py                    # 16 photos x (12, 24, 48 Mpx), default model
    python bench/phone_library.py --photos 4 --repeats 1   # a quick look

The library: real photos of ../shared/data/instances-dev (one per identity, in order), each
cropped to the camera's aspect ratio and upscaled (bicubic) to a 12 Mpx (4000 x 3000),
24 Mpx (6000 x 4000) and 48 Mpx (8000 x 6000) JPEG (quality 90), written to a temporary
folder. Each mode builds an index of the folder in a fresh process, through the command's
own code (``cfcd.cli.main(["index", "build", ...])``) with the default model and settings,
decoding in turn with the network (``--decode-threads 0``, so that the CPU time of decoding is
its own; ``bench/index_build_speed.py`` measures the overlap):

  full      every JPEG decoded at its full size (``decode_margin`` None: cfcd before issue 20)
  direct    DCT scaling straight to the size the largest scale needs (margin 1: issue 20's,
            which lost 1.1 to 1.7 mAP on hard photos)
  reduced   DCT scaling to at least twice the largest view, then the antialiased resize
            (margin 2: today's default)

Reported per mode: images/s of the whole build (wall clock; model loading and index writing
included) and its CPU seconds per image; the share of the extraction's CPU time spent
decoding and resizing (``cfcd.extraction.prepare``, timed) and the rest (the network,
batching, descriptors), and the decode+resize CPU seconds per image of each camera size; the
process's peak resident memory (VmHWM: the model included).
Then, in the same process, the cost of one 24 Mpx JPEG against the same photo at 1024 px (a
1024 x 683 JPEG made from the same pixels), both through ``cfcd.extract`` with the default
extraction, alternated, median per photo over ``--repeats``; the ratio is that of the sums
(issue 20's target: <= 1.5). CPU time (``time.process_time``, all threads) is the cost on a
machine shared with other jobs, where wall time also counts the waits for a core; both
ratios are reported. The comparison runs the network on ``--threads`` threads (default 1):
on a busy machine, threads that wait for each other spin, and the network's CPU time would
count those spins too (the build keeps torch's default threads).

Writes bench/results/phone_library.json and .md, unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTANCES_DEV = ROOT.parent / "shared" / "data" / "instances-dev"
RESULTS = ROOT / "bench" / "results"
CAMERAS = {"12mp": (4000, 3000), "24mp": (6000, 4000), "48mp": (8000, 6000)}
SMALL_SIDE = 1024
MODES = ("full", "direct", "reduced")
MARGINS = {"full": None, "direct": 1.0, "reduced": 2.0}  # the cfcd preparation's decode_margin


def source_photos(count: int) -> list[Path]:
    """One photo per identity of instances-dev, identities in name order."""
    from cfcd.data.images import list_images

    root = INSTANCES_DEV / "images"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    photos = [list_images(f)[0] for f in folders if list_images(f)]
    if len(photos) < count:
        raise SystemExit(f"{root}: {len(photos)} identities, fewer than --photos {count}")
    return photos[:count]


def fit(img, size):
    """``img`` cropped about its centre to the aspect of ``size``, then resized to it (bicubic)."""
    from PIL import Image

    w, h = img.size
    tw, th = size
    if tw * h > th * w:  # too tall: keep the width
        ch = round(w * th / tw)
        box = (0, (h - ch) // 2, w, (h - ch) // 2 + ch)
    else:
        cw = round(h * tw / th)
        box = ((w - cw) // 2, 0, (w - cw) // 2 + cw, h)
    return img.resize(size, Image.BICUBIC, box=box)


def make_library(photos: list[Path], folder: Path) -> tuple[Path, list[tuple[Path, Path]]]:
    """The library folder (every photo at each camera size) and (24 Mpx, 1024 px) file pairs."""
    from PIL import Image

    from cfcd.data.decoding import load_image

    library, pairs = folder / "library", []
    for kind in CAMERAS:
        (library / kind).mkdir(parents=True)
    (folder / "small").mkdir()
    for i, photo in enumerate(photos):
        img = load_image(photo)
        for kind, size in CAMERAS.items():
            big = fit(img, size)
            big.save(library / kind / f"{i:03d}.jpg", quality=90)
            if kind == "24mp":
                small = big.resize((SMALL_SIDE, round(SMALL_SIDE * size[1] / size[0])), Image.BILINEAR, reducing_gap=None)
                small.save(folder / "small" / f"{i:03d}.jpg", quality=90)
                pairs.append((library / kind / f"{i:03d}.jpg", folder / "small" / f"{i:03d}.jpg"))
    return library, pairs


def peak_rss_gib() -> float:
    """This process's peak resident memory (VmHWM; not ru_maxrss, which a child inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(mode: str, library: str, pairs_file: str, repeats: int, threads: int) -> None:
    """One mode in this process: the build, then the 24 Mpx / 1024 px pairs; prints a JSON line."""
    import statistics

    import torch

    import cfcd
    import cfcd.extraction as extraction
    from cfcd.cli import main as cli_main
    from cfcd.data.images import get_preparation

    get_preparation("cfcd").decode_margin = MARGINS[mode]
    clocks = (time.perf_counter, time.process_time)  # wall, and this process's CPU (all threads)
    spent = {"prepare": [0.0, 0.0], "extract": [0.0, 0.0], **{f"prepare_{kind}": [0.0, 0.0] for kind in CAMERAS}}

    def timed(name, fn):
        def run(*args, **kwargs):
            start = [c() for c in clocks]
            try:
                return fn(*args, **kwargs)
            finally:
                for key in (name, f"{name}_{Path(str(args[0])).parent.name}"):  # the total, and per camera
                    if key in spent:
                        spent[key] = [t + c() - s for t, c, s in zip(spent[key], clocks, start)]
        return run

    extraction.prepare = timed("prepare", extraction.prepare)  # _Prepared looks it up at each call
    extraction.extract = timed("extract", extraction.extract)  # Index.add_images imports it at each call
    images = sum(1 for p in Path(library).rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        start = [c() for c in clocks]
        # Decoding in turn with the network: a decode thread's CPU time would count the network's too.
        cli_main(["index", "build", str(Path(tmp) / "phone.index"), library, "--decode-threads", "0"])
        build = [c() - s for c, s in zip(clocks, start)]
    peak = peak_rss_gib()
    built = {key: list(value) for key, value in spent.items()}  # the build's, not the comparison's below

    model = cfcd.load_model("default")
    quiet = cfcd.Runtime(device="cpu", progress=False)
    pairs = json.loads(Path(pairs_file).read_text())
    if threads:
        torch.set_num_threads(threads)
    cfcd.extract(model, [pairs[0][1]], runtime=quiet)  # warm-up: fusion and first-call costs
    cost = {"big": [[], []], "small": [[], []]}  # per photo: median wall, median CPU
    for pair in pairs:
        times = {kind: [[], []] for kind in cost}
        for _ in range(repeats):
            for kind, path in zip(cost, pair):
                start = [c() for c in clocks]
                cfcd.extract(model, [path], runtime=quiet)
                for k, (c, s) in enumerate(zip(clocks, start)):
                    times[kind][k].append(c() - s)
        for kind in cost:
            for k in range(2):
                cost[kind][k].append(statistics.median(times[kind][k]))
    print(json.dumps({
        "mode": mode, "images": images, "build_wall_s": build[0], "build_cpu_s": build[1],
        "extract_wall_s": built["extract"][0], "extract_cpu_s": built["extract"][1],
        "prepare_wall_s": built["prepare"][0], "prepare_cpu_s": built["prepare"][1], "peak_gib": peak,
        **{f"prepare_{kind}_cpu_s": built[f"prepare_{kind}"][1] * len(CAMERAS) / images for kind in CAMERAS},
        **{f"{kind}_{clock}_s": sum(cost[kind][k]) / len(pairs) for kind in cost for k, clock in enumerate(("wall", "cpu"))},
    }))


def table(rows: list[dict]) -> str:
    lines = [
        "| decode | JPEGs | build img/s | build CPU s/img | decode+resize (CPU) | network and rest (CPU) | peak memory "
        "| decode+resize CPU s/img 12 / 24 / 48 Mpx | 24 Mpx JPEG CPU s | same photo at 1024 px CPU s | ratio (CPU) "
        "| ratio (wall) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = r["prepare_cpu_s"] / r["extract_cpu_s"]
        lines.append(
            f"| {r['mode']} | {r['images']} | {r['images'] / r['build_wall_s']:.2f} | {r['build_cpu_s'] / r['images']:.3f} "
            f"| {share:.0%} | {1 - share:.0%} | {r['peak_gib']:.2f} GiB "
            f"| {' / '.join(format(r[f'prepare_{kind}_cpu_s'], '.3f') for kind in CAMERAS)} "
            f"| {r['big_cpu_s']:.3f} | {r['small_cpu_s']:.3f} "
            f"| {r['big_cpu_s'] / r['small_cpu_s']:.2f}x | {r['big_wall_s'] / r['small_wall_s']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=16, help="source photos; the library holds 3 JPEGs per photo")
    p.add_argument("--repeats", type=int, default=3, help="timings per file of the 24 Mpx / 1024 px comparison")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the 24 Mpx / 1024 px comparison (0: torch's default, as the build)")
    p.add_argument("--modes", default=",".join(MODES), help="which of full,direct,reduced to run, in this order")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--child", nargs=5, metavar=("MODE", "LIBRARY", "PAIRS", "REPEATS", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child[:3], int(args.child[3]), int(args.child[4]))
        return 0
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        raise SystemExit(f"--modes {args.modes}: choose among {', '.join(MODES)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        library, pairs = make_library(source_photos(args.photos), Path(tmp))
        pairs_file = Path(tmp) / "pairs.json"
        pairs_file.write_text(json.dumps([[str(a), str(b)] for a, b in pairs]))
        print(f"library: {3 * args.photos} JPEGs written in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(library), str(pairs_file),
                                  str(args.repeats), str(args.threads)],
                                 check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(table(rows[-1:]).splitlines()[-1], file=sys.stderr)
    text = table(rows)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "photos": args.photos,
                "repeats": args.repeats, "threads": args.threads, "command": "python bench/phone_library.py " + " ".join(argv or sys.argv[1:])}
        (RESULTS / "phone_library.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
        (RESULTS / "phone_library.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
