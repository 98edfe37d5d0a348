"""The command line: help and argument errors load none of the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "faiss", "timm", "fastapi", "onnxruntime")

# Runs every command's --help and one argument error in a fresh interpreter, then reports which
# heavy top-level packages that loaded.
PROBE = """
import json, sys
from cfcd.cli import COMMANDS, main
for argv in [["--help"], *([name, "--help"] for name in COMMANDS), ["eval", "--images", "x", "--no-such-option"]]:
    try:
        main(argv)
    except SystemExit:
        pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(%r))))
""" % (HEAVY,)


def test_help_and_argument_errors_do_not_import_torch():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert "unrecognized arguments: --no-such-option" in done.stderr


def test_import_cfcd_is_light_and_names_load_on_use():
    code = "import sys, cfcd; light = 'torch' not in sys.modules; cfcd.load_model; print(light, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True"]


def test_every_command_registers_its_arguments(capsys):
    from cfcd.cli import COMMANDS, main

    for name in COMMANDS:
        try:
            main([name, "--help"])
        except SystemExit as done:
            assert done.code == 0
        assert f"usage: cfcd {name}" in capsys.readouterr().out


def test_index_from_features_refuses_extraction_options(tmp_path, capsys):
    # A features directory is extracted already: options that only change extraction are
    # refused with what the descriptors were made with, never silently ignored.
    import numpy as np

    from cfcd.cli import main

    feats = tmp_path / "feats"
    feats.mkdir()
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    np.save(feats / "shard-00000.npy", x / np.linalg.norm(x, axis=1, keepdims=True))
    manifest = {"format": "cfcd-features", "version": 1, "model": {"name": "made-here", "config": {"backbone": "x"}, "dim": 8},
                "scales": [1.0], "max_side": None, "dtype": "float32", "count": 4, "ids": [f"i{k}" for k in range(4)],
                "shards": [{"file": "shard-00000.npy", "start": 0, "count": 4}], "failed": []}
    (feats / "manifest.json").write_text(json.dumps(manifest))
    for extra in (["--model", "mobilenet_v2-imagenet"], ["--scales", "1,2"], ["--device", "cpu", "--max-side", "256"]):
        assert main(["index", "build", str(tmp_path / "idx"), str(feats), *extra]) == 2
        err = capsys.readouterr().err
        assert "extracted already, with model 'made-here'" in err and extra[0] in err and "would change nothing" in err
    assert not (tmp_path / "idx").exists()
    assert main(["index", "build", str(tmp_path / "idx"), str(feats)]) == 0
    assert main(["index", "add", str(tmp_path / "idx"), str(feats), "--scales", "1"]) == 2
    assert "--scales would change nothing" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback_and_a_user_error_is_one_line(monkeypatch, capsys, tmp_path):
    """Only the project's own errors (cfcd.errors) become one-line messages: a KeyError, a
    RuntimeError or a ValueError of a bug inside a command reaches the user with its traceback."""
    import pytest

    import cfcd.cli.weights
    from cfcd.cli import main
    from cfcd.errors import ConfigError

    def bug(args):
        return {}["missing"]

    monkeypatch.setattr(cfcd.cli.weights, "list_models", bug)
    with pytest.raises(KeyError, match="missing"):
        main(["weights", "list"])
    monkeypatch.setattr(cfcd.cli.weights, "list_models", lambda args: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["weights", "list"])

    def told(args):  # a builtin raised by a `raise` statement is a bug too, however it reads
        raise ValueError("--x 3: expected 1")

    monkeypatch.setattr(cfcd.cli.weights, "list_models", told)
    with pytest.raises(ValueError, match="expected 1"):
        main(["weights", "list"])
    monkeypatch.setattr(cfcd.cli.weights, "list_models", lambda args: (_ for _ in ()).throw(ConfigError("--x 3: expected 1")))
    assert main(["weights", "list"]) == 2
    assert capsys.readouterr().err == "cfcd weights: error: --x 3: expected 1\n"
    # a user error of a real command, end to end: one line, exit status 2
    done = subprocess.run([sys.executable, "-m", "cfcd", "extract", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"cfcd extract: error: {tmp_path / 'nowhere'}: neither a folder of images nor a list file"]


def test_a_builtin_raised_in_the_library_keeps_its_traceback(monkeypatch, capsys, tmp_path):
    """No module is exempt (the transitional list of unconverted modules is gone): a builtin
    ValueError raised by a `raise` statement in the library, here a module at
    cfcd/index/index.py, keeps its traceback; the same message as a cfcd.errors type is one line."""
    import importlib.util

    import pytest

    import cfcd.cli.weights
    from cfcd.cli import main

    path = tmp_path / "cfcd" / "index" / "index.py"
    path.parent.mkdir(parents=True)
    path.write_text("from cfcd.errors import NotFound\n\n\n"
                    "def builtin(args):\n    raise ValueError('index x: not a cfcd index')\n\n\n"
                    "def own(args):\n    raise NotFound('index x: not a cfcd index')\n")
    spec = importlib.util.spec_from_file_location("old_index", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(cfcd.cli.weights, "list_models", module.builtin)
    with pytest.raises(ValueError, match="not a cfcd index"):
        main(["weights", "list"])
    monkeypatch.setattr(cfcd.cli.weights, "list_models", module.own)
    assert main(["weights", "list"]) == 2
    assert capsys.readouterr().err == "cfcd weights: error: index x: not a cfcd index\n"


def test_train_help_lists_the_registered_heads_terms_and_samplers(capsys):
    from cfcd.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "heads (stageN.head) madacos, arcface" in text
    assert "samplers (stageN.sampler) shuffle, tuples, balanced" in text
