"""A real headless Chromium (Debian's chromium + chromium-driver) driven by Selenium."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from tests.services._process import INSTALL_HINT, ServiceUnavailableError, find_binary

# Without the networking switches Chromium keeps trying to reach Google's services, which this
# machine's closed network refuses; the tests only ever talk to loopback.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A fresh browser with an empty profile, closed afterwards."""
    try:
        binary = find_binary("chromium")
        driver_binary = find_binary("chromedriver")
    except ServiceUnavailableError as exc:
        raise ServiceUnavailableError(
            f"{exc} (chromium and chromium-driver; {INSTALL_HINT})"
        ) from exc
    profile = tempfile.mkdtemp(prefix="smartcity-chromium-")
    options = Options()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(driver_binary), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
