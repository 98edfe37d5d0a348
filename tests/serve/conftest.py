"""A real `cfcd serve` process on a free localhost port, over a small index."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import torch

from servers import serve_process, textured

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
LIMITS = ["--max-upload-mb", "1", "--max-pixels", "1000000"]


@pytest.fixture(scope="session")
def served_index(tmp_path_factory) -> Path:
    """An index of 12 generated images made with a tiny random model (checkpoint on disk)."""
    from cfcd.index import Index, add_images
    from cfcd.model import CFCDNet, ModelConfig, load_model, save_checkpoint
    from cfcd.settings import ExtractionSettings, Runtime

    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    save_checkpoint(root / "tiny.pt", CFCDNet(ModelConfig("mobilenet_v2", dim=0)))
    model = load_model(root / "tiny.pt")
    images = [textured(root / "photos" / f"p{i:02d}.png", seed=i) for i in range(12)]
    index = Index(model.output_dim)
    add_images(index, model, images, ExtractionSettings((1.0,), max_side=None), Runtime(progress=False))
    index.save(root / "idx")
    return root / "idx"


@contextlib.contextmanager
def run_server(index: Path, *extra: str):
    with serve_process(index, *LIMITS, *extra) as server:
        yield server.url


@pytest.fixture(scope="session")
def server(served_index) -> str:
    with run_server(served_index) as url:
        yield url


@pytest.fixture(scope="session")
def photos(served_index) -> list[Path]:
    return sorted((served_index.parent / "photos").glob("*.png"))


@pytest.fixture(scope="session")
def start_server():
    """run_server(index, *extra cfcd serve options) as a context manager yielding the URL."""
    return run_server


@pytest.fixture(scope="session")
def start_process():
    """serve_process(index, limits, *extra cfcd serve options): the ServeProcess (URL, process)."""
    return lambda index, *extra: serve_process(index, *LIMITS, *extra)


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
