"""Shared fixtures: tiny generated images, the real-photo set, tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# Test helper modules (reference models, servers, samples) import by name from this folder.
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))

from samples import INSTANCES_DEV, INSTANCES_HARD, make_image  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_runtime(tmp_path_factory):
    """Exported ONNX graphs go to a folder of this run, never the user's cache; the suite's many
    throwaway models run on PyTorch unless a test asks for another runtime (tests/test_runtime.py),
    or $CFCD_RUNTIME is set to run the whole suite on one."""
    os.environ["CFCD_CACHE"] = str(tmp_path_factory.mktemp("cfcd-cache"))
    os.environ.setdefault("CFCD_RUNTIME", "torch")


@pytest.fixture(scope="session")
def instances_dev() -> Path:
    """The real photos of ../shared/data/instances-dev (CI has them; a user's clone does not)."""
    if not (INSTANCES_DEV / "manifest.csv").is_file():
        pytest.skip(f"real photos not found at {INSTANCES_DEV} (they live in the project's shared folder)")
    return INSTANCES_DEV


@pytest.fixture(scope="session")
def instances_hard() -> Path:
    """The real photos of ../shared/data/instances-hard (CI has them; a user's clone does not)."""
    if not (INSTANCES_HARD / "manifest.csv").is_file():
        pytest.skip(f"real photos not found at {INSTANCES_HARD} (they live in the project's shared folder)")
    return INSTANCES_HARD


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Six small images of two sizes in two sub-folders."""
    root = tmp_path / "images"
    for i in range(6):
        make_image(root / f"g{i % 2}" / f"im{i}.jpg", size=(64, 48) if i % 3 else (40, 56), seed=i)
    return root


@pytest.fixture
def tiny_model():
    from cfcd.model import CFCDNet, ModelConfig

    torch.manual_seed(0)
    model = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=32)).eval()
    model.name = "tiny-test"
    return model
