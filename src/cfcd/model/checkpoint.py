"""The cfcd checkpoint format, written atomically.

A checkpoint is a dict ``{format: "cfcd", version, config, model_state, classifier?, ...}``
readable with ``torch.load(weights_only=True)``; training adds optimizer, scheduler, sampler
and RNG state under their own keys.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_write

FORMAT = "cfcd"
VERSION = 1


def atomic_save(obj, path: str | Path) -> None:
    """Write ``obj`` with ``torch.save`` to a temporary file in the same directory, then
    rename it over ``path``: readers see the old file or the new one, never half of one."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def make_checkpoint(model, classifier: torch.Tensor | None = None, **extra) -> dict:
    """A cfcd checkpoint dict for ``model`` (a CFCDNet, possibly DDP-wrapped)."""
    model = getattr(model, "module", model)
    ckpt = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "model_state": model.state_dict()}
    if classifier is not None:
        ckpt["classifier"] = classifier.detach().cpu()
    ckpt.update(extra)
    return ckpt


def save_checkpoint(path: str | Path, model, classifier: torch.Tensor | None = None, **extra) -> None:
    atomic_save(make_checkpoint(model, classifier, **extra), path)
