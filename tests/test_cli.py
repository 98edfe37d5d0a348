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
