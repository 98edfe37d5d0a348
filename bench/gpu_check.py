"""Every GPU path of cfcd, run once: one script, one table (issue 14).

    python bench/gpu_check.py                  # on a GPU machine: the full check (< 8 min on one GPU)
    python bench/gpu_check.py --device cpu     # reduced mode: the same steps, tiny sizes (a few minutes)

Steps, each reported as pass / FAIL / skip with its numbers; a failing step does not stop the
others, and the exit status is 1 if any failed:

  tests        the test suite's GPU-relevant tests (extraction, features, models, losses): on
               a GPU machine ``cfcd.extract`` defaults to cuda with decoding workers, so these
               run the GPU paths; in reduced mode only the MadaCos tests, on CPU.
  train-bf16,  ``cfcd train`` (the CLI, recipe cpu-mobilenet) for stage 1 and stage 2 with
  train-fp16   run.amp=bf16 / fp16 on a class folder (instances-dev's identity folders when
               present, else generated classes): every logged loss finite, MadaCos scale and
               margin logged (first -> last shown), and the stage-2 checkpoint loaded on CPU
               gives the device's descriptors (fp32) to cosine > 0.9999.
  nccl         two processes with the NCCL backend when the machine has >= 2 GPUs (stage 1 and
               2 under torchrun; each rank's own parameters compared after the steps);
               otherwise skipped, saying so.
  extract-*    throughput (images/s) of ``cfcd.extract`` at the five CFCD scales on 1024 px
               images (long side), for ResNet-50 + 512-d head and for the default model:
               fp32 and AMP, batch 1 (no workers) vs cfcd's defaults for the device; and the
               smallest cosine between fp32 and AMP descriptors (fp16 on a GPU: must be
               > 0.999; bf16 on a CPU: > 0.99).

Writes the table as JSON to bench/results/gpu_check[-cpu].json (``--out`` to change).
ResNet-50 has seeded random weights whose BatchNorm statistics are taken from the check's own
images, so that fp16 arithmetic sees realistic activations; the default model uses its
ImageNet weights when installed (``cfcd weights install``; nothing is downloaded), else the
same kind of seeded weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import cfcd
from cfcd.model import CFCDNet, ModelConfig, pretrained
from cfcd.model.concat import ConcatNet

ROOT = Path(__file__).resolve().parents[1]
INSTANCES_DEV = Path(os.environ.get("CFCD_INSTANCES_DEV", ROOT.parent / "shared" / "data" / "instances-dev"))
AMP_MIN_COS = {"cuda": 0.999, "cpu": 0.99}  # fp32 vs AMP descriptors, per autocast dtype (fp16 / bf16)
GPU_TESTS = ["tests/test_extraction.py", "tests/test_features.py", "tests/model", "tests/losses"]

# Sizes per mode: (GPU full, CPU reduced).
FULL = dict(image_size=224, backbone="resnet50", dim=512, batch=32, stage1_epochs=4, stage2_epochs=4,
            side=1024, n_extract=24, classes=None, tests=GPU_TESTS)
REDUCED = dict(image_size=48, backbone="mobilenet_v2", dim=32, batch=8, stage1_epochs=1, stage2_epochs=1,
               side=64, n_extract=2, classes=(4, 4), tests=["tests/losses/test_madacos.py"])


class Report:
    """Rows of (step, status, numbers); printed as one table and written as JSON."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, step: str, status: str, **numbers) -> dict:
        row = {"step": step, "status": status, **numbers}
        self.rows.append(row)
        print(f"[{status:>4}] {step}: {json.dumps(numbers, default=str)}", flush=True)
        return row

    def table(self) -> str:
        lines = ["| step | status | result |", "|---|---|---|"]
        for r in self.rows:
            detail = ", ".join(f"{k} {_fmt(v)}" for k, v in r.items() if k not in ("step", "status"))
            lines.append(f"| {r['step']} | {r['status']} | {detail} |")
        return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_step(report: Report, name: str, fn, *args) -> None:
    t = time.perf_counter()
    try:
        fn(report, name, *args)
    except Exception as err:  # report and go on: one broken path must not hide the others
        report.add(name, "FAIL", error=f"{type(err).__name__}: {err}"[:400])
    report.rows[-1]["seconds"] = round(time.perf_counter() - t, 1)


# -- data ---------------------------------------------------------------------------------------


