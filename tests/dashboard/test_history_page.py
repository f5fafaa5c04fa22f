"""The History page's answers through its callbacks: chosen devices, readable series names,
gaps in words, and an audited CSV export."""

from __future__ import annotations

import re
from typing import Any

import httpx
import psycopg
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from ingest.schema.zone import set_city_zone
from tests.api.city import plant
from tests.browser import chromium, waiting
from tests.dashboard.serving import PASSWORD, browser_login, dash_call, serving
from tests.dashboard.test_alerts_page import screenshot
from tests.dashboard.test_security import audit
from tests.services.handles import Database

# The last year: the planted city (November 2026) is in range until November 2027, where the
# last 30 days lost its first hours on 2026-12-01.
CHOICES = {"history-metric": "pm2_5", "history-site": [], "history-devices": "aq-0001, aq-0002",
           "history-range": "365d", "history-bucket": "1h", "history-group": "stream"}  # fmt: skip


def _call(client: httpx.Client, output: str, values: dict[str, Any]) -> dict[str, Any]:
    response = dash_call(client, output, lambda item: values.get(item["id"]))
    assert response.status_code == 200, response.text[:300]
    answer: dict[str, Any] = response.json()["response"]
    return answer


def test_chosen_devices_by_name_with_their_gap_and_an_audited_export(
    timescale_database: Database,
) -> None:
    plant(timescale_database.dsn)  # 2026-11-01 and 02; aq-0002 silent 10:00-12:00 UTC on the 1st
    with psycopg.connect(timescale_database.dsn, autocommit=True) as conn:
        set_city_zone(conn, "Europe/Paris")  # an hour ahead of UTC in November
    with serving(timescale_database.dsn) as dashboard:
        planner = dashboard.client("planner")
        answer = _call(planner, "..history-chart.figure", CHOICES)
        names = [trace["name"] for trace in answer["history-chart"]["figure"]["data"]]
        assert names == ["aq-0001 aq", "aq-0002 aq"]
        gaps = str(answer["history-gaps"]["children"])
        # Hourly buckets on the city's clock: the two silent hours, in Paris time.
        assert "aq-0002 aq: 2026-11-01 11:00 to 2026-11-01 12:00" in gaps
        assert "times in Europe/Paris" in gaps
        figure = answer["history-chart"]["figure"]
        assert figure["layout"]["xaxis"]["title"]["text"] == "local time (Europe/Paris)"
        points = [x for trace in figure["data"] for x in trace["x"]]
        assert points
        assert all(re.fullmatch(r"2026-1[12]-\d\dT\d\d:00:00", x) for x in points)  # on the hour
        exported = _call(planner, "history-download.data", {**CHOICES, "history-export": 1})
        lines = exported["history-download"]["data"]["content"].splitlines()
        assert lines[0] == "group,bucket,pm2_5,readings,partial"
        assert not any(line.startswith("aq-0002 aq,2026-11-01T11:00:00+01:00") for line in lines)
        assert any(line.startswith("aq-0001 aq,2026-11-01T11:00:00+01:00,") for line in lines)
        assert {line.split(",")[0] for line in lines[1:]} == {"aq-0001 aq", "aq-0002 aq"}
    assert ("planner", "export") in audit(timescale_database.dsn)
    with psycopg.connect(timescale_database.dsn) as conn:
        detail = conn.execute(
            "SELECT detail FROM audit_log WHERE action = 'export' ORDER BY entry_id DESC"
        ).fetchone()
    assert detail is not None
    assert detail[0]["devices"] == ["aq-0001", "aq-0002"]


CHART_BOX = """
const box = document.getElementById('history-chart').getBoundingClientRect();
return [box.top, box.bottom, window.innerHeight];
"""


@pytest.mark.browser
@pytest.mark.parametrize(("width", "height"), [(1600, 860), (390, 844)])
def test_the_chart_is_in_the_first_screen(
    timescale_database: Database, width: int, height: int
) -> None:
    plant(timescale_database.dsn)
    with serving(timescale_database.dsn) as dashboard, chromium() as browser:
        browser.set_window_size(width, height)
        browser_login(browser, dashboard.url, "planner", PASSWORD)
        browser.get(dashboard.url + "/history")
        WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, "#history-chart .main-svg")))  # fmt: skip
        top, bottom, screen = browser.execute_script(CHART_BOX)
        screenshot(browser, f"page-history-{width}x{height}")
        if width >= 1000:
            assert bottom <= screen, (top, bottom, screen)  # all of it, unscrolled
        else:
            assert top <= screen - 250, (top, bottom, screen)  # a good part of it on a phone


@pytest.mark.browser
def test_the_filters_work_from_the_keyboard_and_are_named(timescale_database: Database) -> None:
    plant(timescale_database.dsn)
    with serving(timescale_database.dsn) as dashboard, chromium() as browser:
        browser_login(browser, dashboard.url, "planner", PASSWORD)
        browser.get(dashboard.url + "/history")
        wait = waiting(browser, 30)
        wait.until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, "#history-chart .main-svg")))  # fmt: skip
        metric = browser.find_element(By.ID, "history-metric")
        wait.until(lambda _: metric.get_attribute("tabindex") == "0")
        names = browser.execute_script(
            "const b = document.getElementById('history-metric');"
            "return b.getAttribute('aria-labelledby').split(' ')"
            ".map(id => document.getElementById(id).textContent);"
        )
        assert names == ["Metric", "PM2.5 (µg/m³)"]
        # Tab from the page heading reaches the metric first, and the keyboard picks another.
        browser.execute_script("document.querySelector('.page.history h2').tabIndex = -1;"
                               "document.querySelector('.page.history h2').focus();")  # fmt: skip
        ActionChains(browser).send_keys(Keys.TAB).perform()
        assert browser.switch_to.active_element.get_attribute("id") == "history-metric"
        ActionChains(browser).send_keys(Keys.ENTER).perform()
        wait.until(lambda _: metric.get_attribute("aria-expanded") == "true")
        # The open list takes the focus once it is drawn; then the arrow moves through it.
        wait.until(lambda b: "dash-options-list-option" in (
            b.switch_to.active_element.get_attribute("class") or ""))  # fmt: skip
        ActionChains(browser).send_keys(Keys.ARROW_DOWN).perform()
        wait.until(lambda b: b.switch_to.active_element.get_attribute("value") != "pm2_5")
        ActionChains(browser).send_keys(Keys.ENTER).perform()
        wait.until(lambda b: "PM2.5" not in b.find_element(By.ID, "history-metric").text)
