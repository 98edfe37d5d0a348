"""--runtime: an index built with one runtime is searched with the other, with the same results,
and what it stores about the model does not depend on the runtime."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")

from cfcd.cli import main  # noqa: E402
from cfcd.model import load_model, save_checkpoint  # noqa: E402

SETTINGS = ["--max-side", "0", "--scales", "0.7071,1"]


def search(capsys, index, queries, engine) -> list[list[dict]]:
    assert main(["search", str(index), *map(str, queries), "-k", "6", "--json", "--runtime", engine]) == 0
    return [q["results"] for q in json.loads(capsys.readouterr().out)]


def info(capsys, index) -> dict:
    assert main(["index", "info", str(index), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_an_index_built_with_one_runtime_is_searched_with_the_other(tmp_path, monkeypatch, image_folder, capsys):
    # Pretrained weights as a checkpoint file (what training writes): descriptors that tell the
    # images apart, so the ranking is a real one and not a tie that rounding could reorder.
    monkeypatch.setenv("CFCD_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "trained.pt"
    save_checkpoint(ckpt, load_model("mobilenet_v2-imagenet"))
    built = {}
    for engine in ("torch", "onnx"):
        built[engine] = tmp_path / f"built-with-{engine}"
        assert main(["index", "build", str(built[engine]), str(image_folder), "--model", str(ckpt), *SETTINGS,
                     "--runtime", engine]) == 0
    capsys.readouterr()
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
    described = [info(capsys, built[e]) for e in ("torch", "onnx")]
    for key in ("model", "settings", "dim"):
        assert described[0][key] == described[1][key]

    queries = sorted(image_folder.rglob("*.jpg"))[:3]
    reference = search(capsys, built["torch"], queries, "torch")
    for index, engine in [(built["torch"], "onnx"), (built["onnx"], "torch"), (built["onnx"], "auto")]:
        got = search(capsys, index, queries, engine)
        for want, have in zip(reference, got):
            assert [h["path"] for h in have] == [h["path"] for h in want]
            assert max(abs(a["score"] - b["score"]) for a, b in zip(have, want)) < 1e-4
    # each query is indexed: found first, its neighbours ranked by clearly different scores
    assert [r[0]["path"] for r in reference] == [str(q) for q in queries]
    assert all(r[0]["score"] - r[1]["score"] > 1e-3 for r in reference)


def test_runtime_onnx_without_onnxruntime_says_how_to_install_it(tmp_path, monkeypatch, image_folder, tiny_model, capsys):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as if it were not installed
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model)
    assert main(["extract", str(image_folder), "-o", str(tmp_path / "f"), "--model", str(ckpt), "--runtime", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("cfcd extract: error: --runtime onnx: onnxruntime is not installed; pip install 'cfcd[onnx]' "
                   "(or onnx onnxruntime), or use --runtime torch")
