"""Resolving duplicates whose images are at several paths (byte copies: one record, one
descriptor, several files): every file but the kept one moves to the trash, an image that keeps
a path stays in the index with that path, and a restore puts the files and paths back; on both
engines, and a real `cfcd duplicates --resolve` killed before its path-only index write."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cfcd.index import Index
from cfcd.index.cleanup import read_manifest
from failpoints import kill, start, wait_stopped
from samples import planted_descriptors, scene
from test_cleanup import cfcd, snapshot

DIM = 64


def copies(folder: Path) -> dict[str, Path]:
    """A photo in Originals with a byte-identical copy in a sub-folder, its PNG re-save (the same
    pixels, other bytes) and an unrelated photo; named by role."""
    files = {"original": folder / "Originals" / "a.jpg", "copy": folder / "copies" / "a.jpg",
             "png": folder / "a.png", "other": folder / "b.jpg"}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    scene(0).save(files["original"], quality=90)
    shutil.copy2(files["original"], files["copy"])
    from PIL import Image

    Image.open(files["original"]).save(files["png"])
    scene(1).save(files["other"], quality=90)
    return files


def build(location: str, files: dict[str, Path]) -> np.ndarray:
    """The index of ``files``: id 0 the JPEG at two paths (the copy first: the record's primary
    path is not the one kept), 1 the PNG, 2 the other photo; returns their descriptors."""
    x = planted_descriptors(groups=(2, 1), dim=DIM)
    index = Index(DIM, location=location, learn=False)
    report = index.add(x[[0, 0, 1, 2]], [str(files[k]) for k in ("copy", "original", "png", "other")])
    assert report.added == [0, 1, 2] and report.paths == {1: 0}
    index.save(location)
    index.close()
    return x


def state(location: str) -> tuple[list[int], dict, np.ndarray]:
    index = Index.load(location)
    try:
        ids = index.ids()
        return ids, index.paths(ids), index.descriptors(ids)
    finally:
        index.close()


def test_a_byte_copy_and_a_resave_go_to_the_trash_and_come_back(location, tmp_path, capsys):
    folder, trash = tmp_path / "photos", tmp_path / "trash"
    files = copies(folder)
    x = build(location, files)
    before, (ids, paths, vectors) = snapshot(folder), state(location)
    assert ids == [0, 1, 2] and paths[0] == [str(files["copy"]), str(files["original"])]

    code, out, err = cfcd(capsys, "duplicates", location, "--tiers", "exact", "--prefer", "folder:Originals", "--json")
    assert code == 0, err
    (group,) = json.loads(out)["groups"]
    assert (group["ids"], group["keep"], group["keep_path"], group["why"]) == (
        [0, 1], 0, str(files["original"]), "in folder Originals")
    code, out, err = cfcd(capsys, "duplicates", location, "--tiers", "exact", "--prefer", "folder:Originals")
    marked = [line.split()[-1] for line in out.splitlines() if line.startswith("keep")]
    assert marked == [str(files["original"])] and f"same file at {files['original']}" in out, out

    code, out, err = cfcd(capsys, "duplicates", location, "--resolve", "--trash", trash, "--prefer", "folder:Originals")
    assert code == 0 and out.startswith("moved 2 files to"), (out, err)
    assert sorted(snapshot(folder)) == ["Originals/a.jpg", "b.jpg"]
    assert (trash / "copies" / "a.jpg").read_bytes() == before["copies/a.jpg"][0]
    assert (trash / "a.png").read_bytes() == before["a.png"][0]
    kept_ids, kept_paths, kept_vectors = state(location)
    assert kept_ids == [0, 2] and kept_paths[0] == [str(files["original"])]  # the record stays, with one path
    np.testing.assert_array_equal(kept_vectors[0], x[0])
    assert sorted((e["id"], e["path"], e["primary"]) for e in read_manifest(trash)["entries"]) == [
        (0, str(files["copy"]), True), (1, str(files["png"]), True)]

    code, out, err = cfcd(capsys, "duplicates", location, "--restore", "--trash", trash)
    assert code == 0 and "restored 2 files" in out, (out, err)
    assert snapshot(folder) == before
    after_ids, after_paths, after_vectors = state(location)
    assert after_ids == ids and after_paths == paths  # the copy again the record's own path
    np.testing.assert_array_equal(after_vectors, vectors)
    index = Index.load(location)
    assert index.search(x[1:2], k=1).ids[0, 0] == 1  # the PNG's record searchable again
    index.close()


@pytest.mark.parametrize("point", ["cleanup.moved", "index.staged"])
def test_a_killed_path_only_resolve_is_finished_by_a_rerun(point, tmp_path, capsys):
    """The group is one image at two paths: its index write removes a path, not a record."""
    location, folder, trash = str(tmp_path / "idx"), tmp_path / "photos", tmp_path / "trash"
    files = copies(folder)
    os.utime(files["copy"], (1e9, 1e9))  # the older file: kept by default (the content ties)
    build(location, files)
    assert cfcd(capsys, "duplicates", location, "--ignore", "0,1")[0] == 0  # the PNG apart: image 0 alone
    before = snapshot(folder)
    code, out, err = cfcd(capsys, "duplicates", location, "--resolve", "--trash", trash, "--dry-run")
    assert code == 0 and f"kept at {files['copy']}, {files['original']} -> Originals/a.jpg" in out, (out, err)
    proc = start("duplicates", location, "--resolve", "--trash", trash, failpoint=point)
    wait_stopped(proc)
    (entry,) = read_manifest(trash)["entries"]
    assert (entry["id"], entry["path"], entry["keep_path"]) == (0, str(files["original"]), str(files["copy"]))
    # Stopped with the file in the trash and listed, its path still in the index.
    assert not files["original"].exists() and (trash / "Originals" / "a.jpg").is_file()
    assert state(location)[1][0] == [str(files["copy"]), str(files["original"])]
    kill(proc)
    code, out, err = cfcd(capsys, "duplicates", location, "--resolve", "--trash", trash)
    assert code == 0 and "finishing the resolve left unfinished" in out, (out, err)
    ids, paths, _ = state(location)
    assert ids == [0, 1, 2] and paths[0] == [str(files["copy"])]
    code, out, err = cfcd(capsys, "duplicates", location, "--restore", "--trash", trash)
    assert code == 0 and "restored 1 files" in out, (out, err)
    assert snapshot(folder) == before and state(location)[1][0] == [str(files["copy"]), str(files["original"])]
