"""Every file that is not indexed is reported with its own reason (command line, manifest,
Python API), and a NaN query box is a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import cfcd
from probes import encoded, picture

from samples import png_canvas

from cfcd.settings import ExtractionSettings, Runtime

REASONS = {
    "huge.png": "100000000 pixels exceeds the limit",
    "cut.jpg": "corrupt or truncated image data",
    "folder.jpg": "is a directory",
    # Indexing skips extracting a copy and says so; `cfcd extract` reads every file.
    "copy-of-cut.jpg": ("same bytes as", "corrupt or truncated image data"),
    "notes.jpg": "not an image format Pillow can read",
}


@pytest.fixture
def awkward(tmp_path, collection) -> Path:
    """A list file naming two good photos and one of each kind of unreadable input."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "huge.png").write_bytes(png_canvas(10000, 10000))  # 100 Mpx declared in a few bytes
    jpeg = encoded(picture((200, 150)), "JPEG")
    (root / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    shutil.copy(root / "cut.jpg", root / "copy-of-cut.jpg")
    (root / "folder.jpg").mkdir()
    (root / "notes.jpg").write_text("not a picture")
    good = sorted(collection.glob("*.png"))[:2]
    names = [*map(str, good), *(str(root / n) for n in ["huge.png", "cut.jpg", "folder.jpg", "copy-of-cut.jpg", "notes.jpg"])]
    (root / "list.txt").write_text("\n".join(names) + "\n")
    return root / "list.txt"


def check_reasons(lines: list[str], root: Path) -> None:
    """One line per unreadable input, naming it and its own cause."""
    for name, cause in REASONS.items():
        mine = [line for line in lines if line.startswith(f"skipped unreadable image: {root / name}:")]
        causes = cause if isinstance(cause, tuple) else (cause,)
        assert len(mine) == 1 and any(c in mine[0] for c in causes), (name, lines)


def test_index_build_reports_each_skipped_file(awkward, tiny_checkpoint, tmp_path):
    res = cfcd("index", "build", tmp_path / "idx", awkward, "--model", tiny_checkpoint, "--scales", "1")
    assert res.returncode == 0, res.stderr
    assert "added 2 images" in res.stdout and "5 unreadable" in res.stdout and "already indexed" not in res.stdout
    check_reasons([line for line in res.stdout.splitlines() if line.startswith("skipped")], awkward.parent)


def test_extract_manifest_and_features_build_keep_the_reasons(awkward, tiny_checkpoint, tmp_path):
    res = cfcd("extract", awkward, "-o", tmp_path / "feats", "--model", tiny_checkpoint, "--scales", "1")
    assert res.returncode == 0, res.stderr
    check_reasons([line for line in res.stdout.splitlines() if line.startswith("skipped")], awkward.parent)
    manifest = json.loads((tmp_path / "feats" / "manifest.json").read_text())
    assert len(manifest["failed"]) == 5 and set(manifest["errors"]) == {str(r) for r in manifest["failed"]}
    built = cfcd("index", "build", tmp_path / "idx", tmp_path / "feats")
    assert built.returncode == 0, built.stderr
    assert "added 2 images" in built.stdout and "5 unreadable" in built.stdout
    check_reasons([line for line in built.stdout.splitlines() if line.startswith("skipped")], awkward.parent)


def test_api_report_has_the_reasons(awkward, tiny_checkpoint):
    from cfcd.index import Index, add_images
    from cfcd.model import load_model

    model = load_model(tiny_checkpoint)
    index = Index(model.output_dim)
    paths = awkward.read_text().split()
    report = add_images(index, model, paths, ExtractionSettings((1.0,), max_side=None), Runtime(progress=False))
    assert len(report.added) == 2 and not report.repeated and not report.duplicates
    check_reasons([f"skipped unreadable image: {why}" for why in report.failed.values()], awkward.parent)


def test_nan_box_is_a_clear_error(tiny_index, collection):
    query = sorted(collection.glob("*.png"))[0]
    res = cfcd("search", tiny_index, query, "--bbox", "nan,0,10,10")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--bbox" in res.stderr and "finite" in res.stderr and "cannot convert" not in res.stderr
