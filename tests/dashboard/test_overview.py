"""The overview page on a real database, in a real headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

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
from tests.browser import chromium
from tests.conftest import Database
from tests.dashboard.serving import PASSWORD, browser_login, serving


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


def test_queries_return_every_device_and_latest_value(
    database: Database, read_pool: ConnectionPool
) -> None:
    names = populate(database.dsn)
    frame = queries.devices(db=read_pool)
    assert sorted(frame["device_id"]) == sorted(names)
    latest = queries.latest_values(db=read_pool)
    assert len(latest) == len(names) - 1
    totals = queries.totals(datetime.now(UTC) - timedelta(minutes=5), db=read_pool)
    assert totals == {"devices": 12, "reporting": 11, "live_streams": 11, "rejections": 0}


@pytest.mark.browser
def test_overview_shows_every_device_in_a_real_browser(
    timescale_database: Database,
) -> None:
    names = populate(timescale_database.dsn)
    with serving(timescale_database.dsn) as dashboard, chromium() as browser:
        browser_login(browser, dashboard.url, "planner", PASSWORD)
        browser.get(dashboard.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "tr[data-device]"))
        )
        # One script reads the table at once: live updates replace its rows every second.
        rows = browser.execute_script(
            "return Array.from(document.querySelectorAll('tr[data-device]'))"
            ".map(r => [r.dataset.device, r.querySelector('.status').textContent]);"
        )
        assert sorted(device for device, _ in rows) == sorted(names)
        # Status is written out, not only coloured.
        assert {status for _, status in rows} == {"live", "never reported"}
        wait.until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, "#overview-map .main-svg")
            )
        )
        legend = browser.find_element(By.CSS_SELECTOR, "#overview-map .legend").text
        assert "Air quality: live" in legend
        assert "Updated" in browser.find_element(By.ID, "shell-last-update").text
