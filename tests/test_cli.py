"""The command line: help and argument errors load none of the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

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
