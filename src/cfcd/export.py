"""The deploy model as ONNX: images (B, 3, H, W) -> global descriptors (B, d), any B, H, W.

The input is what ``cfcd.data.images.to_tensor`` makes (RGB in [0, 1]; the graph normalises
with the backbone's mean/std, metadata ``cfcd.input = rgb01``); the output rows are
L2-normalised. Files exported before normalisation moved into the model (no ``cfcd.input``)
expect ImageNet-normalised input; ``OnnxRuntimeModel`` normalises for them. Multi-scale
extraction stays outside the graph: run the model
once per scale and sum the normalised vectors (``cfcd.extract`` does this, with
``cfcd.model.onnx.OnnxRuntimeModel`` standing in for the PyTorch network).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_write
from .model.onnx import INPUT_NAME, INPUT_RGB01, OUTPUT_NAME

DEFAULT_OPSET = 17


def export_onnx(model: nn.Module, path: str | Path, opset: int = DEFAULT_OPSET, example_size: tuple[int, int] = (224, 224)) -> Path:
    """Write ``model``'s global-descriptor graph to ``path`` with dynamic batch, height and
    width; the model config and name go into the file's metadata. The write is atomic."""
    import onnx

    model = getattr(model, "module", model).cpu().eval()
    example = torch.zeros(1, 3, *example_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter needs no extra package (the dynamo one needs onnxscript).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    graph = onnx.load_model_from_string(buffer.getvalue())
    meta = {"cfcd.config": json.dumps(model.config.to_dict()), "cfcd.name": str(getattr(model, "name", "unnamed")),
            "cfcd.input": INPUT_RGB01}
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    with atomic_write(path) as f:
        f.write(graph.SerializeToString())
    return Path(path)
