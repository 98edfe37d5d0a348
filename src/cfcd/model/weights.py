"""State-dict layouts cfcd reads, and their conversion to ``CFCDNet`` keys.

Layouts (detected from the keys, never from shapes):
- ``cfcd``: a checkpoint written by ``cfcd.model.checkpoint.save_checkpoint``.
- ``official``: an official CFCD ``.pyth`` (pycls format) of stage 1, stage 2 or deploy:
  ``model_state`` (or the bare state dict) with the ResNet under ``globalmodel.`` (or without
  that prefix), the head ``fc``/``bn`` and, in training checkpoints, the MadaCos weight
  ``desc_cls.weight``. Its model config names the ``official`` image preparation.
- ``pycls``: a pycls ImageNet ResNet ``.pyth`` (``stem``/``s1..s4``/``head.fc``).
- ``classification`` / ``timm``: a classification state dict (torchvision, a weights package,
  timm) of a registered backbone, recognised by its key layout (``match_backbone``) unless
  ``backbone=`` names it; its classifier head is dropped by name.

A cfcd checkpoint is loaded by its stored config, never by its keys.

pycls (and therefore the official CFCD code) feeds BGR images normalised with the reversed
ImageNet statistics. Reversing the input channels of the first convolution makes those weights
compute the same function on cfcd's RGB input, so the conversion happens here, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CfcdError
from . import registry
from .net import CFCDNet, ModelConfig

OFFICIAL_PREFIX = "globalmodel."
CLASSIFIER_KEY = "desc_cls.weight"
# Older torchvision files lack BatchNorm's step counter; it does not tell layouts apart.
OPTIONAL_KEY = "num_batches_tracked"
RESNET_DEPTH_BY_STAGE3_BLOCKS = {6: "resnet50", 23: "resnet101"}
PYCLS_TRANSFORM = {"a": "conv1", "a_bn": "bn1", "b": "conv2", "b_bn": "bn2", "c": "conv3", "c_bn": "bn3"}


class WeightsError(CfcdError, ValueError):
    """A weights file that cfcd cannot map onto the model; the message names file and keys."""


@dataclass
class Converted:
    """A state dict mapped to CFCDNet keys, with what was recognised about it."""

    layout: str
    config: ModelConfig
    model_state: dict[str, torch.Tensor]
    classifier: torch.Tensor | None = None  # MadaCos weight (num_classes, dim), if any
    extra: dict = field(default_factory=dict)  # cfcd checkpoints: class_map, epoch, ...
    droppable: tuple[str, ...] = ()  # key prefixes of a classifier head the model does not use


def read_file(path: str | Path) -> dict:
    """``torch.load`` with ``weights_only=True`` and errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types; all mean the same to a user
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({err})") from err
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of tensors or a checkpoint, got {type(obj).__name__}")
    return obj


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def pycls_resnet_to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pycls ResNet keys (stem, sN.bM.{proj,bn,f.*}) -> torchvision keys; other keys unchanged."""
    out = {}
    for key, value in state.items():
        if key.startswith("stem.conv."):
            key = "conv1." + key[len("stem.conv."):]
        elif key.startswith("stem.bn."):
            key = "bn1." + key[len("stem.bn."):]
        elif m := re.fullmatch(r"s(\d)\.b(\d+)\.(proj|bn|f\.(\w+))\.(\w+)", key):
            stage, block, part, sub, param = m.groups()
            target = {"proj": "downsample.0", "bn": "downsample.1"}.get(part) or PYCLS_TRANSFORM.get(sub)
            if target is None:
                raise WeightsError(f"unknown pycls ResNet key {key!r}")
            key = f"layer{stage}.{int(block) - 1}.{target}.{param}"
        out[key] = value
    return out


def _bgr_first_conv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = dict(state)
    state["backbone.conv1.weight"] = state["backbone.conv1.weight"].flip(1)
    return state


def _resnet_name(state: dict, prefix: str = "") -> str:
    blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"layer3\.(\d+)\.", k))}
    name = RESNET_DEPTH_BY_STAGE3_BLOCKS.get(len(blocks))
    if name is None:
        raise WeightsError(f"a ResNet with {len(blocks)} blocks in stage 3 is neither ResNet-50 nor ResNet-101")
    return name


def _prefixed(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


def _convert_official(model_state: dict) -> Converted:
    state = _strip(model_state, "module.")
    classifier = state.pop(CLASSIFIER_KEY, None)
    head = {k: state.pop(k) for k in list(state) if k.split(".")[0] in ("fc", "bn")}
    trunk = pycls_resnet_to_torchvision(_strip(state, OFFICIAL_PREFIX))
    if "fc.weight" not in head:
        raise WeightsError("official CFCD checkpoint without the fc/bn head")
    config = ModelConfig(backbone=_resnet_name(trunk), dim=head["fc.weight"].shape[0], gem_p=3.0, preparation="official")
    state = _bgr_first_conv({**_prefixed(trunk, "backbone."), **head})
    return Converted("official", config, state, classifier)


def match_backbone(state: dict[str, torch.Tensor]) -> str:
    """The registered backbone whose classification state dicts have exactly ``state``'s layout.

    A backbone is a candidate when ``state`` holds its signature keys; it matches when the keys
    of ``state`` outside its classifier head are exactly its trunk's, with the same shapes.
    Anything else (a VGG, DenseNet, torchvision EfficientNet, an unknown ResNet depth, or two
    backbones sharing a layout) is an error asking for ``backbone=``.
    """
    matches = []
    for name, spec in registry.BACKBONES.items():
        if not spec.signature or not all(k in state for k in spec.signature):
            continue
        trunk = {k: v for k, v in spec.build().state_dict().items() if not k.endswith(OPTIONAL_KEY)}
        body = {k: v for k, v in state.items() if not k.startswith(spec.classifier) and not k.endswith(OPTIONAL_KEY)}
        if body.keys() == trunk.keys() and all(v.shape == trunk[k].shape for k, v in body.items()):
            matches.append(name)
    if len(matches) != 1:
        known = ", ".join(registry.BACKBONES)
        found = f"it fits {' and '.join(matches)}" if matches else "its keys fit no registered backbone"
        raise WeightsError(f"cannot tell the backbone from the keys ({found}); pass backbone= "
                           f"(one of {known}, or timm:<name>)")
    return matches[0]


def _convert_classification(state: dict, layout: str, backbone: str | None) -> Converted:
    """torchvision / timm / pycls / package ImageNet state dicts: the trunk; the classifier head
    is dropped by name when the model is loaded."""
    spec = registry.get(backbone or match_backbone(state))
    prefix = "backbone." + spec.key_prefix
    model_state = _prefixed(state, prefix)
    if layout == "pycls":
        model_state = _bgr_first_conv(model_state)
    heads = tuple(prefix + h for h in spec.classifier)
    return Converted(layout, ModelConfig(backbone=spec.name, dim=0), model_state, droppable=heads)


def _has_pycls_keys(state: dict) -> bool:
    """Whether a state dict uses pycls ResNet names (official CFCD, pycls ImageNet)."""
    names = {k.removeprefix("module.").removeprefix(OFFICIAL_PREFIX) for k in state}
    return "stem.conv.weight" in names


def convert(obj: dict, backbone: str | None = None) -> Converted:
    """Detect the layout of a loaded weights object and map it to CFCDNet keys."""
    if obj.get("format") == "cfcd":
        return Converted(
            "cfcd",
            ModelConfig.from_dict(obj["config"]),
            obj["model_state"],
            obj.get("classifier"),
            {k: v for k, v in obj.items() if k not in ("format", "config", "model_state", "classifier")},
        )
    state = obj.get("model_state") if isinstance(obj.get("model_state"), dict) else None
    if state is None and _has_pycls_keys(obj):
        state = obj  # a bare state dict, which the official infer.py accepts as well
    if state is not None:
        state = _strip(state, "module.")
        if "head.fc.weight" in state or ("stem.conv.weight" in state and "fc.weight" not in state):
            return _convert_classification(pycls_resnet_to_torchvision(state), "pycls", backbone)
        return _convert_official(state)
    for wrapper in ("state_dict", "model", "model_ema"):
        if isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    state = _strip(obj, "module.")
    layout = "timm" if backbone and backbone.startswith("timm:") else "classification"
    return _convert_classification(state, layout, backbone)


def load_state(model: CFCDNet, converted: Converted, source: str) -> list[str]:
    """Strict load of ``converted`` into ``model``: missing or unexpected keys are an error
    listing them, except the classifier-head keys the layout declares droppable, which are
    returned so that callers can report them."""
    try:
        result = model.load_state_dict(converted.model_state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise WeightsError(f"{source}: {converted.layout} weights do not fit the {model.config.backbone} model: {err}") from err
    dropped = [k for k in result.unexpected_keys if k.startswith(converted.droppable)] if converted.droppable else []
    unexpected = [k for k in result.unexpected_keys if k not in dropped]
    if result.missing_keys or unexpected:

        def show(keys):
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = [f"missing keys: {show(result.missing_keys)}"] if result.missing_keys else []
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        raise WeightsError(
            f"{source}: {converted.layout} weights do not match the {model.config.backbone} model; " + "; ".join(parts)
        )
    return dropped
