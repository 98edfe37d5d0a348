"""Duplicate groups and "more like this" from stored descriptors: the library (blocks of any
size give the same groups; no chaining; tiers from real files' pixels) and the commands
(`cfcd duplicates`, `cfcd search --id`)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from cfcd.index import Index
from cfcd.index.duplicates import DEFAULT_THRESHOLD, near_duplicates, same_group_pairs
from cfcd.index.neighbours import UnknownImage, neighbour_blocks, similar
from samples import scene

# Three scenes of 4, 3 and 2 photos (a base vector plus small noise) and 11 unrelated photos.
SCENES = (4, 3, 2)


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    rng = np.random.default_rng(0)
    rows, names = [], []
    for s, size in enumerate(SCENES):
        base = rng.normal(size=64)
        rows += [base + 0.15 * rng.normal(size=64) for _ in range(size)]
        names += [f"scene{s}/{n}.jpg" for n in range(size)]
    rows += list(rng.normal(size=(11, 64)))
    names += [f"single/{n}.jpg" for n in range(11)]
    index = Index.build(unit(np.array(rows)), names)
    root = tmp_path_factory.mktemp("dup") / "idx"
    index.save(root)
    return root, Index.load(root)


def scenes_of(index, groups) -> list[list[str]]:
    recs = index.records([i for g in groups for i in g.ids])
    return [sorted(recs[i].path for i in g.ids) for g in groups]


def test_groups_are_the_scenes_whatever_the_block(collection):
    _, index = collection
    want = [[f"scene{s}/{n}.jpg" for n in range(size)] for s, size in enumerate(SCENES)]
    for block in (1, 3, 1024):
        groups = near_duplicates(index, threshold=0.8, k=3, block=block)
        assert scenes_of(index, groups) == want, block
        assert all(0.8 <= g.min_score < 1 for g in groups)
    # Chaining: with 1 neighbour per image the 4-photo scene still forms one group.
    assert scenes_of(index, near_duplicates(index, threshold=0.8, k=1)) == want
    assert near_duplicates(index, threshold=1.0) == []
    assert len(same_group_pairs(near_duplicates(index, threshold=0.8))) == 6 + 3 + 1


def test_groups_do_not_chain():
    # A-B at 0.82, B-C at 0.8, A-C at 0.31: single linkage made one group of the three; a photo
    # now joins only a group it is close to as a whole.
    plane = np.array([[np.cos(t), np.sin(t)] for t in (0, np.arccos(0.82), np.arccos(0.82) + np.arccos(0.8))])
    rows = np.zeros((13, 64))
    rows[:3, :2] = plane
    rows[3:, 2:] = np.random.default_rng(1).normal(size=(10, 62))
    index = Index.build(unit(rows), [f"{n}.jpg" for n in range(13)])
    groups = near_duplicates(index, threshold=0.75)
    assert [(g.ids, g.tier) for g in groups] == [([0, 1], "similar")]
    assert groups[0].pairs == [(0, 1, "similar", pytest.approx(0.82, abs=1e-5))]


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """Real files: a photo, its exact copies (a PNG re-save, a PNG stored rotated with an EXIF
    orientation tag), its near copies (resized, cropped, brighter), another shot of the same
    scene (moved along and with a passer-by), and an unrelated photo with its PNG re-save.
    Descriptors are made up: the first seven nearly equal (the model cannot tell them apart),
    so the pixels must; the last two nearly equal too."""
    folder = tmp_path_factory.mktemp("copies")
    view = scene(0)
    photo = view.crop((0, 0, 320, 240))
    photo.save(folder / "photo.jpg", quality=92)
    upright = Image.open(folder / "photo.jpg").convert("RGB")
    upright.save(folder / "copy.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "rotated.png", exif=exif)
    os.utime(folder / "rotated.png", (os.stat(folder / "copy.png").st_mtime + 60,) * 2)
    upright.resize((192, 144), Image.Resampling.LANCZOS).save(folder / "small.jpg", quality=80)
    upright.crop((10, 8, 302, 226)).save(folder / "cropped.jpg", quality=90)
    ImageEnhance.Brightness(upright).enhance(1.2).save(folder / "brighter.jpg", quality=90)
    other_shot = view.crop((80, 50, 400, 290))
    ImageDraw.Draw(other_shot).rectangle((100, 60, 160, 200), fill=(240, 230, 20))
    other_shot.save(folder / "other-shot.jpg", quality=92)
    scene(1).crop((0, 0, 320, 240)).save(folder / "unrelated.jpg", quality=92)
    Image.open(folder / "unrelated.jpg").save(folder / "unrelated.png")
    names = ["photo.jpg", "copy.png", "rotated.png", "small.jpg", "cropped.jpg", "brighter.jpg", "other-shot.jpg",
             "unrelated.jpg", "unrelated.png"]
    rng = np.random.default_rng(2)
    near = lambda v: v + 0.005 * np.linalg.norm(v) * unit(rng.normal(size=64))  # noqa: E731
    base, other = rng.normal(size=(2, 64))
    rows = unit(np.array([near(base) for _ in range(7)] + [near(other) for _ in range(2)]))
    index = Index.build(rows, [str(folder / n) for n in names])
    return folder, index, rows


def test_tiers_come_from_the_pixels(copies):
    folder, index, _ = copies
    name = {i: r.path.rsplit("/", 1)[-1] for i, r in index.records(index.ids()).items()}
    pair, group = near_duplicates(index)
    assert pair.tier == "exact" and [name[i] for i in pair.ids] == ["unrelated.jpg", "unrelated.png"]
    assert group.tier == "similar" and [name[i] for i in group.ids] == [
        "photo.jpg", "copy.png", "rotated.png", "small.jpg", "cropped.jpg", "brighter.jpg", "other-shot.jpg"]
    tiers = {frozenset((name[a], name[b])): tier for a, b, tier, _ in group.pairs}
    exact = {"photo.jpg", "copy.png", "rotated.png"}
    shot = exact | {"small.jpg", "cropped.jpg", "brighter.jpg"}
    for names, tier in tiers.items():
        want = "similar" if "other-shot.jpg" in names else "exact" if names <= exact else "near"
        assert tier == want, (sorted(names), tier)
    assert (folder / "photo.jpg").read_bytes() != (folder / "copy.png").read_bytes()
    # Groups are built up to the loosest tier asked for, and only those tiers are shown.
    assert near_duplicates(index, tiers="exact,similar") == [pair, group]
    pair_again, near = near_duplicates(index, tiers="exact,near")
    assert pair_again == pair and near.tier == "near" and {name[i] for i in near.ids} == shot
    assert near_duplicates(index, tiers="near") == [near]
    assert near_duplicates(index, tiers="similar") == [group]
    (only, _) = near_duplicates(index, tiers=["exact"])
    assert only.tier == "exact" and {name[i] for i in only.ids} == exact
    with pytest.raises(ValueError, match="tier 'nearby': use one or more of exact,near,similar"):
        near_duplicates(index, tiers="exact,nearby")


def test_bad_threshold_or_neighbours(collection):
    _, index = collection
    with pytest.raises(ValueError, match="threshold 1.5: a cosine similarity"):
        near_duplicates(index, threshold=1.5)
    with pytest.raises(ValueError, match="neighbours 0"):
        near_duplicates(index, k=0)


def test_similar_leaves_the_image_out_and_searches_like_a_query(collection):
    _, index = collection
    result = similar(index, [0, 5], k=3)
    assert 0 not in result.ids[0] and 5 not in result.ids[1]
    assert set(result.ids[0]) == {1, 2, 3} and set(result.ids[1][:2]) == {4, 6}
    query = index.search(index.descriptors([0]), k=4)
    assert query.ids[0, 0] == 0 and list(result.ids[0]) == list(query.ids[0, 1:])
    np.testing.assert_allclose(result.scores[0], query.scores[0, 1:], atol=1e-6)
    blocks = list(neighbour_blocks(index, k=2, block=7))
    assert [len(own) for own, _, _ in blocks] == [7, 7, 6]
    assert all((found != own[:, None]).all() for own, found, _ in blocks)
    with pytest.raises(UnknownImage, match="no image with id 99"):
        similar(index, [99])


def cfcd(capsys, *args):
    """`cfcd ARGS` in this process (a subprocess per command paid 5 s of imports each):
    (exit status, stdout, stderr), as the command line would give them."""
    from cfcd.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_commands(collection, tmp_path, capsys):
    root, _ = collection
    code, out, err = cfcd(capsys, "duplicates", root, "--threshold", "0.8", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["images"] == 20 and [len(g["ids"]) for g in body["groups"]] == [4, 3, 2]
    assert body["groups"][0]["paths"] == [f"scene0/{n}.jpg" for n in range(4)]
    code, out, _ = cfcd(capsys, "duplicates", root, "--threshold", "0.8", "--html", tmp_path / "page")
    assert code == 0 and "3 groups of duplicates (9 of 20 images): exact 0, near 0, similar 3" in out
    assert "Group 1: similar, 4 images" in (tmp_path / "page" / "index.html").read_text()
    code, _, err = cfcd(capsys, "duplicates", root, "--threshold", "2")
    assert code == 2 and "threshold 2.0" in err
    code, out, err = cfcd(capsys, "search", root, "--id", "0", "-k", "3", "--json")
    assert code == 0, err
    hits = json.loads(out)[0]
    assert hits["query"] == {"id": 0} and {h["id"] for h in hits["results"]} == {1, 2, 3}
    code, _, err = cfcd(capsys, "search", root, "--id", "99")
    assert code == 2 and "no image with id 99" in err
    code, _, err = cfcd(capsys, "search", root)
    assert code == 2 and "--id N" in err


def test_same_tiers_on_milvus_lite(copies, tmp_path):
    _, index, rows = copies
    where = str(tmp_path / "copies.db")
    milvus = Index(rows.shape[1], location=where, learn=False)
    milvus.add(rows, [index.records([i])[i].path for i in index.ids()])
    milvus.save(where)
    shape = lambda groups: [(g.ids, g.tier, [p[:3] for p in g.pairs]) for g in groups]  # noqa: E731
    assert shape(near_duplicates(Index.load(where))) == shape(near_duplicates(index))


def test_command_on_real_files_tiers_keep_and_prefer(copies, tmp_path, capsys):
    _, index, _ = copies
    root = tmp_path / "idx"
    index.save(root)
    code, out, err = cfcd(capsys, "duplicates", root, "--tiers", "exact,near", "--json")
    assert code == 0, err
    body = json.loads(out)
    _, group = body["groups"]
    assert body["tiers"] == ["exact", "near"] and group["tier"] == "near" and len(group["ids"]) == 6
    # The PNG re-save: as many pixels as the photo, a better format than the JPEG, older than the rotated PNG.
    members = {m["path"].rsplit("/", 1)[-1]: m for m in group["members"]}
    assert group["keep"] == members["copy.png"]["id"] and group["why"] == (
        "largest pixel count, then better format (PNG over JPEG), then older file")
    assert (members["rotated.png"]["width"], members["rotated.png"]["height"]) == (320, 240)  # upright
    assert members["small.jpg"]["format"] == "JPEG" and members["small.jpg"]["width"] == 192
    keep = group["keep"]
    to_keep = {p["b"] if p["a"] == keep else p["a"]: p["score"] for p in group["pairs"] if keep in (p["a"], p["b"])}
    assert members["copy.png"]["score"] == 1.0 and members["small.jpg"]["score"] == to_keep[members["small.jpg"]["id"]]
    assert {"file_size", "date", "path"} <= set(members["small.jpg"])
    code, out, err = cfcd(capsys, "duplicates", root, "--tiers", "exact", "--prefer", "older", "--prefer", "format")
    assert code == 0, err
    assert out.startswith("2 groups of duplicates (5 of 9 images): exact 2\n")
    assert "# group 1: exact, 3 images" in out and "# group 2: exact, 2 images" in out
    code, _, err = cfcd(capsys, "duplicates", root, "--tiers", "near,all")
    assert code == 2 and err.splitlines() == [
        "cfcd duplicates: error: tier 'all': use one or more of exact,near,similar, separated by commas"]
    code, _, err = cfcd(capsys, "duplicates", root, "--prefer", "biggest")
    assert code == 2 and "keep rule 'biggest': use one of pixels, format, metadata, older or folder:NAME" in err


def test_bad_id_or_threshold_is_one_line(collection, capsys):
    # cfcd.errors types (UnknownImage is a NotFound; the threshold a ConfigError): one line, no traceback
    from cfcd.cli import main

    root, _ = collection
    assert main(["search", str(root), "--id", "99"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("cfcd search: error: no image with id 99 in the index"), err
    assert main(["duplicates", str(root), "--threshold", "2"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"cfcd duplicates: error: threshold 2.0: a cosine similarity, between -1 and 1 (default {DEFAULT_THRESHOLD})"]
