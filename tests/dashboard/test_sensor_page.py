"""Sensor detail in Chromium: recent readings, the detectors' learned band, the spike marked,
and the gap reported in words."""

from __future__ import annotations

import psycopg
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions

from tests.api.city import plant
from tests.browser import chromium, waiting
from tests.dashboard.serving import PASSWORD, browser_login, serving
from tests.dashboard.test_alerts_page import screenshot
from tests.services.handles import Database

TRACES = """
const plot = document.querySelector('#sensor-chart .js-plotly-plot');
if (!plot || !plot.data) { return []; }
return plot.data.map(t => [t.name || '', (t.x || []).length]);
"""


def recent_series(dsn: str) -> None:
    """Eight days of minute readings up to now for aq-0001's PM2.5: a daily wave, a spike two
    hours ago, and a silent half hour five hours ago."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO readings (ts, stream_id, value)"
            " SELECT ts, 1, CASE WHEN ts = date_trunc('minute', now()) - interval '2 hours'"
            "   THEN 400 ELSE 12 + 4 * sin(extract(epoch FROM ts) / 86400 * 2 * pi()) END"
            " FROM generate_series(date_trunc('minute', now()) - interval '8 days',"
            "   date_trunc('minute', now()), interval '1 minute') ts"
            " WHERE ts NOT BETWEEN now() - interval '5 hours' AND now() - interval '270 minutes'"
        )


@pytest.mark.browser
def test_a_stream_with_its_band_anomalies_and_gaps(timescale_database: Database) -> None:
    plant(timescale_database.dsn)
    recent_series(timescale_database.dsn)
    with serving(timescale_database.dsn) as dashboard, chromium() as browser:
        browser_login(browser, dashboard.url, "technician", PASSWORD)
        browser.get(dashboard.url + "/sensor?device=aq-0001")
        wait = waiting(browser, 60)
        wait.until(lambda b: dict(b.execute_script(TRACES)).get("readings", 0) > 1000)
        traces = dict(browser.execute_script(TRACES))
        assert traces["learned band (expected ± 3 sigma)"] > 100
        assert traces["anomaly (score > 0.9)"] >= 1  # the spike
        notes = browser.find_element(By.ID, "sensor-notes").text
        assert "Gaps (no data)" in notes
        assert "aq-0001" in browser.find_element(By.CSS_SELECTOR, ".page.sensor h2").text
        screenshot(browser, "page-sensor")
        # Another stream of the same device, from its chip.
        browser.find_element(By.LINK_TEXT, "Temperature").click()
        wait.until(
            expected_conditions.text_to_be_present_in_element(
                (By.ID, "sensor-notes"), "No readings"
            )
        )  # planted only in 2026-11-01


@pytest.mark.browser
def test_from_the_menu_the_page_opens_on_the_newest_alerts_device_with_a_picker(
    timescale_database: Database,
) -> None:
    plant(timescale_database.dsn)
    with psycopg.connect(timescale_database.dsn) as conn:
        newest = conn.execute(
            "SELECT device_id FROM alerts WHERE state <> 'resolved' ORDER BY opened_at DESC LIMIT 1"
        ).fetchone()
    assert newest is not None
    with serving(timescale_database.dsn) as dashboard, chromium() as browser:
        browser_login(browser, dashboard.url, "technician", PASSWORD)
        browser.get(dashboard.url + "/sensor")
        wait = waiting(browser, 30)
        wait.until(expected_conditions.presence_of_element_located((By.ID, "sensor-chart")))
        assert f"({newest[0]})" in browser.find_element(By.CSS_SELECTOR, ".page.sensor h2").text
        options = browser.execute_script(
            "return Array.from(document.querySelectorAll('#sensor-devices option'))"
            ".map(o => o.value);"
        )
        assert "aq-0001" in options
        # Another device typed into the picker and shown.
        picker = browser.find_element(By.ID, "sensor-pick")
        picker.send_keys(Keys.CONTROL, "a")  # as a person replaces it (clear() skips React)
        picker.send_keys("aq-0001")
        browser.find_element(By.CSS_SELECTOR, "form.picker button").click()
        wait.until(lambda b: "(aq-0001)" in b.find_element(By.CSS_SELECTOR, ".page.sensor h2").text)
        # An unknown one says so, and keeps the picker.
        browser.get(dashboard.url + "/sensor?device=nope-1")
        wait.until(expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".page.sensor"), "No device or stream 'nope-1'"))  # fmt: skip
        assert browser.find_elements(By.ID, "sensor-pick")
