"""The overview page on a real database, in a real headless Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from dashboard import queries
from dashboard.app import open_pool
from edge.fleet import plan_fleet
from ingest.registry import DeviceRecord, register_devices
from smartcity.demo_city import write_city_map
from tests.browser import chromium, waiting
from tests.dashboard.serving import PASSWORD, browser_login, serving
from tests.dashboard.test_alerts_page import screenshot
from tests.services.handles import Database


def populate(dsn: str, devices: int = 12) -> list[str]:
    """Register a small fleet and give all but the last device a few stored readings."""
    specs = plan_fleet(devices, seed=5)
    register_devices(
        dsn, [DeviceRecord(s.device, s.site, s.family, s.name, s.lat, s.lon) for s in specs]
    )
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as conn:
        for index, spec in enumerate(specs[:-1]):
            stream = conn.execute(
                "INSERT INTO streams (device_id, sensor, metric, unit) VALUES (%s, 's', %s, %s)"
                " RETURNING stream_id",
                (
                    spec.device,
                    "pm2_5" if spec.family == "air" else "fill_level",
                    "%" if spec.family != "air" else "ug/m3",
                ),
            ).fetchone()
            assert stream is not None
            conn.execute("INSERT INTO latest VALUES (%s, %s, %s)", (stream[0], now, 10.0 + index))
            conn.execute(
                "UPDATE devices SET last_seen = %s, state = 'online' WHERE device_id = %s",
                (now - timedelta(seconds=index), spec.device),
            )
    return [s.device for s in specs]


@pytest.fixture
def read_pool(database: Database) -> Iterator[ConnectionPool]:
    with open_pool(database.dsn) as pool:
        pool.wait(10)
        yield pool


def test_queries_return_every_device_and_the_totals(
    database: Database, read_pool: ConnectionPool
) -> None:
    names = populate(database.dsn)
    frame = queries.devices(db=read_pool)
    assert sorted(frame["device_id"]) == sorted(names)
    totals = queries.totals(datetime.now(UTC) - timedelta(minutes=5), db=read_pool)
    assert totals == {"devices": 12, "reporting": 11, "live_streams": 11, "rejections": 0}


# Every point on the live map, per trace: (device, hover text, colour), read from plotly's data.
MAP_POINTS = """
const plot = document.querySelector('#overview-map .js-plotly-plot');
if (!plot || !plot.data) { return []; }
return plot.data.filter(t => t.customdata).flatMap(t => Array.from(t.customdata).map(
    (d, i) => [d, t.text[i], t.marker.color[i]]));
"""


@pytest.mark.browser
def test_overview_shows_every_device_and_patches_changes(timescale_database: Database) -> None:
    names = populate(timescale_database.dsn)
    with serving(timescale_database.dsn) as dashboard, chromium() as browser:
        browser_login(browser, dashboard.url, "planner", PASSWORD)
        browser.get(dashboard.url + "/")
        wait = waiting(browser, 30)
        wait.until(lambda b: len(b.execute_script(MAP_POINTS)) == len(names))
        points = {device: text for device, text, _ in browser.execute_script(MAP_POINTS)}
        assert sorted(points) == sorted(names)
        assert "never reported" in points[names[-1]]  # status in words, not only colour
        legend = browser.find_element(By.CSS_SELECTOR, "#overview-map .legend").text
        assert "Air quality" in legend
        assert "live (filled)" in legend
        # Only the device that is not live is listed by name.
        listed = browser.execute_script(
            "return Array.from(document.querySelectorAll('tr[data-device]'))"
            ".map(r => [r.dataset.device, r.querySelector('.status').textContent]);"
        )
        assert listed == [[names[-1], "never reported"]]
        assert "Updated" in browser.find_element(By.ID, "shell-last-update").text

        # A device falls silent: the map point changes in place, the list gains it.
        with psycopg.connect(timescale_database.dsn) as conn:
            conn.execute(
                "UPDATE devices SET last_seen = now() - interval '1 hour' WHERE device_id = %s",
                (names[0],),
            )
        wait.until(lambda b: any(d == names[0] and "stale" in t
                                 for d, t, _ in b.execute_script(MAP_POINTS)))  # fmt: skip
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "tr[data-device]")) == 2)

        # Paused, nothing changes; resumed, it catches up.
        browser.find_element(By.ID, "shell-pause").click()
        wait.until(expected_conditions.text_to_be_present_in_element(
            (By.ID, "shell-pause"), "Resume"))  # fmt: skip
        with psycopg.connect(timescale_database.dsn) as conn:
            conn.execute(
                "UPDATE devices SET last_seen = now() - interval '1 hour' WHERE device_id = %s",
                (names[1],),
            )
        time.sleep(3)  # three ticks' worth
        assert len(browser.find_elements(By.CSS_SELECTOR, "tr[data-device]")) == 2
        browser.find_element(By.ID, "shell-pause").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "tr[data-device]")) == 3)


@pytest.mark.browser
def test_the_demo_city_is_drawn_under_its_devices(
    timescale_database: Database, tmp_path: Path
) -> None:
    names = populate(timescale_database.dsn, devices=18)
    city = write_city_map(tmp_path)
    with serving(timescale_database.dsn, districts_file=str(city)) as dashboard, chromium() as b:
        b.set_window_size(1600, 860)
        browser_login(b, dashboard.url, "planner", PASSWORD)
        b.get(dashboard.url + "/")
        WebDriverWait(b, 30).until(lambda b: len(b.execute_script(MAP_POINTS)) == len(names))
        drawn = b.execute_script(
            "return document.querySelector('#overview-map .js-plotly-plot').data.map(t => t.name);"
        )
        assert {"River Wend", "Ring Road", "Northfield Park", "City Centre"} <= set(drawn)
        assert drawn[:3] == ["Traffic", "Air quality", "Waste bins"]
        screenshot(b, "page-overview-demo-city")