def class_folder(root: Path, mode: dict) -> Path:
    """instances-dev's identity folders (a folder per class) on a GPU; generated classes (each
    its own colour pattern) in reduced mode or when the photos are absent."""
    if mode["classes"] is None and (INSTANCES_DEV / "images").is_dir():
        return INSTANCES_DEV / "images"
    num_classes, per_class = mode["classes"] or (8, 12)
    rng = np.random.default_rng(0)
    for c in range(num_classes):
        base = rng.integers(0, 256, (8, 8, 3))
        for k in range(per_class):
            arr = np.clip(base + rng.integers(-40, 40, (8, 8, 3)), 0, 255).astype(np.uint8)
            (root / f"class{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).resize((96 + 8 * (k % 3), 80), Image.BILINEAR).save(root / f"class{c}" / f"{k}.jpg")
    return root


def extraction_images(root: Path, n: int, side: int) -> list[Path]:
    """``n`` photos at long side ``side`` (instances-dev when present, else generated)."""
    root.mkdir(parents=True, exist_ok=True)
    photos = sorted((INSTANCES_DEV / "images").rglob("*.jpg"))[:: 5][:n]
    out = []
    rng = np.random.default_rng(1)
    for i in range(n):
        if i < len(photos):
            img = Image.open(photos[i]).convert("RGB")
        else:
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            img = Image.fromarray(coarse).resize((side, side * 3 // 4), Image.BICUBIC)
        f = side / max(img.size)
        img = img.resize((round(img.width * f), round(img.height * f)), Image.BILINEAR)
        path = root / f"{i:03d}.jpg"
        img.save(path, quality=92)
        out.append(path)
    return out


# -- steps --------------------------------------------------------------------------------------


def step_tests(report: Report, name: str, targets: list[str]) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *targets]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    report.add(name, "pass" if proc.returncode == 0 else "FAIL", tests=" ".join(targets), summary=summary,
               **({} if proc.returncode == 0 else {"tail": proc.stdout[-1500:]}))


def train_overrides(data: Path, out: Path, device: str, amp: str, mode: dict) -> list[str]:
    return [
        f"data.train={data}", f"data.image_size={mode['image_size']}", "data.num_workers=4" if device == "cuda" else "data.num_workers=0",
        f"model.backbone={mode['backbone']}", f"model.dim={mode['dim']}", "stage1.init=''",
        "sampler.tuples.tuple_size=4", f"loss.local_triplet.norm_images={mode['batch']}",
        f"stage1.epochs={mode['stage1_epochs']}", "stage1.warmup_epochs=1", f"stage1.batch_size={mode['batch']}",
        f"stage2.epochs={mode['stage2_epochs']}", f"stage2.batch_size={mode['batch']}",
        f"run.out_dir={out}", f"run.device={device}", f"run.amp={amp}", f"run.hem_batch_size={mode['batch']}",
    ]


def read_log(folder: Path) -> list[dict]:
    return [r for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines()) if "loss" in r]


def step_train(report: Report, name: str, device: str, amp: str, data: Path, work: Path, probe: list[Path], mode: dict) -> None:
    out = work / f"train-{amp}"
    cmd = [sys.executable, "-m", "cfcd", "train", "--config", "cpu-mobilenet", *train_overrides(data, out, device, amp, mode)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        report.add(name, "FAIL", error=proc.stderr[-1500:])
        return
    numbers, ok = {}, True
    for stage in (1, 2):
        records = read_log(out / f"stage{stage}")
        losses = [r["loss"] for r in records]
        finite = bool(losses) and all(math.isfinite(v) for v in losses)
        logged = all(math.isfinite(r.get("scale", math.nan)) and math.isfinite(r.get("margin", math.nan)) for r in records)
        ok &= finite and logged
        numbers[f"s{stage}_steps"] = len(records)
        numbers[f"s{stage}_loss"] = f"{losses[0]:.3f}->{losses[-1]:.3f}" if losses else "none"
        numbers[f"s{stage}_scale"] = f"{records[0]['scale']:.1f}->{records[-1]['scale']:.1f}" if records else "none"
        numbers[f"s{stage}_margin"] = f"{records[0]['margin']:.3f}->{records[-1]['margin']:.3f}" if records else "none"
    # the checkpoint, loaded on CPU, gives the device's fp32 descriptors
    on_device, on_cpu = (cfcd.extract(cfcd.load_model(out / "stage2" / "model.pt"), probe, cfcd.ExtractionSettings((0.7071, 1.0)),
                                      cfcd.Runtime(device=d, progress=False)) for d in (device, "cpu"))
    cos = float(np.min(np.sum(on_device * on_cpu, axis=1)))
    ok &= cos > 0.9999
    report.add(name, "pass" if ok else "FAIL", **numbers, cpu_reload_min_cos=round(cos, 6))


NCCL_WORKER = """
import sys, torch
from cfcd.train.config import load_config
from cfcd.train.engine import run

def keep(trainer):  # this rank's own parameters, not the file rank 0 writes
    torch.save({{k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}},
               {out!r} + f"/rank{{trainer.rt.rank}}-stage{{trainer.number}}.pt")

run(load_config("cpu-mobilenet", {overrides!r}), "both", on_stage_end=keep)
"""


def step_nccl(report: Report, name: str, device: str, data: Path, work: Path, mode: dict) -> None:
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if gpus < 2:
        report.add(name, "skip", reason=f"{gpus} GPU(s) here; the NCCL check needs two")
        return
    out = work / "nccl"
    out.mkdir()
    script = work / "nccl_worker.py"
    overrides = train_overrides(data, out, "cuda", "bf16", {**mode, "stage1_epochs": 2, "stage2_epochs": 1})
    script.write_text(NCCL_WORKER.format(out=str(out), overrides=overrides))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port), str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        report.add(name, "FAIL", error=proc.stderr[-1500:])
        return
    worst = 0.0
    for stage in (1, 2):
        a, b = (torch.load(out / f"rank{r}-stage{stage}.pt", weights_only=True) for r in (0, 1))
        for k in a:
            if a[k].is_floating_point():
                worst = max(worst, float((a[k] - b[k]).abs().max()))
    report.add(name, "pass" if worst == 0.0 else "FAIL", ranks=2, max_param_diff=worst)


def calibrated(config: ModelConfig, images: list[Path], side: int) -> torch.nn.Module:
    """A model with seeded random weights and the BatchNorm statistics of ``images`` (one pass
    in training mode), so that activations have a trained network's magnitudes and fp16's
    range is really exercised (speed does not depend on the values)."""
    torch.manual_seed(0)
    model = CFCDNet(config)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative: the statistics of the one batch
    batch = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((side, side)), dtype=np.float32))
                         .permute(2, 0, 1) / 255 for p in images[:8]])
    model.train()
    with torch.no_grad():
        model(batch)
    return model.eval()


