"""The web page, driven in headless Chromium from upload to the result grid."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# Set to a file path to keep the final screenshot (docs/img/web-page.png was made this way).
SCREENSHOT_ENV = "CFCD_PAGE_SCREENSHOT"


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extras: pip install -e .[dev]")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless Chromium not installed: apt-get install -y chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


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

    root = tmp_path / "learned.idx"
    shutil.copytree(served_index, root)
    with Index.edit(root) as index:
        index.relearn(dim=4)  # a collection this small learns only when asked
    with start_server(root) as url:
        browser.get(url + "/")
        WebDriverWait(browser, 60).until(EC.text_to_be_present_in_element((By.ID, "status"), "projection learned from"))
        assert "4-d projection learned from 12 of these photos" in browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "file").send_keys(str(photos[2].resolve()))
        WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) >= 5)
