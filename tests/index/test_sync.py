"""`cfcd index sync` on real photo files: a folder whose photos were moved, renamed, deleted, added,
copied and re-encoded is synced with the expected counts, extracting only new and changed content
(counted here, by wrapping the extraction function), also after a real sync process is killed."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from cfcd import extraction
from cfcd.cli import main
from cfcd.index import Index
from servers import textured
from failpoints import kill, start, wait_stopped

PHOTOS = 8


def cfcd(capsys, *args) -> str:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.fixture
def extracted(monkeypatch) -> list[str]:
    """The image paths given to the extraction function in this process, in order."""
    seen: list[str] = []
    real = extraction.extract

    def counting(model, images, *args, **kwargs):
        seen.extend(str(i) for i in images)
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(extraction, "extract", counting)
    return seen


def build(capsys, checkpoint, location, photos):
    for i in range(PHOTOS):
        textured(photos / "2024" / f"p{i}.jpg", seed=i, size=(120, 90))
    cfcd(capsys, "index", "build", location, photos, "--model", checkpoint, "--scales", "1")


def rearrange(photos):
    """Move, rename, delete, add, copy, re-encode and break: the expected plan's paths."""
    year, sorted_ = photos / "2024", photos / "sorted"
    sorted_.mkdir()
    (year / "p0.jpg").rename(sorted_ / "p0.jpg")  # moved to another sub-folder
    (year / "p1.jpg").rename(year / "renamed.jpg")  # renamed
    (year / "p2.jpg").unlink()  # deleted
    textured(year / "new.jpg", seed=50, size=(120, 90))  # new content
    shutil.copyfile(year / "p3.jpg", sorted_ / "p3-copy.jpg")  # a byte copy: a new path, no extraction
    Image.open(year / "p4.jpg").save(year / "p4.jpg", quality=60)  # re-encoded: changed content
    (year / "broken.jpg").write_bytes(b"not a picture")  # new, and not an image
    return {
        "added": sorted([str(year / "new.jpg"), str(sorted_ / "p3-copy.jpg")]),
        "removed": [str(year / "p2.jpg")],
        "moved": sorted([(str(year / "p0.jpg"), str(sorted_ / "p0.jpg")), (str(year / "p1.jpg"), str(year / "renamed.jpg"))]),
        "changed": [str(year / "p4.jpg")],
        "unchanged": sorted(str(year / f"p{i}.jpg") for i in (3, 5, 6, 7)),
        "extracted": sorted([str(year / "new.jpg"), str(year / "p4.jpg"), str(year / "broken.jpg")]),
    }


def check(body: dict, want: dict) -> None:
    assert sorted(body["added"]) == want["added"] and body["removed"] == want["removed"]
    assert sorted((m["from"], m["to"]) for m in body["moved"]) == want["moved"]
    assert body["changed"] == want["changed"] and sorted(body["unchanged"]) == want["unchanged"]
    assert list(body["unreadable"]) == [want["extracted"][0]] and "broken.jpg" in body["unreadable"][want["extracted"][0]]
    assert body["counts"] == {"added": 2, "removed": 1, "moved": 2, "changed": 1, "unchanged": 4, "unreadable": 1}


def check_index(location, photos) -> None:
    """Every photo of the folder is found at its new path, by its own content."""
    index = Index.load(location)
    assert len(index) == PHOTOS  # 8 - deleted + new (re-encoded: replaced; the copy: a path)
    held = {p for ps in index.paths(index.ids()).values() for p in ps}
    on_disk = {str(p) for p in photos.rglob("*.jpg") if p.name != "broken.jpg"}
    assert held == on_disk
    for name in ("sorted/p0.jpg", "2024/renamed.jpg", "2024/p4.jpg", "2024/new.jpg"):
        (hit,) = json.loads(cfcd_out(location, photos / name))[0]["results"]
        assert hit["path"] == str(photos / name) and hit["score"] > 0.999
    (copy,) = [ps for ps in index.paths(index.ids()).values() if len(ps) > 1]
    assert copy == [str(photos / "2024" / "p3.jpg"), str(photos / "sorted" / "p3-copy.jpg")]
    index.close()


def cfcd_out(*args) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["search", *map(str, args), "-k", "1", "--json"]) == 0
    return buf.getvalue()


