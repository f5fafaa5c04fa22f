"""Every page, checked by axe-core in Chromium for WCAG 2.2 AA: no serious or critical
violations. The login page too, and the overview at a phone's width."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from dashboard import security
from tests.api.city import plant
from tests.browser import axe_violations, chromium
from tests.dashboard.serving import PASSWORD, browser_login, serving
from tests.dashboard.test_alerts_page import screenshot
from tests.services.handles import Database

# What each page shows once its data has arrived.
READY = {
    "/": "tr[data-device]",
    "/alerts": "tr[data-alert]",
    "/fleet": "tr[data-device]",
    "/history": "#history-chart .main-svg",
    "/admin": "table.audit",
    "/sensor": "#sensor-notes p",
}
# Pages that show one thing: the one shown in the check.
QUERY = {"/sensor": "?device=aq-0001"}


@pytest.mark.browser
def test_every_page_passes_axe(timescale_database: Database) -> None:
    plant(timescale_database.dsn)
    with serving(timescale_database.dsn) as dashboard, chromium() as browser:
        browser.get(dashboard.url + "/login")
        assert axe_violations(browser) == [], "login page"
        browser_login(browser, dashboard.url, "admin", PASSWORD, dashboard.code("admin"))
        for path in security.PAGES:
            browser.get(dashboard.url + path + QUERY.get(path, ""))
            WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, READY.get(path, "main .page"))))  # fmt: skip
            screenshot(browser, "page-" + (path.strip("/") or "overview"))
            assert axe_violations(browser) == [], path
        browser.set_window_size(390, 844)  # a phone
        browser.get(dashboard.url + "/")
        WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, READY["/"])))  # fmt: skip
        screenshot(browser, "phone-overview")
        assert axe_violations(browser) == [], "overview on a phone"
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390 + 1, "the page scrolls sideways on a phone"
