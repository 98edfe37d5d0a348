"""Test data shared by test modules (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

import importlib.util
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# The project's shared folder sits beside the checkout; CFCD_INSTANCES_DEV / _HARD point elsewhere.
INSTANCES_DEV = Path(
    os.environ.get("CFCD_INSTANCES_DEV", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "instances-dev")
)
BENCH = Path(__file__).resolve().parents[1] / "bench"
INSTANCES_HARD = Path(
    os.environ.get("CFCD_INSTANCES_HARD", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "instances-hard")
)


def make_image(path: Path, size=(64, 48), seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    img = img if mode == "RGB" else img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def tiny_checkpoint(path: Path) -> Path:
    """A tiny model's checkpoint at ``path`` whose descriptors tell pictures apart: random
    weights, batch-norm statistics set from one batch of noise (at their initial values, mean 0
    and variance 1, the last feature map is ~0 and every image gets the same descriptor)."""
    import torch

    from cfcd.model import CFCDNet, ModelConfig, save_checkpoint

    torch.manual_seed(0)
    model = CFCDNet(ModelConfig("mobilenet_v2", dim=16))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # running statistics = this batch's
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 64, 64))
    save_checkpoint(path, model.eval())
    return path


def scene(seed: int, size=(400, 300)) -> Image.Image:
    """A smooth random texture: a photo's stand-in whose pixels align only with its own copies."""
    coarse = np.random.default_rng(seed).integers(0, 256, (size[1] // 10, size[0] // 10, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def duplicate_photos(folder: Path) -> list[Path]:
    """Real files of two duplicate groups: a photo, its PNG re-save in another folder and a
    half-size copy (the PNG is the one to keep: largest, better format), and an unrelated photo
    with its PNG re-save (kept: the same pixels, the better format)."""
    (folder / "trip").mkdir(parents=True)
    (folder / "backup" / "old").mkdir(parents=True)
    scene(0).save(folder / "trip" / "photo.jpg", quality=90)
    upright = Image.open(folder / "trip" / "photo.jpg").convert("RGB")
    upright.save(folder / "backup" / "old" / "photo.png")
    upright.resize((200, 150), Image.Resampling.LANCZOS).save(folder / "trip" / "small.jpg", quality=85)
    scene(1).save(folder / "trip" / "unrelated.jpg", quality=90)
    Image.open(folder / "trip" / "unrelated.jpg").save(folder / "trip" / "unrelated.png")
    return [folder / p for p in ("trip/photo.jpg", "backup/old/photo.png", "trip/small.jpg", "trip/unrelated.jpg",
                                 "trip/unrelated.png")]


def planted_descriptors(groups=(3, 2), dim: int = 64, seed: int = 0) -> np.ndarray:
    """Unit rows, one nearly equal block per group size in ``groups`` (cosine about 0.99998 inside
    a block, near 0 across): descriptors for files whose pixels must decide the tiers."""
    rng = np.random.default_rng(seed)
    rows = []
    for size in groups:
        base = rng.normal(size=dim)
        rows += [base + 0.005 * np.linalg.norm(base) * rng.normal(size=dim) / np.sqrt(dim) for _ in range(size)]
    rows = np.array(rows)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_canvas(width: int, height: int, bit_depth: int = 8, color_type: int = 2, rows: bytes | None = None) -> bytes:
    """A PNG declaring a width x height canvas. ``rows`` is the raw scanline data (filter byte
    per row); without it a few bytes stand for the pixels: a header that promises far more
    than the file holds (a decompression bomb needs nothing else to be refused)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else bytes(64))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def bench_script(name: str):
    """The module of bench/NAME.py (the benches are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
