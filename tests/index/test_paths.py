"""Every path of an image is known: one content (one descriptor) at several paths, from
`cfcd index add` to search results and `cfcd duplicates`, and in an index written before other
paths were kept."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest

from cfcd.cli import main
from cfcd.index import Index
from cfcd.index.duplicates import near_duplicates
from cfcd.index.records import ImageRecord
from servers import textured


def cfcd(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return code, out


def test_a_byte_copy_added_by_the_command_is_another_path(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    for i in range(3):
        textured(photos / f"p{i}.png", seed=i)
    root = tmp_path / "idx"
    cfcd(capsys, "index", "build", root, photos, "--model", checkpoint, "--scales", "1")
    (photos / "copies").mkdir()
    shutil.copyfile(photos / "p1.png", photos / "copies" / "p1.png")
    _, out = cfcd(capsys, "index", "add", root, photos)
    assert out.startswith("added 0 images, recorded 1 more path of indexed content, skipped 3 already indexed")
    index = Index.load(root)
    (one,) = [i for i, r in index.records(index.ids()).items() if r.path.endswith("/p1.png")]
    assert len(index) == 3 and index.paths([one])[one] == [str(photos / "p1.png"), str(photos / "copies" / "p1.png")]
    _, out = cfcd(capsys, "search", root, photos / "p1.png", "-k", "1", "--json")
    (hit,) = json.loads(out)[0]["results"]
    assert hit["path"] == str(photos / "p1.png") and hit["paths"] == index.paths([one])[one]
    (group,) = near_duplicates(index, tiers="exact")
    assert group.ids == [one] and group.tier == "exact"
    _, out = cfcd(capsys, "duplicates", root, "--tiers", "exact", "--json")
    (group,) = json.loads(out)["groups"]
    assert group["ids"] == [one] and group["paths"] == index.paths([one])[one]
    # Removing one path keeps the image; removing the last removes it.
    _, out = cfcd(capsys, "index", "remove", root, photos / "p1.png")
    assert out.startswith("removed 0 images, forgot 1 path of images still indexed; 3 remain")
    assert Index.load(root).paths([one])[one] == [str(photos / "copies" / "p1.png")]
    assert near_duplicates(Index.load(root), tiers="exact") == []


def test_an_index_from_before_other_paths_were_kept(tmp_path):
    root = tmp_path / "idx"
    x = np.eye(4, 8, dtype=np.float32)
    Index.build(x[:3], ["a.jpg", "b.jpg", "c.jpg"]).save(root)
    meta = next(root.glob("v*/meta.sqlite"))  # make it an older index's file: no other_paths table
    with sqlite3.connect(meta) as conn:
        conn.execute("DROP TABLE other_paths")
    old = Index.load(root)
    assert old.paths([0, 1]) == {0: ["a.jpg"], 1: ["b.jpg"]} and near_duplicates(old, tiers="exact") == []
    assert old.search(x[:1], k=1).hits(0)[0]["paths"] == ["a.jpg"]
    assert old.layers.catalogue.ids_by_path(["b.jpg"]) == {"b.jpg": 1}
    with Index.edit(root) as index:  # the first write makes the table (a move goes through it)
        assert index.move_paths([("b.jpg", "b2.jpg")]) == 1
    assert Index.load(root).paths([0, 1]) == {0: ["a.jpg"], 1: ["b2.jpg"]}


def test_a_milvus_index_from_before_other_paths_were_kept(tmp_path):
    pytest.importorskip("pymilvus", reason="the Milvus engine needs pymilvus: pip install 'cfcd[milvus]'")
    pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")
    where = str(tmp_path / "old.db")
    x = np.eye(3, 8, dtype=np.float32)
    records = [ImageRecord(f"/p/{n}.jpg", 1, 1.0, f"{n:064x}") for n in range(3)]
    index = Index(8, location=where)
    index.add(x, records)
    index.save()
    index.store.client.drop_collection(index.store.paths)  # as an index written before it existed
    index.close()
    old = Index.load(where)
    assert old.paths([0, 1]) == {0: ["/p/0.jpg"], 1: ["/p/1.jpg"]} and near_duplicates(old, tiers="exact") == []
    old.close()
    with Index.edit(where) as edit:  # the first write makes the collection
        assert edit.add_paths([ImageRecord("/q/1.jpg", 1, 1.0, f"{1:064x}")]) == {0: 1}
    edit.close()
    new = Index.load(where)
    assert new.paths([1]) == {1: ["/p/1.jpg", "/q/1.jpg"]} and new.search(x[1:2], k=1).hits(0)[0]["paths"] == [
        "/p/1.jpg", "/q/1.jpg"]
    new.close()

