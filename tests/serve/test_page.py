"""The web page, driven in headless Chromium from upload to the result grid."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Set to a file path to keep the final screenshot (docs/img/web-page.png was made this way).
SCREENSHOT_ENV = "CFCD_PAGE_SCREENSHOT"


@pytest.fixture(scope="module")
def page_index(tmp_path_factory, served_index):
    """The demo's redistributable photos (scikit-image's samples, default model) when present,
    so the page and its screenshot in the docs show real photos we may publish; otherwise the
    generated images of the service tests."""
    fallback = served_index, sorted((served_index.parent / "photos").glob("*.png"))[0]
    from cfcd.demo import build_default_collection
    from cfcd.data.images import list_images
    from cfcd.index import Index, add_images
    from cfcd.model import load_model
    from cfcd.settings import ExtractionSettings, Runtime

    try:
        model = load_model("default")
        collection = build_default_collection(tmp_path_factory.mktemp("page-photos") / "collection")
    except Exception:  # noqa: BLE001 - weights or scikit-image not installed
        return fallback
    images = list_images(collection)
    index = Index(model.output_dim)
    add_images(index, model, images, ExtractionSettings((1.0,), max_side=256), Runtime(progress=False))
    root = tmp_path_factory.mktemp("page") / "idx"
    index.save(root)
    return root, images[1]


def test_upload_box_and_result_grid(browser, page_index, start_server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    index, query = page_index
    with start_server(index) as url:
        wait = WebDriverWait(browser, 60)
        browser.get(url + "/")
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "images indexed"))
        assert "no learned projection" in browser.find_element(By.ID, "status").text  # a small collection
        assert browser.find_element(By.ID, "search").get_attribute("disabled")
        browser.find_element(By.ID, "file").send_keys(str(Path(query).resolve()))
        # Choosing a file searches at once: the grid fills with thumbnails and scores.
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) >= 5)
        wait.until(lambda d: all(img.get_property("naturalWidth") > 0 for img in d.find_elements(By.CSS_SELECTOR, "#results img")))
        first = browser.find_element(By.CSS_SELECTOR, "#results li.result")
        assert first.find_element(By.CLASS_NAME, "rank").text == "#1"
        assert 0.0 < float(first.find_element(By.CLASS_NAME, "score").text) <= 1.001
        assert first.find_element(By.TAG_NAME, "a").get_attribute("href").startswith(url + "/images/")
        # Dragging a box on the photo searches that region.
        canvas = browser.find_element(By.ID, "canvas")
        w, h = canvas.size["width"], canvas.size["height"]
        ActionChains(browser).move_to_element_with_offset(canvas, -w // 4, -h // 4).click_and_hold() \
            .move_by_offset(w // 2, h // 2).release().perform()
        wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), "selected region"))
        assert browser.find_element(By.ID, "clear-box").is_displayed()
        assert browser.find_element(By.ID, "message").text == ""
        wait.until(lambda d: all(img.get_property("naturalWidth") > 0 for img in d.find_elements(By.CSS_SELECTOR, "#results img")))
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "web-page.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot))


def test_api_key_goes_into_an_httponly_cookie_not_urls(browser, served_index, photos, start_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    with start_server(served_index, "--api-key", "p4ge-key") as url:
        wait = WebDriverWait(browser, 60)
        browser.get(url + "/")
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "images indexed"))
        wait.until(EC.visibility_of_element_located((By.ID, "api-key")))  # no session yet: the page asks
        browser.find_element(By.ID, "api-key").send_keys("p4ge-key")
        browser.find_element(By.ID, "file").send_keys(str(photos[2].resolve()))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) >= 5)
        # Thumbnails and image links load through the cookie: no key in any URL, none in storage.
        wait.until(lambda d: all(img.get_property("naturalWidth") > 0 for img in d.find_elements(By.CSS_SELECTOR, "#results img")))
        urls = [e.get_attribute("src") for e in browser.find_elements(By.CSS_SELECTOR, "#results img")]
        urls += [e.get_attribute("href") for e in browser.find_elements(By.CSS_SELECTOR, "#results a")]
        assert urls and not any("p4ge-key" in u or "api_key" in u for u in urls)
        assert browser.execute_script("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage)") == "{}{}"
        assert browser.execute_script("return document.cookie") == ""  # HttpOnly: scripts cannot read it
        assert any(c["name"] == "cfcd_session" and c["httpOnly"] for c in browser.get_cookies())
        # After a reload the cookie alone authorises: the key field is empty and searches work.
        browser.get(url + "/")
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "images indexed"))
        assert browser.find_element(By.ID, "api-key").get_attribute("value") == ""
        browser.find_element(By.ID, "file").send_keys(str(photos[3].resolve()))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) >= 5)
        assert not browser.find_element(By.ID, "api-key").is_displayed()


def test_page_says_when_a_learned_projection_is_searched(browser, served_index, photos, start_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from cfcd.index import Index
    from cfcd.index.projection import relearn

    root = tmp_path / "learned.idx"
    shutil.copytree(served_index, root)
    with Index.edit(root) as index:
        relearn(index, dim=4)  # a collection this small learns only when asked
    with start_server(root) as url:
        browser.get(url + "/")
        WebDriverWait(browser, 60).until(EC.text_to_be_present_in_element((By.ID, "status"), "projection learned from"))
        assert "4-d projection learned from 12 of these photos" in browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "file").send_keys(str(photos[2].resolve()))
        WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) >= 5)


# A directory: the collection test saves page-similar.png, page-collection.png and
# page-duplicates.png there (docs/ holds the ones made this way).
SCREENSHOTS_ENV = "CFCD_PAGE_SCREENSHOTS"
KEY = "c0llection-key"


def thumbnails_loaded(css):
    """Every thumbnail under ``css`` in the window has loaded (lazy ones below wait for a scroll)."""
    script = """return [...document.querySelectorAll(arguments[0])].filter((img) => img.getBoundingClientRect().top < innerHeight)
                .every((img) => img.complete && img.naturalWidth > 0)"""
    return lambda d: d.execute_script(script, f"{css} img")


def ids_of(browser, css) -> list[int]:
    return [int(li.get_attribute("data-id")) for li in browser.find_elements("css selector", css)]


def test_similar_collection_upload_and_duplicates(browser, page_index, start_server, tmp_path):
    """On a key-protected, writable server: follow "similar" from a result and again from its
    results, page through the collection (More, scrolling, a folder), add a photo and find it,
    and see the near-duplicate groups; every list is checked against the API's own answer."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from servers import textured

    index, query = page_index
    shutil.copytree(index, tmp_path / "idx")
    shots = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    headers = {"X-API-Key": KEY}
    with start_server(tmp_path / "idx", "--api-key", KEY, "--upload-dir", str(tmp_path / "uploads"),
                      "--trash", str(tmp_path / "trash")) as url:
        def api(path):
            return httpx.get(url + path, headers=headers, timeout=120).json()

        wait = WebDriverWait(browser, 60)
        browser.get(url + "/?page_size=3")
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "images indexed"))
        wait.until(EC.visibility_of_element_located((By.ID, "api-key")))
        browser.find_element(By.ID, "api-key").send_keys(KEY)
        browser.find_element(By.ID, "file").send_keys(str(Path(query).resolve()))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) >= 5)

        # "Similar" on a result shows the API's more-like-this list for it; then again from there.
        for position in (1, 0):
            target = browser.find_elements(By.CSS_SELECTOR, "#results li.result")[position]
            tid, name = int(target.get_attribute("data-id")), target.find_element(By.CLASS_NAME, "name").text
            target.find_element(By.CSS_SELECTOR, "button.similar").click()
            wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), f"most similar images like {name}"))
            want = [h["id"] for h in api(f"/images/{tid}/similar?k=20")["results"]]
            assert ids_of(browser, "#results li.result") == want and tid not in want
            assert browser.find_element(By.ID, "similar-to").text == f"More like {name}"
        wait.until(thumbnails_loaded("#results"))
        assert browser.save_screenshot(str(shots / "page-similar.png"))

        # The collection, 3 at a time: More, then scrolling to the end, each the next page.
        browser.find_element(By.CSS_SELECTOR, "#tabs a[data-view=collection]").click()
        total = api("/images?limit=1")["total"]
        all_ids = [i["id"] for i in api(f"/images?limit={total}")["items"]]
        grid = "#collection li"
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, grid)) == 3)
        assert browser.find_element(By.ID, "collection-count").text == f"3 of {total} images"
        browser.find_element(By.ID, "more").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, grid)) == 6)
        # What the browser does when the user scrolls (the test window may be too tall to scroll).
        browser.execute_script("window.scrollTo(0, document.documentElement.scrollHeight); window.dispatchEvent(new Event('scroll'))")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, grid)) == 9)
        assert ids_of(browser, grid) == all_ids[:9]
        wait.until(thumbnails_loaded("#collection"))  # through the session cookie: <img> sends no header

        # A new photo appears at once, with its thumbnail; the same bytes again are recognised.
        new = textured(tmp_path / "new-photo.png", seed=2024, size=(160, 120))
        browser.find_element(By.ID, "upload").send_keys(str(new))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#added li.new"))
        added = int(browser.find_element(By.CSS_SELECTOR, "#added li.new").get_attribute("data-id"))
        assert added not in all_ids and api("/images?limit=1")["total"] == total + 1
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), f"{total + 1} images indexed"))
        wait.until(thumbnails_loaded("#added"))
        browser.find_element(By.ID, "upload").send_keys(str(new))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#added li.known"))
        assert browser.find_element(By.CSS_SELECTOR, "#added li.known").get_attribute("data-id") == str(added)

        # The folder filter: the upload folder holds the new photo; the largest folder pages by 3.
        folders = Select(browser.find_element(By.ID, "folder"))
        wait.until(lambda d: any("uploads" in o.text for o in folders.options))
        folders.select_by_visible_text(next(o.text for o in folders.options if "uploads" in o.text))
        wait.until(lambda d: ids_of(d, grid) == [added])
        counts = {o.get_attribute("value"): int(o.text.rsplit("(", 1)[1].rstrip(")")) for o in folders.options[1:]}
        big = max(counts, key=counts.get)
        assert counts[big] > 3
        folders.select_by_value(big)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, grid)) == 3)
        while browser.find_element(By.ID, "more").is_displayed():
            shown = len(browser.find_elements(By.CSS_SELECTOR, grid))
            browser.find_element(By.ID, "more").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, grid)) > shown)
        want = [i["id"] for i in api(f"/images?prefix={big}&limit=500")["items"]]
        assert ids_of(browser, grid) == want and len(want) == counts[big]
        assert all(n.get_attribute("title").startswith(big) for n in browser.find_elements(By.CSS_SELECTOR, f"{grid} .name"))

        # Near-duplicate groups: the API's groups, in its order, each a row of thumbnails.
        browser.find_element(By.CSS_SELECTOR, "#tabs a[data-view=duplicates]").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "dup-summary"), "groups of duplicates"))
        groups = api("/duplicates")["groups"]
        shown = [[int(li.get_attribute("data-id")) for li in g.find_elements(By.CSS_SELECTOR, "li")]
                 for g in browser.find_elements(By.CSS_SELECTOR, "#groups .group")]
        assert shown == [g["ids"] for g in groups]
        wait.until(thumbnails_loaded("#groups"))
        assert browser.save_screenshot(str(shots / "page-duplicates.png"))
        assert browser.find_element(By.ID, "message").text == ""

        # The collection as a user first sees it: the default page size, the cookie alone.
        browser.get(url + "/#collection")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, grid)) == min(48, total + 1))
        wait.until(thumbnails_loaded("#collection"))
        assert browser.save_screenshot(str(shots / "page-collection.png"))
