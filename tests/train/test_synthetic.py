"""Synthetic identities from unlabelled photos (cfcd.train.synthetic, cfcd data synthesize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cfcd.cli import main
from cfcd.train.config import DataConfig
from cfcd.train.datasets import read_samples
from cfcd.train.synthetic import make_identities, perspective_warp, photometry


def _photo(path, seed, size=(120, 90)):
    """A smooth picture with structure (gradients and blocks), not noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]] / max(size)
    arr = np.stack([x, y, (x + y) / 2], -1) * 200
    for _ in range(6):
        x0, y0 = rng.integers(0, size[0] - 20), rng.integers(0, size[1] - 20)
        arr[y0:y0 + 20, x0:x0 + 20] = rng.integers(0, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def test_classes_of_views_are_written_reproducibly(tmp_path):
    photos = [_photo(tmp_path / "in" / f"p{i}.png", i) for i in range(2)]
    folders = make_identities(photos, tmp_path / "a", views=4, size=64, seed=1)
    assert [f.name for f in folders] == ["0000-p0", "0001-p1"]
    for folder in folders:
        files = sorted(folder.glob("*.jpg"))
        assert [f.name for f in files] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
        assert all(max(Image.open(f).size) == 64 for f in files)
    # view 0 is the photo itself; the others differ from it
    photo = np.asarray(Image.open(photos[0]).convert("RGB").resize((64, 48)), np.float32)
    views = [np.asarray(Image.open(folders[0] / f"{k}.jpg"), np.float32) for k in range(4)]
    assert np.abs(views[0] - photo).mean() < 4
    assert all(v.shape != photo.shape or np.abs(v - photo).mean() > 8 for v in views[1:])
    # same seed, same bytes; another seed, other views
    again = make_identities(photos, tmp_path / "b", views=4, size=64, seed=1)
    other = make_identities(photos, tmp_path / "c", views=4, size=64, seed=2)
    assert all((a / "2.jpg").read_bytes() == (b / "2.jpg").read_bytes() for a, b in zip(folders, again))
    assert (folders[0] / "2.jpg").read_bytes() != (other[0] / "2.jpg").read_bytes()
    # training reads it as a folder per class
    samples = read_samples(DataConfig(train=str(tmp_path / "a")))
    assert len(samples.paths) == 8 and len(samples.classes) == 2


def test_perspective_warp_moves_the_corners_inwards(tmp_path):
    img = Image.open(_photo(tmp_path / "p.png", 0)).convert("RGB")
    same = perspective_warp(img, torch.Generator().manual_seed(0), warp=0.0)
    assert np.abs(np.asarray(same, np.float32) - np.asarray(img, np.float32)).max() <= 1
    warped = np.asarray(perspective_warp(img, torch.Generator().manual_seed(0), warp=0.3), np.float32)
    assert warped.shape == np.asarray(img).shape and np.abs(warped - np.asarray(img, np.float32)).mean() > 5


def test_night_views_are_dark_and_blue(tmp_path):
    img = Image.open(_photo(tmp_path / "p.png", 0)).convert("RGB")
    base = np.asarray(img, np.float32)
    outs = [np.asarray(photometry(img, torch.Generator().manual_seed(s)), np.float32) for s in range(12)]
    night = [o for o in outs if o.mean() < 0.6 * base.mean()]
    assert 1 <= len(night) <= 10  # about one in three
    assert all(o[..., 2].mean() / base[..., 2].mean() > o[..., 0].mean() / base[..., 0].mean() for o in night)


def test_cli(tmp_path, capsys):
    for i in range(3):
        _photo(tmp_path / "in" / f"p{i}.png", i)
    assert main(["data", "synthesize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--views", "3",
                 "--size", "48"]) == 0
    assert "3 classes x 3 images" in capsys.readouterr().out
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 9


@pytest.mark.parametrize("extra, message", [
    (["--views", "1"], "at least two images"), (["--warp", "0.6"], "warp = 0.6")])
def test_cli_errors(tmp_path, capsys, extra, message):
    for i in range(2):
        _photo(tmp_path / "in" / f"p{i}.png", i)
    assert main(["data", "synthesize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unreadable_photo_is_named_before_anything_is_written(tmp_path, capsys):
    good = _photo(tmp_path / "in" / "good.png", 0)
    bad = tmp_path / "in" / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["data", "synthesize", str(good), str(bad), "-o", str(tmp_path / "out")]) == 2
    assert "bad.jpg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_unsupervised_recipe_reads_a_synthesized_folder(tmp_path):
    from cfcd.train.config import load_config

    for i in range(2):
        _photo(tmp_path / "in" / f"p{i}.png", i)
    make_identities(sorted((tmp_path / "in").glob("*.png")), tmp_path / "synth", views=3, size=48)
    cfg = load_config("unsupervised-mobilenet", [f"data.train={tmp_path / 'synth'}"])
    assert cfg.model.backbone == "mobilenet_v2" and cfg.stage1.head_init == "pca"
    samples = read_samples(cfg.data)
    assert len(samples.paths) == 6 and len(samples.classes) == 2
