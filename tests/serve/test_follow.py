"""The page follows a watched folder: a photo added to the folder `cfcd serve --watch DIR` keeps
in step appears in the open collection view of a real Chromium, without a reload."""

from __future__ import annotations

import pytest

from cfcd.cli import main
from samples import tiny_checkpoint
from servers import serve_process, textured

pytest.importorskip("watchdog", reason="watching a folder needs watchdog: pip install 'watchdog>=4.0'")


def test_the_collection_view_follows_the_watched_folder(browser, tmp_path, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photos, root = tmp_path / "photos", tmp_path / "idx"
    for i in range(3):
        textured(photos / f"p{i}.jpg", seed=i, size=(120, 90))
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    assert main(["index", "build", str(root), str(photos), "--model", str(checkpoint), "--scales", "1"]) == 0
    capsys.readouterr()
    with serve_process(root, "--watch", str(photos)) as server:
        browser.get(server.url + "/#collection")
        count = lambda: browser.find_element(By.ID, "collection-count").text  # noqa: E731
        WebDriverWait(browser, 60).until(lambda _: count() == "3 of 3 images")
        shown = len(browser.find_elements(By.CSS_SELECTOR, "#collection .card"))
        textured(photos / "sub" / "new.jpg", seed=7, size=(120, 90))
        # the server syncs within a few seconds, the page looks every 3 s
        WebDriverWait(browser, 20).until(lambda _: count() == "4 of 4 images")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#collection .card")) == shown + 1
        assert "4 images indexed" in browser.find_element(By.ID, "status").text
