"""``load_model``: one entry point for every weights source cfcd understands."""

from __future__ import annotations

import logging
from pathlib import Path

from . import pretrained
from .net import CFCDNet
from .weights import Converted, WeightsError, convert, load_state, read_file

log = logging.getLogger(__name__)


def resolve(name_or_path: str | Path) -> Path:
    """A named pretrained model ('default', 'mobilenet_v2-imagenet', ...) or a file path."""
    name = str(name_or_path)
    name = pretrained.DEFAULT_MODEL if name == "default" else name
    if name in pretrained.PRETRAINED:
        return pretrained.fetch(name)
    path = Path(name).expanduser()
    if not path.exists():
        known = ", ".join(["default", *pretrained.PRETRAINED])
        raise WeightsError(f"{name}: neither a weights file nor a known model name ({known})")
    return path


def read_checkpoint(name_or_path: str | Path, backbone: str | None = None) -> Converted:
    """The converted content of a weights source, classifier and training state included."""
    return convert(read_file(resolve(name_or_path)), backbone)


def load_model(name_or_path: str | Path = "default", backbone: str | None = None) -> CFCDNet:
    """A CFCDNet in eval mode from a named model or a weights file.

    Accepts cfcd checkpoints, official CFCD ``.pyth`` files (stage 1, stage 2, deploy; the
    MadaCos classifier is not part of the returned model, see ``read_checkpoint``), pycls
    ImageNet ResNets, and torchvision or timm state dicts (``backbone`` names the timm
    architecture, e.g. ``timm:convnext_tiny``; torchvision layouts are recognised).
    A ``.onnx`` file written by ``cfcd export`` runs through onnxruntime behind the same
    interface (often faster on CPU; see docs/results.md).
    """
    if Path(str(name_or_path)).suffix == ".onnx":
        from .onnx import OnnxRuntimeModel

        return OnnxRuntimeModel(resolve(name_or_path))
    converted = read_checkpoint(name_or_path, backbone)
    model = CFCDNet(converted.config)
    dropped = load_state(model, converted, str(name_or_path))
    if dropped:
        log.info("%s: ignored the classification head (%d keys)", name_or_path, len(dropped))
    model.name = str(name_or_path)
    return model.eval()
