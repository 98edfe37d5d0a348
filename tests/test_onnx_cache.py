"""The ONNX graph cache: one export per model identity, reused, rebuilt when the weights change,
and refused (with one warning, PyTorch instead) when it disagrees with PyTorch."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from cfcd.errors import ConfigError, MismatchError, Unavailable  # noqa: E402
from cfcd.export import export_onnx  # noqa: E402
from cfcd.extraction import extract  # noqa: E402
from cfcd.model import CFCDNet, ModelConfig  # noqa: E402
from cfcd.model.concat import ConcatNet  # noqa: E402
from cfcd.model.onnx import OnnxRuntimeModel  # noqa: E402
from cfcd.onnx_cache import GraphRefused, cached_graph, graph_key, min_cosine  # noqa: E402
from cfcd.settings import ExtractionSettings, Runtime  # noqa: E402

ONE_SCALE = ExtractionSettings((1.0,), max_side=None)


def runtime(engine: str) -> Runtime:
    return Runtime(device="cpu", progress=False, engine=engine)


def graphs(directory) -> dict[str, tuple[int, int]]:
    """The cached graphs: file name -> (inode, modification time in ns), which an export changes."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(directory.glob("*.onnx"))}


def test_the_graph_is_reused_for_the_same_weights_and_rebuilt_when_they_change(tmp_path, monkeypatch, tiny_model, image_folder):
    monkeypatch.setenv("CFCD_CACHE", str(tmp_path))
    paths = sorted(image_folder.rglob("*.jpg"))
    first = extract(tiny_model, paths, ONE_SCALE, runtime("onnx"))
    exported = graphs(tmp_path / "onnx")
    assert len(exported) == 1
    np.testing.assert_allclose(first, extract(tiny_model, paths, ONE_SCALE, runtime("torch")), atol=1e-5)

    # Another process loading the same weights (a fresh object: nothing held in memory) reuses the file.
    twin = copy.deepcopy(tiny_model)
    np.testing.assert_allclose(extract(twin, paths, ONE_SCALE, runtime("onnx")), first, atol=1e-6)
    assert graphs(tmp_path / "onnx") == exported

    # Weights changed in place (a training step, a load): a new graph, whose descriptors follow them.
    with torch.no_grad():
        tiny_model.fc.bias.copy_(torch.randn_like(tiny_model.fc.bias))
    changed = extract(tiny_model, paths, ONE_SCALE, runtime("onnx"))
    now = graphs(tmp_path / "onnx")
    assert len(now) == 2 and {k: now[k] for k in exported} == exported
    np.testing.assert_allclose(changed, extract(tiny_model, paths, ONE_SCALE, runtime("torch")), atol=1e-5)
    assert np.abs(changed - first).max() > 1e-2


def test_the_key_names_the_weights_and_the_config(tiny_model):
    same = copy.deepcopy(tiny_model)
    assert graph_key(same) == graph_key(tiny_model)
    with torch.no_grad():
        next(same.parameters())[0].add_(1e-6)
    assert graph_key(same) != graph_key(tiny_model)
    torch.manual_seed(0)
    other_dim = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=16)).eval()
    assert graph_key(other_dim) != graph_key(tiny_model)


def test_a_graph_that_disagrees_with_pytorch_is_refused_with_one_warning(tmp_path, monkeypatch, tiny_model, image_folder, caplog):
    monkeypatch.setenv("CFCD_CACHE", str(tmp_path))
    root = tmp_path / "onnx"
    cached_graph(tiny_model)  # exported and accepted
    (path,) = root.glob("*.onnx")
    verdict = path.with_suffix(".json")
    assert json.loads(verdict.read_text())["accepted"] is True
    # Another model's graph under this model's key: a real graph that runs, with other descriptors.
    torch.manual_seed(1)
    export_onnx(CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=32)).eval(), path, example_size=(64, 64))

    model = copy.deepcopy(tiny_model)
    paths = sorted(image_folder.rglob("*.jpg"))
    with caplog.at_level(logging.WARNING, logger="cfcd.extraction"):
        got = extract(model, paths, ONE_SCALE, runtime("auto"))
        extract(model, paths, ONE_SCALE, runtime("auto"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "disagrees with PyTorch" in warnings[0] and str(path) in warnings[0] and "extracting with PyTorch" in warnings[0]
    np.testing.assert_array_equal(got, extract(model, paths, ONE_SCALE, runtime("torch")))

    # The refusal is remembered on disk: it is not checked again, the file is not replaced.
    stored = json.loads(verdict.read_text())
    assert stored["accepted"] is False and stored["min_cosine"] < 0.9999
    before = graphs(root), verdict.stat().st_mtime_ns
    with pytest.raises(GraphRefused, match="disagrees with PyTorch"):
        cached_graph(tiny_model)
    assert (graphs(root), verdict.stat().st_mtime_ns) == before
    # --runtime onnx asked for onnxruntime: a one-line error, not a silent switch.
    model = copy.deepcopy(tiny_model)
    with pytest.raises(MismatchError, match="to export again"):
        extract(model, paths, ONE_SCALE, runtime("onnx"))
    # A file that does not run at all (truncated) is refused too, not a crash.
    path.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(GraphRefused, match="does not run"):
        cached_graph(tiny_model)


def test_a_concatenation_runs_as_one_graph(tmp_path, tiny_model):
    torch.manual_seed(2)
    other = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=16)).eval()
    both = ConcatNet([tiny_model, other]).eval()
    graph = cached_graph(both, directory=tmp_path)
    assert isinstance(graph, OnnxRuntimeModel) and graph.config == both.config and graph.output_dim == 48
    assert min_cosine(graph, both) > 0.99999


