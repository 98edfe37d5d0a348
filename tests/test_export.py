"""ONNX export: onnxruntime's descriptors match PyTorch's for any batch and image size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from cfcd.cli import main  # noqa: E402
from cfcd.export import export_onnx  # noqa: E402
from cfcd.extraction import extract  # noqa: E402
from cfcd.model import load_model, save_checkpoint  # noqa: E402
from cfcd.model.onnx import OnnxRuntimeModel  # noqa: E402


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_onnxruntime_matches_pytorch_at_several_sizes(tmp_path, backbone):
    from cfcd.model import CFCDNet, ModelConfig

    torch.manual_seed(0)
    model = CFCDNet(ModelConfig(backbone=backbone, dim=32)).eval()
    path = export_onnx(model, tmp_path / "m.onnx", example_size=(64, 64))
    ort_model = OnnxRuntimeModel(path)
    assert ort_model.output_dim == 32 and ort_model.config == model.config
    for shape in [(1, 3, 64, 64), (3, 3, 97, 130), (2, 3, 160, 72)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            expected = model(x).numpy()
        got = ort_model(x).numpy()
        assert got.shape == expected.shape
        assert cosines(got, expected).min() > 0.9999


def test_cli_export_and_multiscale_extraction_through_onnxruntime(tmp_path, image_folder, tiny_model, capsys):
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model)
    out = tmp_path / "deploy.onnx"
    assert main(["export", "--onnx", str(out), "--model", str(ckpt)]) == 0
    assert "wrote" in capsys.readouterr().out
    paths = sorted(image_folder.rglob("*.jpg"))
    expected = extract(tiny_model, paths, scales=(0.7071, 1.0), progress=False, device="cpu")
    got = extract(OnnxRuntimeModel(out), paths, scales=(0.7071, 1.0), progress=False, device="cpu")
    assert cosines(got, expected).min() > 0.9999
    # every command that takes --model takes the exported file too
    loaded = load_model(out)
    assert isinstance(loaded, OnnxRuntimeModel) and loaded.config == tiny_model.config
    assert cosines(extract(loaded, paths, scales=(1.0,), progress=False), extract(tiny_model, paths, scales=(1.0,), progress=False)).min() > 0.9999