def test_sync_a_rearranged_folder(checkpoint, tmp_path, capsys, extracted):
    photos, root = tmp_path / "photos", tmp_path / "idx"
    build(capsys, checkpoint, root, photos)
    want = rearrange(photos)
    extracted.clear()
    dry = json.loads(cfcd(capsys, "index", "sync", root, photos, "--dry-run", "--json"))
    assert dry["version"] == 1 and dry["dry_run"] and extracted == []  # a dry run reads, extracts nothing
    assert sorted(dry["extracted"]) == want["extracted"] and dry["counts"]["added"] == 3  # broken.jpg not read yet
    body = json.loads(cfcd(capsys, "index", "sync", root, photos, "--json"))
    assert sorted(extracted) == want["extracted"]  # only the new and changed files
    check(body, want)
    assert body["version"] == 2 and body["images"] == PHOTOS
    check_index(root, photos)
    extracted.clear()
    again = cfcd(capsys, "index", "sync", root, photos)
    assert again.startswith(f"synced {photos}: added 0, removed 0, moved 0, changed 0, unchanged 9, unreadable 1; "
                            "0 extracted\nskipped unreadable image: ")
    assert extracted == [want["extracted"][0]]  # only the file that never was an image, tried again


@pytest.mark.parametrize("point", ["sync.planned", "index.staged", "index.published"])
def test_a_killed_sync_is_finished_by_a_rerun(checkpoint, tmp_path, capsys, extracted, point):
    photos, root = tmp_path / "photos", tmp_path / "idx"
    build(capsys, checkpoint, root, photos)
    want = rearrange(photos)
    proc = start("index", "sync", root, photos, failpoint=point)
    wait_stopped(proc)
    kill(proc)
    extracted.clear()
    body = json.loads(cfcd(capsys, "index", "sync", root, photos, "--json"))
    if point == "index.published":  # the killed sync published: the rerun finds the folder in step
        assert body["counts"] == {"added": 0, "removed": 0, "moved": 0, "changed": 0, "unchanged": 9, "unreadable": 1}
        assert extracted == [want["extracted"][0]] and body["version"] == 2
    else:  # nothing was published: the rerun does the whole sync, once
        check(body, want)
        assert sorted(extracted) == want["extracted"] and body["version"] == 2
    check_index(root, photos)


def test_sync_on_milvus_lite(checkpoint, tmp_path, capsys, extracted):
    pytest.importorskip("pymilvus", reason="the Milvus engine needs pymilvus: pip install 'cfcd[milvus]'")
    pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")
    photos, db = tmp_path / "photos", tmp_path / "photos.db"
    build(capsys, checkpoint, db, photos)
    want = rearrange(photos)
    extracted.clear()
    check(json.loads(cfcd(capsys, "index", "sync", db, photos, "--json")), want)
    assert sorted(extracted) == want["extracted"]
    check_index(db, photos)


def test_sync_takes_the_runtime_options(checkpoint, tmp_path, capsys, extracted):
    """The model and settings are the index's; how the network runs is the caller's."""
    photos, root = tmp_path / "photos", tmp_path / "idx"
    build(capsys, checkpoint, root, photos)
    textured(photos / "new.jpg", seed=60, size=(120, 90))
    assert main(["index", "sync", str(root), str(photos), "--runtime", "onnx", "--amp"]) == 2
    assert "--runtime onnx runs on the CPU in float32; drop --amp" in capsys.readouterr().err
    body = json.loads(cfcd(capsys, "index", "sync", root, photos, "--json", "--runtime", "torch", "--decode-threads", "0",
                           "--batch-size", "2", "--device", "cpu"))
    assert body["added"] == [str(photos / "new.jpg")] and body["counts"]["unchanged"] == PHOTOS


def test_a_touched_file_is_read_once(checkpoint, tmp_path, capsys, monkeypatch):
    """A file whose mtime changed but not its content is unchanged, and its new mtime is
    recorded: the next sync compares it by stat alone (content hashes counted here)."""
    from cfcd.index import sync as syncing

    photos, root = tmp_path / "photos", tmp_path / "idx"
    build(capsys, checkpoint, root, photos)
    shutil.copyfile(photos / "2024" / "p3.jpg", photos / "p3-copy.jpg")
    cfcd(capsys, "index", "sync", root, photos)
    hashed: list[str] = []
    real = syncing.sha256_file
    monkeypatch.setattr(syncing, "sha256_file", lambda path: hashed.append(str(path)) or real(path))
    for name in ("2024/p3.jpg", "p3-copy.jpg"):  # a primary path and another path of one image
        os.utime(photos / name, (1_000_000_000, 1_000_000_000))
    first = json.loads(cfcd(capsys, "index", "sync", root, photos, "--json"))
    assert first["counts"]["unchanged"] == PHOTOS + 1 and sorted(hashed) == [str(photos / "2024" / "p3.jpg"),
                                                                             str(photos / "p3-copy.jpg")]
    hashed.clear()
    again = json.loads(cfcd(capsys, "index", "sync", root, photos, "--json"))
    assert again["counts"]["unchanged"] == PHOTOS + 1 and hashed == [] and again["version"] == first["version"]
    index = Index.load(root)
    assert sorted(p for ps in index.paths(index.ids()).values() for p in ps) == sorted(
        str(p) for p in photos.rglob("*.jpg"))
