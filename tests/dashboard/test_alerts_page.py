"""The alerts page in a real headless Chromium: filter, open, acknowledge and resolve with a
comment; the history, the database and the audit log all show who did what."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions

from dashboard import alert_actions
from processing.kinds import Kind
from tests.api.city import plant
from tests.browser import chromium, waiting
from tests.dashboard.serving import PASSWORD, browser_login, serving
from tests.services.handles import Database

ARTIFACTS = Path(os.environ.get("CITY_TEST_ARTIFACTS", "test-artifacts"))


def screenshot(browser: WebDriver, name: str) -> None:
    """Keep what the page looked like, for people reviewing a run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _rows(browser: WebDriver) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = browser.execute_script(
        "return Array.from(document.querySelectorAll('tr[data-alert]'))"
        ".map(r => [r.dataset.alert, r.dataset.state]);"
    )
    return rows


@pytest.mark.browser
def test_an_operator_acknowledges_and_resolves_an_alert(timescale_database: Database) -> None:
    plant(timescale_database.dsn)
    with serving(timescale_database.dsn) as dashboard, chromium() as browser:
        browser_login(browser, dashboard.url, "operator", PASSWORD, dashboard.code("operator"))
        browser.get(dashboard.url + "/alerts")
        wait = waiting(browser, 30)
        wait.until(lambda b: len(_rows(b)) == 2)  # open and acknowledged by default
        assert {state for _, state in _rows(browser)} == {"open", "acknowledged"}
        screenshot(browser, "alerts")

        browser.find_element(By.CSS_SELECTOR, "tr[data-state=open] button.open").click()
        wait.until(expected_conditions.text_to_be_present_in_element(
            (By.ID, "alerts-detail"), "congestion"))  # fmt: skip
        acknowledge = browser.find_element(By.ID, "alerts-acknowledge")
        wait.until(lambda _: acknowledge.is_enabled())
        browser.find_element(By.ID, "alerts-comment").send_keys("crew on the way")
        acknowledge.click()
        wait.until(expected_conditions.text_to_be_present_in_element(
            (By.ID, "alerts-feedback"), "acknowledged by operator"))  # fmt: skip
        resolve = browser.find_element(By.ID, "alerts-resolve")
        browser.find_element(By.ID, "alerts-comment").send_keys("signals retimed")
        resolve.click()
        wait.until(expected_conditions.text_to_be_present_in_element(
            (By.ID, "alerts-feedback"), "resolved by operator"))  # fmt: skip
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#alerts-detail li")) == 3)
        history = browser.find_element(By.CSS_SELECTOR, "#alerts-detail .history").text
        assert "acknowledged by operator" in history
        assert "signals retimed" in history
        screenshot(browser, "alert-resolved")
        wait.until(lambda b: len(_rows(b)) == 1)  # resolved drops out of the default filter

    with psycopg.connect(timescale_database.dsn) as conn:
        alert = conn.execute(
            "SELECT state, acknowledged_by, resolved_by FROM alerts WHERE kind = 'congestion'"
        ).fetchone()
        events = conn.execute(
            "SELECT action, actor, comment FROM alert_events e JOIN alerts a USING (alert_id)"
            " WHERE a.kind = 'congestion' ORDER BY event_id"
        ).fetchall()
        trail = conn.execute(
            "SELECT actor, action FROM audit_log WHERE action LIKE 'alert-%' ORDER BY entry_id"
        ).fetchall()
    assert alert == ("resolved", "operator", "operator")
    assert events[1:] == [("acknowledged", "operator", "crew on the way"),
                          ("resolved", "operator", "signals retimed")]  # fmt: skip
    assert trail == [("operator", "alert-acknowledge"), ("operator", "alert-resolve")]


def test_the_kind_filter_offers_every_kind_before_any_alert_exists(database: Database) -> None:
    with ConnectionPool(database.dsn, min_size=1, max_size=1, open=True) as pool:
        offered = alert_actions.choices(pool)["kinds"]
        assert offered == [kind.slug for kind in Kind]
