"""docs/architecture.md points at files and names that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "cfcd"


def defined_names(path: Path) -> set[str]:
    """Top-level functions, classes and assigned names of a module."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


@pytest.mark.parametrize("heading, least", [("## Where each formula lives", 15), ("## The engine contract", 6)])
def test_table_names_exist(heading, least):
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split(heading)[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) > least
    for row in rows:
        files, names = [cell.strip() for cell in row.strip().strip("|").split("|")][1:3]
        paths = [SRC / f for f in re.findall(r"`([^`]+\.py)`", files)]
        assert paths and all(p.is_file() for p in paths), row
        defined = set().union(*(defined_names(p) for p in paths))
        for name in re.findall(r"`([^`]+)`", names):
            assert name in defined, f"{name} not defined in {files.strip()}"


def test_every_path_mentioned_exists():
    text = (ROOT / "docs" / "architecture.md").read_text()
    for rel in re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", text):
        if "<" in rel:
            continue
        assert (SRC / rel).is_file() or (ROOT / "tests" / rel).is_file() or (ROOT / rel).is_file(), rel
    for folder in re.findall(r"`([a-z_]+/)`", text):
        assert (SRC / folder).is_dir() or (ROOT / folder).is_dir(), folder


def test_each_registration_names_a_registry_of_the_file_it_cites():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Adding things")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) >= 6
    for row in rows:
        registration = [cell.strip() for cell in row.strip().strip("|").split("|")][2]
        paths = [SRC / f for f in re.findall(r"`([^`]+\.py)`", registration)]
        names = {m for token in re.findall(r"`([^`]+)`", registration) for m in re.findall(r"^([A-Z_]+)\b", token)}
        assert paths and names, row
        defined = set().union(*(defined_names(p) for p in paths))
        assert names <= defined, f"{names - defined} not defined in {[str(p) for p in paths]}"
