"""Test data shared by test modules (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# The project's shared folder sits beside the checkout; CFCD_INSTANCES_DEV points elsewhere.
INSTANCES_DEV = Path(
    os.environ.get("CFCD_INSTANCES_DEV", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "instances-dev")
)


def make_image(path: Path, size=(64, 48), seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    img = img if mode == "RGB" else img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
