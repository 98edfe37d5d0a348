"""Near-duplicate groups and "more like this" from stored descriptors: the library (blocks of any
size give the same groups) and the commands (`cfcd duplicates`, `cfcd search --id`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cfcd.index import Index
from cfcd.index.duplicates import DEFAULT_THRESHOLD, near_duplicates, same_group_pairs
from cfcd.index.neighbours import UnknownImage, neighbour_blocks, similar

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
    assert code == 0 and "3 groups of near-duplicates (9 of 20 images)" in out
    assert "Group 1: 4 images" in (tmp_path / "page" / "index.html").read_text()
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
