"""Tiny training sets and recipes for the training tests: 64 px images, a few classes, a
random-init MobileNetV2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

NUM_CLASSES = 4
PER_CLASS = 6


def make_class_folder(root: Path, num_classes: int = NUM_CLASSES, per_class: int = PER_CLASS) -> Path:
    """Folder per class; each class has its own colour pattern so that it can be learnt."""
    rng = np.random.default_rng(0)
    for c in range(num_classes):
        base = rng.integers(0, 256, (8, 8, 3))
        for k in range(per_class):
            noise = rng.integers(-40, 40, (8, 8, 3))
            arr = np.clip(base + noise, 0, 255).astype(np.uint8)
            img = Image.fromarray(arr).resize((64 + 8 * (k % 2), 56), Image.NEAREST)
            (root / f"class{c}").mkdir(parents=True, exist_ok=True)
            img.save(root / f"class{c}" / f"{k}.png")
    return root


def tiny_overrides(data: Path, out: Path) -> list[str]:
    return [
        f"data.train={data}", "data.image_size=64", "data.num_workers=0",
        "model.backbone=mobilenet_v2", "model.dim=32",
        "sampler.tuples.tuple_size=4", "loss.local_triplet.norm_images=8",
        "stage1.epochs=2", "stage1.warmup_epochs=1", "stage1.batch_size=8", "stage1.init=''", "stage1.base_lr=0.01",
        "stage2.epochs=1", "stage2.batch_size=8",
        f"run.out_dir={out}", "run.device=cpu", "run.amp=off", "run.hem_batch_size=8",
    ]