def test_the_graph_runs_without_busy_waiting_threads(tmp_path, tiny_model):
    """onnxruntime's spinning threads took the cores the decode thread and PyTorch needed (a
    2-core build ran the network 1.4x slower): the session turns spinning off."""
    options = cached_graph(tiny_model, directory=tmp_path, threads=2).session.get_session_options()
    assert options.intra_op_num_threads == 2
    for entry in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert options.get_session_config_entry(entry) == "0"


def test_a_cached_graph_is_used_without_importing_onnx(tmp_path, tiny_model):
    """Importing the onnx package costs 0.7 s of start-up; only an export needs it."""
    import subprocess
    import sys

    from cfcd.model.checkpoint import atomic_save, make_checkpoint

    atomic_save(make_checkpoint(tiny_model), tmp_path / "tiny.pt")
    script = ("import sys, torch; from cfcd import load_model; from cfcd.onnx_cache import cached_graph; "
              f"cached_graph(load_model({str(tmp_path / 'tiny.pt')!r}).eval(), directory={str(tmp_path / 'graphs')!r}); "
              "print('onnx' in sys.modules)")
    first, second = (subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
                     for _ in range(2))
    assert (first.split()[-1], second.split()[-1]) == ("True", "False")  # exported once, then only loaded


def test_runtime_errors_name_the_value_and_the_remedy(monkeypatch, tiny_model, image_folder):
    paths = sorted(image_folder.rglob("*.jpg"))[:1]
    with pytest.raises(ConfigError, match="runs on the CPU in float32; drop --amp"):
        extract(tiny_model, paths, ONE_SCALE, Runtime(device="cpu", progress=False, engine="onnx", amp=True))
    with pytest.raises(ConfigError, match="'fast'.*choose one of auto, torch, onnx"):
        Runtime(engine="fast")
    monkeypatch.setenv("CFCD_RUNTIME", "gpu")
    with pytest.raises(ConfigError, match=r"'gpu' \(from \$CFCD_RUNTIME\)"):
        extract(tiny_model, paths, ONE_SCALE, Runtime(device="cpu", progress=False))
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(Unavailable, match="onnxruntime is not installed; pip install 'cfcd\\[onnx\\]'"):
        extract(tiny_model, paths, ONE_SCALE, runtime("onnx"))
    # auto without onnxruntime: PyTorch, silently
    assert extract(tiny_model, paths, ONE_SCALE, runtime("auto")).shape == (1, 32)


def test_the_least_recently_used_graphs_are_evicted_beyond_the_size_limit(tmp_path, tiny_model):
    """Three models, room for two graphs: an export evicts the graph used longest ago, and a use
    (not only an export) counts as recent."""
    from cfcd.onnx_cache import evict

    def variant(seed):
        model = copy.deepcopy(tiny_model)
        with torch.no_grad():
            model.fc.bias.copy_(torch.randn(model.fc.bias.shape, generator=torch.Generator().manual_seed(seed)))
        return model

    a, b, c = variant(1), variant(2), variant(3)
    cached_graph(a, directory=tmp_path)
    one = sum(p.stat().st_size for p in tmp_path.iterdir())
    room = int(2.5 * one)  # two graphs fit, three do not
    cached_graph(b, directory=tmp_path, max_bytes=room)
    assert sorted(p.stem for p in tmp_path.glob("*.onnx")) == sorted([graph_key(a), graph_key(b)])
    cached_graph(a, directory=tmp_path, max_bytes=room)  # a used again: b is now the oldest
    cached_graph(c, directory=tmp_path, max_bytes=room)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{graph_key(m)}.{ext}" for m in (a, c) for ext in ("onnx", "json"))
    # The graph just exported stays even when it alone is over the limit.
    assert evict(tmp_path, keep=graph_key(c), max_bytes=0) == [graph_key(a)]
    assert sorted(p.stem for p in tmp_path.iterdir()) == [graph_key(c)] * 2
