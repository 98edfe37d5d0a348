"""pyproject.toml declares only what exists."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_data_pattern_names_files():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package, patterns in config["tool"]["setuptools"]["package-data"].items():
        base = ROOT / "src" / package.replace(".", "/")
        empty = [p for p in patterns if not any(f.is_file() for f in base.glob(p))]
        assert not empty, f"package data of {package} that matches no file: {empty}"
