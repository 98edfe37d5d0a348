"""``load_model``: one entry point for every weights source cfcd understands."""

from __future__ import annotations

import logging
from pathlib import Path

from . import pretrained
from .concat import ConcatNet, config_from_dict
from .net import CFCDNet
from .weights import Converted, WeightsError, convert, load_state, read_file

log = logging.getLogger(__name__)


def weights_path(name_or_path: str | Path) -> Path:
    """The weights file of a named pretrained model ('mobilenet_v2-imagenet', ...) or a file path."""
    members = pretrained.members(str(name_or_path))
    if len(members) > 1:
        raise WeightsError(f"{name_or_path}: the concatenation of {', '.join(members)} has no single weights file; "
                           "name one of its models")
    name = members[0]
    if name in pretrained.named():
        return pretrained.fetch(name)
    path = Path(name).expanduser()
    if not path.exists():
        known = ", ".join(["default", *pretrained.named()])
        raise WeightsError(f"{name}: neither a weights file nor a known model name ({known})")
    return path


def read_checkpoint(name_or_path: str | Path, backbone: str | None = None) -> Converted:
    """The converted content of a weights source, classifier and training state included.
    Named weights are read as their registered backbone's, never recognised from their keys."""
    name = pretrained.members(str(name_or_path))[0]
    if backbone is None and name in pretrained.named():
        backbone = pretrained.backbone_of(name)
    return convert(read_file(weights_path(name_or_path)), backbone)


def load_model(name_or_path: str | Path = "default", backbone: str | None = None) -> CFCDNet:
    """A CFCDNet in eval mode from a named model or a weights file.

    Accepts cfcd checkpoints, official CFCD ``.pyth`` files (stage 1, stage 2, deploy; the
    MadaCos classifier is not part of the returned model, see ``read_checkpoint``), pycls
    ImageNet ResNets, and torchvision or timm state dicts (``backbone`` names the timm
    architecture, e.g. ``timm:convnext_tiny``; torchvision layouts are recognised).
    A ``.onnx`` file written by ``cfcd export`` runs through onnxruntime behind the same
    interface (often faster on CPU; see docs/results.md). Names joined by "+" (and "default",
    ``pretrained.DEFAULT_MODEL``) give a ``ConcatNet`` of those models.
    """
    members = pretrained.members(str(name_or_path))
    if len(members) > 1:
        if backbone is not None:
            raise WeightsError(f"{name_or_path}: --backbone names the architecture of one weights file; "
                               "load the models of a concatenation by name")
        return ConcatNet([load_model(m) for m in members], name="+".join(members)).eval()
    if Path(str(name_or_path)).suffix == ".onnx":
        from .onnx import OnnxRuntimeModel

        return OnnxRuntimeModel(weights_path(name_or_path))
    converted = read_checkpoint(name_or_path, backbone)
    model = CFCDNet(converted.config)
    dropped = load_state(model, converted, str(name_or_path))
    if dropped:
        log.info("%s: ignored the classification head (%d keys)", name_or_path, len(dropped))
    # "default" is stored as what it stands for today: indexes keep working when it changes.
    model.name = pretrained.DEFAULT_MODEL if str(name_or_path) == "default" else str(name_or_path)
    return model.eval()


def load_described(info: dict) -> CFCDNet:
    """The model an index or features manifest describes (``describe_model``'s dict).

    Files written before named models were stored by their own name say ``"default"``; that
    is the named ImageNet model with the stored backbone. A model whose config is not the
    stored one is refused with the command that rebuilds.
    """
    name, config = info.get("name"), info.get("config") or {}
    if name == "default":
        named = [n for n in pretrained.named() if pretrained.backbone_of(n) == config.get("backbone")]
        if not named or config.get("dim"):
            raise WeightsError(f"made with the former default model ({config}); no named model matches it now: "
                               f"rebuild with --model {pretrained.DEFAULT_MODEL} (or the model you mean)")
        name = named[0]
    try:
        model = load_model(name, backbone=config.get("backbone"))
    except (WeightsError, FileNotFoundError, OSError) as err:
        raise WeightsError(f"the model it was made with, {name!r}, cannot be loaded ({err}); "
                           "pass the model explicitly or rebuild with --model") from err
    # a config key an older file did not record takes its default (ModelConfig.from_dict)
    if config and model.config.to_dict() != config_from_dict(config).to_dict():
        raise WeightsError(f"made with {name!r} as {config}, but {name!r} is now {model.config.to_dict()}; "
                           f"rebuild with --model {name}")
    return model
