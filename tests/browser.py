"""A real headless Chromium (Debian's chromium + chromium-driver) driven by Selenium."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

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
    driver.set_script_timeout(60)  # axe-core takes a few seconds on a full page
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


AXE_VERSION = "4.14.1"  # as pinned in scripts/install-test-deps.sh
# WCAG 2.0, 2.1 and 2.2 at levels A and AA: the control room's bar.
AXE_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")


def waiting(browser: webdriver.Chrome, seconds: float) -> WebDriverWait[webdriver.Chrome]:
    """A bounded wait that looks again when Dash re-renders the element it was reading (a
    stale element between finding it and reading its text), as it does when data arrives."""
    return WebDriverWait(browser, seconds, ignored_exceptions=(StaleElementReferenceException,))


def axe_violations(browser: webdriver.Chrome) -> list[dict[str, object]]:
    """Serious and critical accessibility violations on the current page, by axe-core."""
    cache = Path(os.environ.get("SMARTCITY_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smartcity")  # fmt: skip
    script = cache / f"axe-{AXE_VERSION}.min.js"
    if not script.is_file():
        raise ServiceUnavailableError(f"axe-core {AXE_VERSION} is missing ({INSTALL_HINT})")
    browser.execute_script(script.read_text(encoding="utf-8"))
    result = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
        ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))))"
        ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));",
        list(AXE_TAGS),
    )
    return [v for v in result if v.get("impact") in ("serious", "critical")]
