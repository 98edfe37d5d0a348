"""A model exported by ``cfcd export`` (``cfcd.export``), run by onnxruntime.

The graph maps ``INPUT_NAME`` images (B, 3, H, W) to ``OUTPUT_NAME`` descriptors (B, d);
the model config travels in the file's metadata, so the runtime needs nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .concat import config_from_dict

INPUT_NAME = "images"
OUTPUT_NAME = "descriptors"
# Metadata ``cfcd.input``: the graph takes RGB in [0, 1] and normalises it itself. Files
# without it were exported when the input was ImageNet-normalised outside the model.
INPUT_RGB01 = "rgb01"


class OnnxRuntimeModel(nn.Module):
    """An exported model run by onnxruntime behind the module interface ``cfcd.extract``
    uses: ``forward`` takes and returns CPU tensors; ``output_dim`` and ``config`` as CFCDNet (or
    ConcatNet)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # No busy-waiting between and inside runs: spinning threads take the cores that decoding,
        # resizing (Pillow, PyTorch's own threads) and a server's other requests need; with them
        # on, a 2-core build ran the network 1.4x slower (docs/results.md, issue 32).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "cfcd.config" not in meta:
            raise InputError(f"{path}: not a model written by cfcd export (no cfcd.config metadata)")
        self.config = config_from_dict(json.loads(meta["cfcd.config"]))
        self.name = meta.get("cfcd.name", str(path))
        self.output_dim = int(self.session.get_outputs()[0].shape[1])
        self.normalizes = meta.get("cfcd.input") == INPUT_RGB01
        if not self.normalizes:
            from .registry import get

            spec = get(self.config.backbone)
            self.mean, self.std = (torch.tensor(v).view(1, 3, 1, 1) for v in (spec.mean, spec.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] (B, 3, H, W) -> descriptors (B, d)."""
        if not self.normalizes:
            x = (x - self.mean) / self.std
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])