def extraction_models(images: list[Path], side: int):
    """(step, model, what) for ResNet-50 + 512-d head and for the default model (its ImageNet
    weights when installed; nothing is downloaded)."""
    yield "extract-r50", lambda: (calibrated(ModelConfig(backbone="resnet50", dim=512), images, side),
                                  "ResNet-50 + 512-d head, seeded weights, BatchNorm statistics of the images")
    names = pretrained.members("default")
    if all((pretrained.weights_dir() / pretrained.named()[n].filename).is_file() for n in names):
        yield "extract-default", lambda: (cfcd.load_model("default"), f"default model ({pretrained.DEFAULT_MODEL})")
    else:
        backbones = [pretrained.backbone_of(n) for n in names]
        yield "extract-default", lambda: (ConcatNet([calibrated(ModelConfig(backbone=b, dim=0), images, side) for b in backbones]),
                                          f"default architecture ({' + '.join(backbones)}), weights not installed: seeded")


def step_extract(report: Report, name: str, device: str, model: torch.nn.Module, weights: str, images: list[Path]) -> None:
    runs = {}
    for amp in (False, True):  # the five CFCD scales (the paper settings) of the 1024 px images
        for label, runtime in (("b1", dict(batch_size=1, num_workers=0)), ("default", {})):
            rt = cfcd.Runtime(device=device, amp=amp, progress=False, **runtime)
            cfcd.extract(model, images[:1], cfcd.PAPER_SETTINGS, rt)  # warm-up: fusion, cudnn autotune
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = cfcd.extract(model, images, cfcd.PAPER_SETTINGS, rt)
            if device == "cuda":
                torch.cuda.synchronize()
            runs[("amp" if amp else "fp32", label)] = (len(images) / (time.perf_counter() - t), out)
    cos = float(np.min(np.sum(runs[("fp32", "default")][1] * runs[("amp", "default")][1], axis=1)))
    numbers = {f"{p}_{b}_img_per_s": round(v[0], 2) for (p, b), v in runs.items()}
    # autocast runs fp16 on a GPU (10-bit mantissa) and bf16 on a CPU (7-bit): bounds to match
    bound = AMP_MIN_COS[device]
    report.add(name, "pass" if cos > bound else "FAIL", weights=weights, images=len(images), **numbers,
               fp32_vs_amp_min_cos=round(cos, 6), required=bound)


def machine(device: str) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda: the full check; cpu: reduced mode (tiny sizes) to check the script itself")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/gpu_check[-cpu].json)")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out: tests, train, nccl, extract")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here; use --device cpu for the reduced mode")
    mode = FULL if args.device == "cuda" else REDUCED
    skip = {s for s in args.skip.split(",") if s}
    report = Report()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = class_folder(work / "classes", mode)
        images = extraction_images(work / "extract", mode["n_extract"], mode["side"])
        if "tests" not in skip:
            run_step(report, "tests", step_tests, mode["tests"])
        if "train" not in skip:
            for amp in ("bf16", "fp16"):
                run_step(report, f"train-{amp}", step_train, args.device, amp, data, work, images[:3], mode)
        if "nccl" not in skip:
            run_step(report, "nccl", step_nccl, args.device, data, work, mode)
        if "extract" not in skip:
            for step, build in extraction_models(images, min(224, mode["side"])):
                run_step(report, step, lambda r, n, build=build: step_extract(r, n, args.device, *build(), images))
    result = {"mode": "full" if args.device == "cuda" else "reduced (CPU)", "machine": machine(args.device),
              "seconds": round(time.perf_counter() - start, 1), "steps": report.rows}
    print()
    print(f"cfcd GPU check, {result['mode']}, {result['machine']}, {result['seconds']} s")
    print(report.table())
    out = args.out or ROOT / "bench" / "results" / f"gpu_check{'' if args.device == 'cuda' else '-cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written: {out}")
    return 1 if any(r["status"] == "FAIL" for r in report.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
