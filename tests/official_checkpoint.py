"""The synthetic official CFCD ResNet-50 behind ``tests/fixtures/official``, rebuilt from a
NumPy seed so that no checkpoint file needs to be stored.

Weights: He-normal convolutions, random BatchNorm affines and head, all from
``np.random.default_rng(SEED)``. Running statistics: one forward pass in training mode over
eight real photos of instances-dev that are not in the fixture (cumulative averages, i.e.
that batch's own statistics), so every layer sees normalised activations and different
photos get clearly different descriptors (the fixture test asserts a mean cosine below 0.9). Only
torch and NumPy are needed; the official code loaded this exact state dict (strictly) into
its MODEL_S1 / MODEL_S2 classes to record the fixture (tests/fixtures/official/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from refmodels import BGR_MEAN, BGR_STD, OfficialCFCD

SEED = 20231002
NUM_CLASSES = 10  # the MadaCos weight's rows; 81313 for GLDv2, which changes nothing but size
# Real photos (none of them in the fixture) whose statistics the BatchNorm layers take.
CALIBRATION_FOLDERS = ("affine_bark", "evd_cafe", "evd_cat", "pt_london_bridge", "sacre_coeur",
                       "strecha_fountain", "scannet_scene0711_00", "ukbench_0000")
CALIBRATION_SIZE = 160
LAYOUT_SEEDS = {"stage2": SEED, "stage1": SEED + 1, "bare": SEED + 2}  # one model per layout


def calibration_batch(photos: Path) -> torch.Tensor:
    """The first photo of each CALIBRATION_FOLDERS folder, squashed to a square and normalised
    like the official BGR input."""
    imgs = []
    for folder in CALIBRATION_FOLDERS:
        path = sorted((photos / "images" / folder).glob("*.jpg"))[0]
        img = Image.open(path).convert("RGB").resize((CALIBRATION_SIZE, CALIBRATION_SIZE), Image.BILINEAR)
        imgs.append(torch.from_numpy(np.asarray(img, dtype=np.float32)[:, :, ::-1].copy()).permute(2, 0, 1) / 255)
    mean = torch.tensor(BGR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(BGR_STD).view(1, 3, 1, 1)
    return (torch.stack(imgs) - mean) / std


def official_state_dict(photos: Path, seed: int = SEED, num_classes: int = NUM_CLASSES) -> dict[str, torch.Tensor]:
    """The official MODEL_S1 / MODEL_S2 state dict (keys ``globalmodel.*``, ``fc``, ``bn``,
    ``desc_cls.weight``) with seeded weights and calibrated BatchNorm statistics."""
    rng = np.random.default_rng(seed)
    model = OfficialCFCD(depth=50, dim=512, num_classes=num_classes)
    state = model.state_dict()
    for name, t in state.items():
        shape = tuple(t.shape)
        if name.endswith("num_batches_tracked") or "running_" in name:
            continue
        if t.dim() == 4:  # convolution: He-normal
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif name.endswith(".weight") and t.dim() == 1:  # BatchNorm scale; small on the residual branch end
            value = (0.3 if name.endswith("c_bn.weight") else 1.0) * (1.0 + 0.2 * rng.standard_normal(shape))
        elif name.endswith(".bias"):
            value = 0.1 * rng.standard_normal(shape)
        else:  # fc and MadaCos weights
            value = rng.standard_normal(shape) / np.sqrt(shape[1])
        state[name] = torch.from_numpy(value.astype(np.float32))
    model.load_state_dict(state)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one batch gives that batch's statistics
    model.train()
    with torch.no_grad():
        model(calibration_batch(photos))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k in state:
        if k.endswith("num_batches_tracked"):
            state[k].zero_()
    return state


def fingerprint(state: dict[str, torch.Tensor]) -> dict[str, float]:
    """Sums of absolute values that tell whether a rebuilt state dict is the one the fixture was recorded with."""
    sums = {"weights": 0.0, "running_mean": 0.0, "running_var": 0.0}
    for k, v in state.items():
        if v.is_floating_point():
            kind = k.rsplit(".", 1)[1]
            sums[kind if kind in sums else "weights"] += float(v.double().abs().sum())
    return sums


def write_checkpoint(path: Path, layout: str, state: dict[str, torch.Tensor]) -> Path:
    """``layout``: ``stage2`` / ``stage1`` (the official ``save_checkpoint`` dict: epoch,
    model_state, optimizer_state, cfg) or ``bare`` (the state dict alone, as the official
    ``evaler/infer.py`` also accepts). The official files carry their yacs config as text;
    cfcd never reads it, so a short stand-in is written."""
    if layout not in LAYOUT_SEEDS:
        raise ValueError(f"layout is one of {sorted(LAYOUT_SEEDS)}; got {layout!r}")
    if layout == "bare":
        torch.save(state, path)
    else:
        algo = "MODEL_S1" if layout == "stage1" else "MODEL_S2"
        cfg = f"MODEL:\n  ALGO: {algo}\n  DEPTH: 50\n  NUM_CLASSES: {NUM_CLASSES}\n"
        torch.save({"epoch": 50, "model_state": state, "optimizer_state": {}, "cfg": cfg}, path)
    return path
