"""The cfcd checkpoint format and atomic writes.

A checkpoint is a dict ``{format: "cfcd", version, config, model_state, classifier?, ...}``
readable with ``torch.load(weights_only=True)``; training adds optimizer, scheduler, sampler
and RNG state under their own keys.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "cfcd"
VERSION = 1


def atomic_save(obj, path: str | Path) -> None:
    """Write ``obj`` with ``torch.save`` to a temporary file in the same directory, then
    rename it over ``path``: readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
