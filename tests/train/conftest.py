"""Fixtures of the training tests (helpers in tinytrain.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tinytrain import make_class_folder  # noqa: E402


@pytest.fixture
def class_folder(tmp_path) -> Path:
    return make_class_folder(tmp_path / "data")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
