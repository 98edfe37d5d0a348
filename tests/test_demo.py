"""cfcd demo end to end on a tiny folder with a tiny random model, and its scoring."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cfcd import demo
from cfcd.cli import main
from cfcd.model import save_checkpoint
from cfcd.settings import ExtractionSettings, Runtime

from samples import make_image

SMALL = ExtractionSettings((1.0,), max_side=64)
QUIET = Runtime(progress=False)


def page_rows(page: str) -> list[list[str]]:
    """The image names of each row of the results page, query first."""
    rows = re.findall(r'<div class="row">(.*?)</div>', page)
    return [re.findall(r'alt="([^"]+)"', row) for row in rows]


def test_cli_demo_on_a_grouped_folder(image_folder, tiny_model, tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model)
    out = tmp_path / "out"
    args = ["demo", "--images", str(image_folder), "--model", str(ckpt), "-o", str(out),
            "--scales", "1", "--max-side", "64", "--top-k", "3", "--workers", "0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert re.search(r"mAP \d+\.\d\d  recall@1 \d+\.\d\d", printed)
    assert "results page:" in printed

    result = demo.run(tiny_model, image_folder, out, SMALL, top_k=3, runtime=QUIET)
    names = [str(p.relative_to(image_folder)) for p in result.paths]
    assert result.groups == [n.split("/")[0] for n in names]
    assert result.queries == [0, 3]  # the first image of g0 and of g1
    rows = page_rows(result.page.read_text())
    expected = [[names[q]] + [names[j] for j in result.ranks[:, q] if j != q][:3] for q in result.queries]
    assert rows == expected
    for src in re.findall(r'src="([^"]+)"', result.page.read_text()):
        assert (out / src).is_file()


def test_demo_ranks_by_similarity_and_scores_leave_one_out(image_folder, tiny_model, tmp_path):
    result = demo.run(tiny_model, image_folder, tmp_path / "out", SMALL, runtime=QUIET)
    sims = result.descriptors.astype(np.float64) @ result.descriptors.astype(np.float64).T
    for q in range(len(result.paths)):
        assert np.all(np.diff(sims[result.ranks[:, q], q]) <= 1e-12)
    assert 0.0 <= result.mean_ap <= 1.0 and result.n_scored == 6


def test_flat_folder_shows_neighbours_without_map(tmp_path, tiny_model):
    root = tmp_path / "flat"
    for i in range(4):
        make_image(root / f"p{i}.png", seed=10 + i)
    result = demo.run(tiny_model, root, tmp_path / "out", SMALL, runtime=QUIET)
    assert result.groups is None and result.mean_ap is None
    assert "no groups" in demo.format_table(result, root)
    assert len(page_rows(result.page.read_text())) == 4


def test_default_collection_is_grouped_views_of_bundled_photos(tmp_path):
    pytest.importorskip("skimage")
    root = demo.build_default_collection(tmp_path / "collection")
    paths, groups = demo.folder_groups(root)
    assert set(groups) == set(demo.DEFAULT_PHOTOS)
    assert all(groups.count(g) == 4 for g in demo.DEFAULT_PHOTOS)
    assert "public domain" in (root / "SOURCES.txt").read_text()
