"""Reviewing duplicates through a real `cfcd serve` process: paged groups, "not duplicates"
(kept through a restart), "move the others to trash" (then restored by the command), the
near-duplicates an upload answers with, and the same review actions in headless Chromium."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from samples import duplicate_photos, planted_descriptors

KEY = "review-key"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture
def review_index(served_index, tmp_path) -> tuple[Path, Path, list[Path]]:
    """(index, the tiny model's checkpoint, files): the files of ``duplicate_photos`` with
    planted descriptors of the tiny model's dimension, so that the groups are known: [3, 4]
    exact (keep 4), [0, 1, 2] near (keep 1)."""
    from cfcd.index import Index
    from cfcd.model import load_model

    checkpoint = served_index.parent / "tiny.pt"
    model = load_model(checkpoint)
    files = duplicate_photos(tmp_path / "photos")
    index = Index(model.output_dim, model=model)
    index.add(planted_descriptors(dim=model.output_dim), [str(f) for f in files])
    index.save(tmp_path / "idx")
    return tmp_path / "idx", checkpoint, files


def post(url: str, path: str, body: dict, headers=HEADERS) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=headers, timeout=120)


def grouped(url: str) -> list[list[int]]:
    return [g["ids"] for g in httpx.get(url + "/duplicates", headers=HEADERS, timeout=120).json()["groups"]]


def test_review_over_http_then_restore(review_index, start_server, tmp_path):
    index, checkpoint, files = review_index
    trash = tmp_path / "trash"
    serve = ("--model", str(checkpoint), "--api-key", KEY, "--upload-dir", str(tmp_path / "up"))
    with start_server(index, *serve, "--trash", str(trash)) as url:
        assert httpx.get(url + "/health").json()["trash"] is True
        first = httpx.get(url + "/duplicates", params={"limit": 1}, headers=HEADERS, timeout=120).json()
        second = httpx.get(url + "/duplicates", params={"limit": 1, "offset": 1}, headers=HEADERS, timeout=120).json()
        assert (first["total"], first["offset"], [g["ids"] for g in first["groups"]]) == (2, 0, [[3, 4]])
        assert (second["offset"], [(g["ids"], g["tier"], g["keep"]) for g in second["groups"]]) == (
            1, [([0, 1, 2], "near", 1)])
        item = second["groups"][0]["items"][0]
        assert {"path", "width", "height", "file_size", "format", "date", "score"} <= set(item)

        assert post(url, "/duplicates/ignore", {"ids": [0, 1]}, headers={}).status_code == 401
        assert post(url, "/duplicates/ignore", {"ids": [0, 99]}).status_code == 404
        answer = post(url, "/duplicates/ignore", {"ids": [0, 1]})
        assert answer.status_code == 200 and answer.json()["ignored"] == [[0, 1]]
        assert not any({0, 1} <= set(g) for g in grouped(url))

        assert post(url, "/duplicates/trash", {"ids": [3, 4], "keep": 0}).status_code == 400
        answer = post(url, "/duplicates/trash", {"ids": [3, 4], "keep": 4})
        assert answer.status_code == 200 and answer.json()["moved"] == [3], answer.text
        assert not files[3].exists() and (trash / "trip" / "unrelated.jpg").is_file()
        assert httpx.get(url + "/images/3", headers=HEADERS).status_code == 404
        assert httpx.get(url + "/health").json()["images"] == 4

    # A restart keeps the decision; without --trash the page cannot move files.
    with start_server(index, *serve) as url:
        assert not any({0, 1} <= set(g) for g in grouped(url))
        refused = post(url, "/duplicates/trash", {"ids": [0, 2], "keep": 0})
        assert refused.status_code == 403 and "--trash DIR" in refused.json()["detail"]
        assert httpx.get(url + "/health").json()["trash"] is False

    done = subprocess.run([sys.executable, "-m", "cfcd", "duplicates", str(index), "--restore", "--trash", str(trash),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [e["id"] for e in json.loads(done.stdout)["restored"]] == [3] and files[3].is_file()


def test_an_upload_answers_with_its_near_duplicates(served_index, photos, start_server, tmp_path):
    import shutil

    from cfcd.index import Index

    shutil.copytree(served_index, tmp_path / "idx")
    copy = tmp_path / "copies" / photos[3].name  # a byte copy: another path of the indexed photo
    copy.parent.mkdir()
    shutil.copyfile(photos[3], copy)
    with Index.edit(tmp_path / "idx") as index:
        assert len(index.add_paths([str(copy)])) == 1
    Image.open(photos[3]).save(tmp_path / "resaved.png", compress_level=1)  # other bytes, the same pixels
    assert (tmp_path / "resaved.png").read_bytes() != photos[3].read_bytes()
    with start_server(tmp_path / "idx", "--upload-dir", str(tmp_path / "up")) as url:
        original = next(i["id"] for i in httpx.get(url + "/images?limit=100").json()["items"]
                        if i["path"] == photos[3].name)  # listed relative to the collection's folder
        with open(tmp_path / "resaved.png", "rb") as f:
            answer = httpx.post(url + "/images", files={"image": ("resaved.png", f, "image/png")}, timeout=120)
        assert answer.status_code == 201, answer.text
        found = answer.json()["near_duplicates"]
        exact = [d for d in found if d["tier"] == "exact"]
        assert [d["id"] for d in exact] == [original] and exact[0]["path"] == str(photos[3].resolve())
        assert exact[0]["paths"] == [str(photos[3].resolve()), str(copy.resolve())]
        assert {"id", "path", "tier", "score", "thumbnail_url"} <= set(exact[0])
        assert answer.json()["id"] not in [d["id"] for d in found]


def test_page_review_actions(browser, review_index, start_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    import os
    import shutil

    from cfcd.index import Index

    index, checkpoint, files = review_index
    trash = tmp_path / "trash"
    copy = tmp_path / "photos" / "copies" / files[4].name  # the keeper's byte copy: another path of it
    copy.parent.mkdir()
    shutil.copyfile(files[4], copy)
    os.utime(copy, (files[4].stat().st_mtime - 60,) * 2)  # the older file: the path kept, not the record's first
    with Index.edit(index) as edit:
        edit.add_paths([str(copy)])
    with start_server(index, "--model", str(checkpoint), "--api-key", KEY, "--upload-dir", str(tmp_path / "up"),
                      "--trash", str(trash)) as url:
        refused = post(url, "/duplicates/trash", {"ids": [3, 4], "keep": 4, "keep_path": str(files[3])})
        assert refused.status_code == 400 and "not a path of image 4" in refused.text
        wait = WebDriverWait(browser, 60)
        browser.get(url + "/?group_page=1")
        wait.until(EC.visibility_of_element_located((By.ID, "api-key")))
        browser.find_element(By.ID, "api-key").send_keys(KEY)
        browser.find_element(By.CSS_SELECTOR, "#tabs a[data-view=duplicates]").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "dup-summary"), "2 groups of duplicates"))
        sections = lambda: browser.find_elements(By.CSS_SELECTOR, "#groups .group")  # noqa: E731
        assert len(sections()) == 1  # a page of one group, then "More groups"
        browser.find_element(By.ID, "dup-more").click()
        wait.until(lambda d: len(sections()) == 2)
        assert not browser.find_element(By.ID, "dup-more").is_displayed()
        near = sections()[1]
        assert "near, 3 images" in near.find_element(By.TAG_NAME, "h3").text and "keep 1" in near.text
        assert near.find_element(By.CSS_SELECTOR, "li.keep").get_attribute("data-id") == "1"
        facts = near.find_element(By.CSS_SELECTOR, "li.keep .facts").text
        assert facts.startswith("Keep · 400×300") and "PNG" in facts

        near.find_element(By.CSS_SELECTOR, "button.ignore").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "message"), "Group 2: recorded as not duplicates"))
        wait.until(EC.text_to_be_present_in_element((By.ID, "dup-summary"), "1 groups of duplicates"))
        assert grouped(url) == [[3, 4]]

        exact = sections()[0]
        listed = [li.text for li in exact.find_elements(By.CSS_SELECTOR, "li.keep .paths li")]
        assert listed == [str(files[4]), f"keep · {copy}"]  # the kept photo's paths, the kept one marked
        exact.find_element(By.CSS_SELECTOR, "button.trash").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "message"), "moved 2 files to the trash, kept 4"))
        wait.until(EC.text_to_be_present_in_element((By.ID, "dup-summary"), "0 groups of duplicates"))
        assert not files[3].exists() and (trash / "trip" / "unrelated.jpg").is_file()
        assert copy.is_file() and not files[4].exists() and (trash / "trip" / files[4].name).is_file()
        assert grouped(url) == [] and httpx.get(url + "/health").json()["images"] == 4
    kept = Index.load(index)
    assert kept.paths([4]) == {4: [str(copy)]}  # the image stays, with the path kept
    kept.close()


def test_resolve_killed_then_finished_and_restored_on_a_milvus_server(served_index, start_server, tmp_path):
    """A Milvus collection behind `milvus-lite server`: a `cfcd duplicates --resolve` killed with
    its files moved and the index not yet written, finished by a rerun; a served page's "move the
    others to trash" on it; a restore that leaves folder and index as before."""
    pytest.importorskip("pymilvus", reason="the Milvus engine needs pymilvus: pip install 'cfcd[milvus]'")
    pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")
    from milvus_server import milvus_server
    from failpoints import kill, start, wait_stopped

    from cfcd.index import Index
    from cfcd.index.cleanup import read_manifest
    from cfcd.model import load_model

    model = load_model(served_index.parent / "tiny.pt")
    files = duplicate_photos(tmp_path / "photos")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    trash = tmp_path / "trash"
    with milvus_server(tmp_path / "shared.db") as address:
        uri = f"milvus://{address}/photos"
        index = Index(model.output_dim, model=model, location=uri, learn=False)
        index.add(planted_descriptors(dim=model.output_dim), [str(f) for f in files])
        index.save(uri)
        vectors = index.descriptors([0, 1, 2, 3, 4])

        proc = start("duplicates", uri, "--resolve", "--trash", trash, "--tiers", "near", failpoint="cleanup.moved")
        wait_stopped(proc)
        assert not files[0].exists() and not files[2].exists() and Index.load(uri).ids() == [0, 1, 2, 3, 4]
        assert {e["id"] for e in read_manifest(trash)["entries"]} == {0, 2}
        kill(proc)
        again = subprocess.run([sys.executable, "-m", "cfcd", "duplicates", uri, "--resolve", "--trash", str(trash)],
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "finishing the resolve" in again.stdout, again.stderr
        assert Index.load(uri).ids() == [1, 3, 4]

        with start_server(uri, "--model", str(served_index.parent / "tiny.pt"), "--api-key", KEY, "--upload-dir",
                          str(tmp_path / "up"), "--trash", str(trash)) as url:
            answer = post(url, "/duplicates/trash", {"ids": [3, 4], "keep": 4})
            assert answer.status_code == 200 and answer.json()["moved"] == [3], answer.text
        assert Index.load(uri).ids() == [1, 4] and not files[3].exists()

        done = subprocess.run([sys.executable, "-m", "cfcd", "duplicates", uri, "--restore", "--trash", str(trash)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "restored 3 files" in done.stdout, done.stderr
        restored = Index.load(uri)
        assert restored.ids() == [0, 1, 2, 3, 4]
        assert (restored.descriptors([0, 1, 2, 3, 4]) == vectors).all()
        assert all(i in row for i, row in zip(range(5), restored.search(vectors, k=3).ids.tolist()))
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
