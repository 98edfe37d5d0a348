"""Multi-scale extraction speed: the official CFCD loop vs cfcd.extract vs onnxruntime.

Times the same real photos (../shared/data/instances-dev) with the same weights, in one run:

  official   the official extractor's loop and image handling (CFCD evaler/infer.py and
             evaler/process.py): cv2.imread, float32, per scale cv2.resize (INTER_LINEAR) to
             (int(round(w s)), int(round(h s))), /255 (mean/std: the model's first layer), one
             image and one scale at a time, batch 1, fp32, eager, NCHW, torch.no_grad
  cfcd       cfcd.extract with its defaults (on CPU one image at a time in the process; on GPU
             equal sizes batched, decoding workers), BatchNorm folded into the convolutions,
             channels-last, inference mode, fp32, the ``official`` image preparation (Pillow
             decoding, OpenCV-equivalent resizing in torch)
  onnxrt     cfcd.extract with the `cfcd export` graph run by onnxruntime

The table reports the largest 1 - cosine of each path against the official loop: with the
official preparation it measures decoding and arithmetic differences only. The official code
has no long-side option: with --max-side, the photos are first written at that long side
(Pillow, PNG) and every path reads those files.
FLOPs are counted per input shape with torch.utils.flop_counter on the meta device (a
multiply-add is 2 FLOPs) and compared with the machine's fp32 peak, measured as the best
rate of a large matmul in the same run.

Settings: "r50" = ResNet-50 + 512-d head, the five CFCD scales, random weights (speed does
not depend on the values); "mnv2" = ImageNet MobileNetV2 (random weights if its file is not
installed), the three instances-dev reference scales.

    python bench/extract_speed.py                     # both settings, 12 images, max side 512
    python bench/extract_speed.py --settings r50 --images 6 --max-side 0    # the stored size (<= 1024)

Writes bench/results/extract_speed.json and .md (the table below), unless --no-write.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from cfcd.data.decoding import load_image
from cfcd.extraction import extract, working_sizes
from cfcd.settings import CFCD_SCALES, ExtractionSettings, Runtime
from cfcd.model import CFCDNet, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
INSTANCES_DEV = ROOT.parent / "shared" / "data" / "instances-dev"
RESULTS = ROOT / "bench" / "results"
MNV2_SCALES = (0.7071, 1.0, 1.4142)


def official_input(im: np.ndarray, scale: float) -> torch.Tensor:
    """evaler/process.py ``preprocess``: a float32 BGR image resized as the official code does,
    -> (1, 3, h, w) in [0, 1], flipped to RGB for cfcd's (converted) weights; the mean/std
    step of ``preprocess`` is the first layer of a cfcd model (``CFCDNet.normalize``)."""
    import cv2

    h, w = im.shape[:2]
    x = cv2.resize(im, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[::-1] / 255.0, dtype=np.float32)[None])


def official_extract(model, paths, scales):
    """The official loop (evaler/infer.py ``extract``) with its own decoding and resizing."""
    import cv2

    out = []
    with torch.no_grad():
        for path in paths:
            im = cv2.imread(str(path)).astype(np.float32, copy=False)
            acc = None
            for s in scales:
                x = official_input(im, s)
                g = F.normalize(model(x), p=2, dim=1)
                acc = g if acc is None else acc + g
            out.append(F.normalize(acc / len(scales), dim=1)[0].numpy())
    return np.stack(out)


def resized_copies(paths, max_side: int, folder: Path) -> list[Path]:
    """The photos at ``max_side`` long side, as PNG files (lossless), for every path to read."""
    out = []
    for k, path in enumerate(paths):
        img = load_image(path)
        f = max_side / max(img.size)
        target = folder / f"{k:03d}.png"
        img.resize((round(img.width * f), round(img.height * f)), Image.BILINEAR).save(target)
        out.append(target)
    return out


def input_shapes(paths, settings):
    return [(3, h, w) for path in paths for w, h in working_sizes(*load_image(path).size, settings)]


def count_flops(model, shapes) -> int:
    """Model FLOPs over all inputs, counted on the meta device (no arithmetic is done)."""
    meta = copy.deepcopy(model).to("meta")
    per_shape = {}
    for shape in set(shapes):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            meta(torch.empty(1, *shape, device="meta"))
        per_shape[shape] = counter.get_total_flops()
    return sum(per_shape[s] for s in shapes)


def matmul_peak(n: int = 4096, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n matmul with torch's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def one_minus_cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)  # float32 rounds 1 - cos below 6e-8 to 0
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(np.max(1.0 - cos))


def build(setting: str):
    if setting == "r50":  # stands for an official checkpoint: its preparation is the official one
        torch.manual_seed(0)
        model = CFCDNet(ModelConfig(backbone="resnet50", dim=512, preparation="official")).eval()
        return model, CFCD_SCALES, "ResNet-50 + 512-d head, random weights"
    try:
        from cfcd.model import load_model

        return load_model("mobilenet_v2-imagenet").eval(), MNV2_SCALES, "MobileNetV2, ImageNet weights"
    except Exception as err:  # weights not installed: speed is the same with random values
        print(f"mobilenet_v2-imagenet unavailable ({err}); using random MobileNetV2 weights", file=sys.stderr)
        torch.manual_seed(0)
        return CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=0)).eval(), MNV2_SCALES, "MobileNetV2, random weights"


def timed(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def run_setting(setting, paths, repeats, batch_size, workers, onnx_dir):
    from cfcd.export import export_onnx
    from cfcd.model.onnx import OnnxRuntimeModel

    model, scales, label = build(setting)
    # Like with like: cfcd extracts with the official preparation (the mnv2 default model's own
    # is cfcd's, see docs/evaluation.md); paths were already resized to --max-side.
    settings = ExtractionSettings(scales, max_side=None, preparation="official")  # the files are already at --max-side
    shapes = input_shapes(paths, settings)
    flops = count_flops(model, shapes)
    ort_model = OnnxRuntimeModel(export_onnx(model, Path(onnx_dir) / f"{setting}.onnx"), threads=torch.get_num_threads())
    rt = Runtime(batch_size=batch_size, num_workers=workers, device="cpu", progress=False)
    paths_warm = paths[:1]
    official_extract(model, paths_warm, scales)  # warm-up: allocator, oneDNN primitives
    extract(model, paths_warm, settings, rt)
    extract(ort_model, paths_warm, settings, rt)
    times, descs = {}, {}
    for _ in range(repeats):  # interleaved, so that load from other processes hits all paths alike
        for name, fn in (
            ("official", lambda: official_extract(model, paths, scales)),
            ("cfcd", lambda: extract(model, paths, settings, rt)),
            ("onnxrt", lambda: extract(ort_model, paths, settings, rt)),
        ):
            t, descs[name] = timed(fn, 1)
            times[name] = min(times.get(name, float("inf")), t)
    rows = []
    for name in times:
        rows.append({
            "setting": setting, "model": label, "scales": list(scales), "path": name,
            "images": len(paths), "seconds": times[name], "images_per_s": len(paths) / times[name],
            "speedup": times["official"] / times[name], "gflop_per_image": flops / len(paths) / 1e9,
            "gflop_per_s": flops / times[name] / 1e9,
            "max_1_minus_cos": one_minus_cos(descs[name], descs["official"]),
        })
    return rows


def machine() -> dict:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads); "
        f"measured fp32 matmul peak {result['peak_gflop_per_s']:.0f} GFLOP/s. "
        f"{result['images']} instances-dev photos, long side {result['max_side'] or 'original'} px before scaling, "
        f"best of {result['repeats']}.",
        "",
        "| setting | path | images/s | speed-up vs official | GFLOP/s | % of peak | max 1 - cos |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['setting']} ({len(r['scales'])} scales) | {r['path']} | {r['images_per_s']:.2f} | {r['speedup']:.2f}x | "
            f"{r['gflop_per_s']:.1f} | {100 * r['gflop_per_s'] / result['peak_gflop_per_s']:.0f}% | {r['max_1_minus_cos']:.1e} |"
        )
    models = {r["setting"]: f"{r['model']}, {r['gflop_per_image']:.1f} GFLOP per image" for r in result["rows"]}
    lines += ["", *(f"- {k}: {v}" for k, v in models.items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default="r50,mnv2", help="comma-separated: r50, mnv2")
    p.add_argument("--images", type=int, default=12, help="how many instances-dev photos (default 12)")
    p.add_argument("--max-side", type=int, default=512, help="long side before scaling; 0 = the stored size (1024)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per path, best kept (default 2)")
    p.add_argument("--batch-size", type=int, default=None, help="cfcd batch size (default: cfcd.extract's, 1 on CPU)")
    p.add_argument("--workers", type=int, default=None, help="cfcd decoding workers (default: cfcd.extract's, 0 on CPU)")
    p.add_argument("--data", type=Path, default=INSTANCES_DEV)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if not (args.data / "manifest.csv").is_file():
        print(f"skipped: real photos not found at {args.data} (the project's shared folder)")
        return 0
    import csv

    with open(args.data / "manifest.csv") as f:
        listed = sorted(row["path"] for row in csv.DictReader(f))
    # spread over the identities: every k-th photo of the sorted list
    step = max(1, len(listed) // args.images)
    paths = [args.data / p for p in listed[::step][: args.images]]
    # Other programs may share the cores: the peak is the best of several measurements
    # spread over the run, so that a busy moment does not lower it.
    peak = matmul_peak()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.max_side:
            paths = resized_copies(paths, args.max_side, Path(tmp))
        for setting in args.settings.split(","):
            peak = max(peak, matmul_peak())
            rows += run_setting(setting, paths, args.repeats, args.batch_size, args.workers, tmp)
    peak = max(peak, matmul_peak())
    result = {"machine": machine(), "peak_gflop_per_s": peak, "images": len(paths), "max_side": args.max_side or None, "repeats": args.repeats, "rows": rows}
    table = markdown(result)
    print(table)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "extract_speed.json").write_text(json.dumps(result, indent=1))
        (RESULTS / "extract_speed.md").write_text(table)
        print(f"wrote {RESULTS / 'extract_speed.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
