"""Fine-tune the default model with the CPU recipe and compare instances-dev mAP before and after.

Training and evaluation use DISJOINT identities of ../shared/data/instances-dev: identities
sorted by name, the even-numbered ones (0, 2, 4, ...) are the training classes, the odd-numbered
ones are evaluated, leave-one-out (every image a query; database = the other evaluation images;
positives = the same identity; revisitop AP). No evaluation photo, and no photo of an evaluated
identity, is seen in training. The training list refers to the photos in place; nothing is copied.

    .venv/bin/python bench/train_cpu.py [--out runs/bench-train-cpu] [key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

from cfcd import evaluate, load_model
from cfcd.data.instances import REFERENCE_SETTINGS
from cfcd.evaluate.benchmarks.folder import leave_one_out
from cfcd.settings import Runtime
from cfcd.train.config import load_config
from cfcd.train.engine import run

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "instances-dev"


def split(data: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    with open(data / "manifest.csv", newline="") as f:
        rows = [(str(data / r["path"]), r["identity"]) for r in csv.DictReader(f)]
    identities = sorted({i for _, i in rows})
    train_ids = set(identities[0::2])
    return [r for r in rows if r[1] in train_ids], [r for r in rows if r[1] not in train_ids]


def leave_one_out_map(model, rows: list[tuple[str, str]]) -> float:
    benchmark = leave_one_out([p for p, _ in rows], [i for _, i in rows])
    scored = evaluate.run(model, benchmark, settings=REFERENCE_SETTINGS, runtime=Runtime(batch_size=8, progress=False))
    return 100.0 * scored.result.summary()["mAP"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-train-cpu")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = Path(args.out)
    train_rows, eval_rows = split(DATA)
    out.mkdir(parents=True, exist_ok=True)
    listing = out / "train_list.txt"
    listing.write_text("".join(f"{p} {i}\n" for p, i in train_rows))
    overrides = [f"data.train={listing}", "data.root=/", f"run.out_dir={out / 'run'}", *args.overrides]
    cfg = load_config("cpu-mobilenet", overrides)
    print(f"train: {len(train_rows)} images of {len({i for _, i in train_rows})} identities; "
          f"eval: {len(eval_rows)} images of {len({i for _, i in eval_rows})} other identities")

    results = [("ImageNet MobileNetV2, GeM, 1280-d (no training)", leave_one_out_map(load_model("mobilenet_v2-imagenet"), eval_rows))]
    tic = time.perf_counter()
    paths = run(cfg, "both", resume=True)
    minutes = (time.perf_counter() - tic) / 60
    for stage in ("stage1", "stage2"):
        results.append((f"after {stage} (512-d)", leave_one_out_map(load_model(paths[stage]), eval_rows)))

    print(f"\ninstances-dev, held-out identities, leave-one-out, scales {list(REFERENCE_SETTINGS.scales)} at {REFERENCE_SETTINGS.max_side} px")
    print("| model | mAP |\n|---|---|")
    for name, value in results:
        print(f"| {name} | {value:.2f} |")
    print(f"\ntraining time: {minutes:.1f} min on {torch.get_num_threads()} CPU thread(s)")
    print("command: .venv/bin/python bench/train_cpu.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
