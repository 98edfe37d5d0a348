"""Resolving duplicate groups into a trash folder and restoring them (``cfcd.index.cleanup``), on
real files with both engines; a real `cfcd duplicates --resolve` killed at each point of its
journal and finished by a rerun; "not duplicates" decisions kept through later writes."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cfcd.index import Index, projection
from failpoints import kill, start, wait_stopped
from cfcd.index.cleanup import MANIFEST, read_manifest
from cfcd.index.duplicates import near_duplicates
from samples import duplicate_photos, planted_descriptors, scene

DIM = 64


def build(location: str, folder: Path) -> list[Path]:
    files = duplicate_photos(folder)
    index = Index(DIM, location=location, learn=False)
    index.add(planted_descriptors(dim=DIM), [str(f) for f in files])
    index.save(location)
    index.close()
    return files


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def contents(location: str) -> tuple[list[int], np.ndarray, dict]:
    index = Index.load(location)
    try:
        ids = index.ids()
        found = index.search(index.descriptors(ids), k=1).ids[:, 0].tolist()
        return ids, index.descriptors(ids), {"paths": [index.records([i])[i].path for i in ids], "found": found}
    finally:
        index.close()


def cfcd(capsys, *args):
    from cfcd.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_resolve_then_restore_leaves_folder_and_index_as_before(location, tmp_path, capsys):
    folder, trash = tmp_path / "photos", tmp_path / "trash"
    files = build(location, folder)
    before, (ids, vectors, described) = snapshot(folder), contents(location)
    generation = Index.load(location).generation

    code, out, err = cfcd(capsys, "duplicates", location, "--resolve", "--trash", trash, "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)["planned"]
    assert {(e["id"], e["trash"], e["tier"], e["keep"]) for e in plan} == {
        (0, "trip/photo.jpg", "near", 1), (2, "trip/small.jpg", "near", 1), (3, "trip/unrelated.jpg", "exact", 4)}
    assert snapshot(folder) == before and not trash.exists() and Index.load(location).generation == generation

    code, out, err = cfcd(capsys, "duplicates", location, "--resolve", "--trash", trash)
    assert code == 0 and out.startswith("moved 3 files to"), (out, err)
    assert sorted(snapshot(folder)) == ["backup/old/photo.png", "trip/unrelated.png"]
    for name in ("photo.jpg", "small.jpg", "unrelated.jpg"):
        assert (trash / "trip" / name).read_bytes() == before[f"trip/{name}"][0]
    index = Index.load(location)
    assert index.ids() == [1, 4] and index.generation == generation + 1  # one versioned write
    index.close()
    manifest = read_manifest(trash)
    assert sorted((e["id"], e["status"], e["path"]) for e in manifest["entries"]) == [
        (0, "trashed", str(files[0])), (2, "trashed", str(files[2])), (3, "trashed", str(files[3]))]
    assert {"size", "mtime", "sha256", "descriptor"} <= set(manifest["entries"][0])

    code, out, err = cfcd(capsys, "duplicates", location, "--restore", "--trash", trash)
    assert code == 0 and "restored 3 files" in out, (out, err)
    assert snapshot(folder) == before and not trash.exists() or list(trash.iterdir()) == []
    after_ids, after_vectors, after = contents(location)
    assert after_ids == ids and after == described
    np.testing.assert_array_equal(after_vectors, vectors)


def test_changed_files_are_skipped_with_a_message(tmp_path, capsys):
    location, folder, trash = str(tmp_path / "idx"), tmp_path / "photos", tmp_path / "trash"
    files = build(location, folder)
    files[2].write_bytes(files[2].read_bytes() + b"edited")  # changed since it was indexed
    code, out, err = cfcd(capsys, "duplicates", location, "--resolve", "--trash", trash)
    assert code == 0, err
    assert f"skipped 2: {files[2]} changed since it was indexed" in out and "moved 2 files" in out
    assert files[2].exists() and 2 in Index.load(location).ids()
    (trash / "trip" / "photo.jpg").write_bytes(b"not the photo")  # changed in the trash
    code, out, err = cfcd(capsys, "duplicates", location, "--restore", "--trash", trash)
    assert code == 0, err
    assert "skipped 0:" in out and "changed in the trash" in out and "restored 1 files" in out
    assert files[3].exists() and not files[0].exists()
    assert [e["id"] for e in read_manifest(trash)["entries"]] == [0, 2]  # still listed
    code, _, err = cfcd(capsys, "duplicates", location, "--restore", "--trash", tmp_path / "nothing")
    assert code == 2 and "no trash manifest there" in err
    code, _, err = cfcd(capsys, "duplicates", location, "--resolve")
    assert code == 2 and "--trash DIR goes with --resolve" in err
    other = str(tmp_path / "other")
    Index.load(location).save(other)
    code, _, err = cfcd(capsys, "duplicates", other, "--restore", "--trash", trash)
    assert code == 2 and f"lists photos of the index {location}, not {other}" in err
    code, _, err = cfcd(capsys, "duplicates", location, "--resolve", "--trash", files[1])
    assert code == 2 and "a file, not a folder" in err


@pytest.mark.parametrize("point", ["cleanup.planned", "cleanup.moving", "cleanup.moved", "index.staged",
                                   "cleanup.removed"])
def test_a_killed_resolve_is_finished_by_a_rerun(point, tmp_path, capsys):
    location, folder, trash = str(tmp_path / "idx"), tmp_path / "photos", tmp_path / "trash"
    files = build(location, folder)
    before = snapshot(folder)
    proc = start("duplicates", location, "--resolve", "--trash", trash, failpoint=point)
    wait_stopped(proc)
    # Stopped at the point: every file in place and indexed, or in the trash and listed.
    listed = {e["id"]: e for e in read_manifest(trash)["entries"]}
    assert set(listed) == {0, 2, 3}
    indexed = set(Index.load(location).ids())
    in_trash = {i for i, e in listed.items() if (trash / e["trash"]).exists()}
    for i in (0, 2, 3):
        assert files[i].exists() != (i in in_trash)
        assert i in indexed or i in in_trash
    assert len(in_trash) == {"cleanup.planned": 0, "cleanup.moving": 1}.get(point, 3)
    assert indexed == ({1, 4} if point == "cleanup.removed" else {0, 1, 2, 3, 4})
    kill(proc)
    code, out, err = cfcd(capsys, "duplicates", location, "--resolve", "--trash", trash)
    assert code == 0 and "finishing the resolve left unfinished" in out, (out, err)
    assert Index.load(location).ids() == [1, 4]
    assert [e["status"] for e in read_manifest(trash)["entries"]] == ["trashed"] * 3
    assert sorted(snapshot(folder)) == ["backup/old/photo.png", "trip/unrelated.png"]
    code, out, err = cfcd(capsys, "duplicates", location, "--restore", "--trash", trash)
    assert code == 0, err
    assert snapshot(folder) == before and Index.load(location).ids() == [0, 1, 2, 3, 4]


def group_ids(index, **kwargs) -> list[list[int]]:
    return [g.ids for g in near_duplicates(index, **kwargs)]


def test_ignored_photos_stay_apart_after_add_and_relearn(location, tmp_path, capsys):
    folder = tmp_path / "photos"
    build(location, folder)
    assert group_ids(Index.load(location)) == [[3, 4], [0, 1, 2]]
    code, out, err = cfcd(capsys, "duplicates", location, "--ignore", "0,1")
    assert code == 0 and "recorded 1 pairs as not duplicates" in out, err
    assert group_ids(Index.load(location)) == [[3, 4], [0, 2]]  # 1 joins neither 0 nor its group
    # Later writes keep the decision: an image added, a projection learned.
    extra = folder / "trip" / "later.jpg"
    scene(7).save(extra)
    with Index.edit(location) as index:
        index.add(index.descriptors([0]), [str(extra)])  # as close to 0 as 1 is
    with Index.edit(location) as index:
        projection.relearn(index, dim=4)
    index = Index.load(location)
    assert index.generation == 4 and len(index) == 6
    groups = group_ids(index, threshold=0.5)
    assert not any({0, 1} <= set(g) for g in groups), groups
    assert any({0, 5} <= set(g) for g in groups), groups
    index.close()
    code, out, err = cfcd(capsys, "duplicates", location, "--unignore", "1,0", "--json")
    assert code == 0 and json.loads(out) == {"unignored": [[0, 1]]}, err
    assert any({0, 1} <= set(g) for g in group_ids(Index.load(location), threshold=0.5))
    code, _, err = cfcd(capsys, "duplicates", location, "--ignore", "0,99")
    assert code == 2 and "no image with id 99" in err
    code, _, err = cfcd(capsys, "duplicates", location, "--ignore", "3")
    assert code == 2 and "at least two different image ids" in err


def test_a_killed_restore_is_finished_by_a_rerun(tmp_path, capsys):
    location, folder, trash = str(tmp_path / "idx"), tmp_path / "photos", tmp_path / "trash"
    build(location, folder)
    before = snapshot(folder)
    assert cfcd(capsys, "duplicates", location, "--resolve", "--trash", trash)[0] == 0
    proc = start("duplicates", location, "--restore", "--trash", trash, failpoint="cleanup.restored")
    wait_stopped(proc)
    # Files back in place, not yet in the index, still listed.
    assert snapshot(folder) == before and Index.load(location).ids() == [1, 4]
    assert len(read_manifest(trash)["entries"]) == 3
    kill(proc)
    code, out, err = cfcd(capsys, "duplicates", location, "--restore", "--trash", trash)
    assert code == 0 and "restored 3 files" in out, (out, err)
    assert snapshot(folder) == before and Index.load(location).ids() == [0, 1, 2, 3, 4]


def test_a_trash_on_another_file_system(tmp_path, capsys):
    """The files are copied, synced and renamed there, then unlinked here; and back."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) here")
    location, folder = str(tmp_path / "idx"), tmp_path / "photos"
    build(location, folder)
    before = snapshot(folder)
    trash = Path(tempfile.mkdtemp(dir=shm, prefix="cfcd-trash-"))
    try:
        assert cfcd(capsys, "duplicates", location, "--resolve", "--trash", trash)[0] == 0
        assert sorted(p.name for p in trash.rglob("*") if p.is_file()) == [MANIFEST, "photo.jpg", "small.jpg",
                                                                            "unrelated.jpg"]
        assert sorted(snapshot(folder)) == ["backup/old/photo.png", "trip/unrelated.png"]
        assert cfcd(capsys, "duplicates", location, "--restore", "--trash", trash)[0] == 0
        assert snapshot(folder) == before and Index.load(location).ids() == [0, 1, 2, 3, 4]
    finally:
        shutil.rmtree(trash)
