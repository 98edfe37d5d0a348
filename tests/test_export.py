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
from cfcd.settings import ExtractionSettings, Runtime  # noqa: E402


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50", "efficientnet_lite0"])
def test_onnxruntime_matches_pytorch_at_several_sizes(tmp_path, backbone):
    """Odd and even sides: EfficientNet-Lite's padding depends on each side's parity."""
    from cfcd.model import CFCDNet, ModelConfig
    from refmodels import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(CFCDNet(ModelConfig(backbone=backbone, dim=32)))
    path = export_onnx(model, tmp_path / "m.onnx", example_size=(64, 64))
    ort_model = OnnxRuntimeModel(path)
    assert ort_model.output_dim == 32 and ort_model.config == model.config
    for shape in [(1, 3, 64, 64), (3, 3, 97, 130), (2, 3, 160, 72)]:
        x = torch.rand(*shape)
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
    settings, rt = ExtractionSettings((0.7071, 1.0), max_side=None), Runtime(device="cpu", progress=False)
    expected = extract(tiny_model, paths, settings, rt)
    got = extract(OnnxRuntimeModel(out), paths, settings, rt)
    assert cosines(got, expected).min() > 0.9999
    # every command that takes --model takes the exported file too
    loaded = load_model(out)
    assert isinstance(loaded, OnnxRuntimeModel) and loaded.config == tiny_model.config
    one = ExtractionSettings((1.0,), max_side=None)
    assert cosines(extract(loaded, paths, one, rt), extract(tiny_model, paths, one, rt)).min() > 0.9999


def test_an_export_from_before_normalisation_moved_into_the_model(tmp_path, tiny_model):
    """Older files take ImageNet-normalised input and lack ``cfcd.input``: normalised for them."""
    import onnx

    path = export_onnx(tiny_model, tmp_path / "new.onnx", example_size=(64, 64))
    graph = onnx.load(path)
    assert {p.key: p.value for p in graph.metadata_props}["cfcd.input"] == "rgb01"
    # Rebuild an old-style file: the backbone graph without the model's normalisation in front.
    class Old(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.config = net, net.config

        def forward(self, x):
            return self.net.head(self.net.backbone(x))

    old = tmp_path / "old.onnx"
    export_onnx(Old(tiny_model), old, example_size=(64, 64))
    graph = onnx.load(old)
    kept = [p for p in graph.metadata_props if p.key != "cfcd.input"]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    onnx.save(graph, old)
    x = torch.rand(2, 3, 64, 80)
    with torch.inference_mode():
        expected = tiny_model(x).numpy()
    assert cosines(OnnxRuntimeModel(old)(x).numpy(), expected).min() > 0.9999
