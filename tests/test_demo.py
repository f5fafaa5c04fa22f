"""`smartcity demo` as a user runs it: every device in the database within 60 s, the dashboard
and the planner API showing them, data kept between runs, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser import axe_violations, chromium, waiting
from tests.dashboard.test_alerts_page import screenshot
from tests.dashboard.test_overview import MAP_POINTS

DEVICES = 60


def read_line(process: subprocess.Popen[str], pattern: str, timeout_s: float) -> re.Match[str]:
    """Read the demo's output until a line matches ``pattern`` (bounded)."""
    deadline = time.monotonic() + timeout_s
    seen = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def reporting_devices(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT s.device_id), (SELECT count(*) FROM readings)"
            " FROM latest l JOIN streams s USING (stream_id)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def history_days(dsn: str) -> float:
    """Days between the oldest and the newest reading stored."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM max(ts) - min(ts)) / 86400 FROM readings"
        ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def worked_alerts(dsn: str) -> set[str]:
    """What the demo operator did to alerts, with a comment each time."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT DISTINCT action FROM alert_events WHERE actor = 'demo-operator'"
            " AND comment <> ''"
        ).fetchall()
    return {str(r[0]) for r in rows}


def clocks(dsn: str) -> dict[str, int]:
    """Devices by the clock state their status reports."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT status->>'clock_synced', count(*) FROM devices GROUP BY 1"
        ).fetchall()
    return {str(state): int(n) for state, n in rows}


def alert_states(dsn: str) -> set[str]:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return {str(r[0]) for r in conn.execute("SELECT DISTINCT state FROM alerts").fetchall()}


def eventually(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Whether ``condition`` holds within ``timeout_s`` (asked every second)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1)
    return condition()


def live_alert_devices(dsn: str, since: datetime) -> set[str]:
    """Devices with an unresolved alert that started after the history: the incidents'."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT DISTINCT device_id FROM alerts WHERE started_at > %s AND state <> 'resolved'",
            (since,),
        ).fetchall()
    return {str(r[0]) for r in rows}


CHART_SPAN = """
const plot = document.querySelector('#history-chart .js-plotly-plot');
if (!plot || !plot.data) { return null; }
const xs = plot.data.flatMap(t => Array.from(t.x || [])).map(x => Date.parse(x)).filter(x => x);
if (!xs.length) { return null; }
const box = document.getElementById('history-chart').getBoundingClientRect();
return [(Math.max(...xs) - Math.min(...xs)) / 86400000, box.bottom, window.innerHeight];
"""


def tour(login_url: str, dsn: str, data_dir: Path) -> None:
    """Each page of a fresh demo in Chromium at 1600x860, checked and kept as a screenshot."""
    history_end = datetime.fromisoformat(json.loads((data_dir / "history.json").read_text())["end"])
    base = login_url.split("/login/", maxsplit=1)[0]
    with chromium() as browser:
        browser.set_window_size(1600, 860)
        browser.get(login_url)
        wait = waiting(browser, 60)
        wait.until(lambda b: len(b.execute_script(MAP_POINTS)) == DEVICES)
        # The scripted incidents: a live alert on the overview within its first minutes.
        assert eventually(lambda: bool(live_alert_devices(dsn, history_end)), 240)
        wait.until(lambda b: any(
            f"at {device} " in b.find_element(By.CSS_SELECTOR, ".feed").text
            for device in live_alert_devices(dsn, history_end)))  # fmt: skip
        screenshot(browser, "demo-overview")
        assert axe_violations(browser) == [], "overview"

        browser.get(base + "/history")  # seven days, the chart in the first screen
        wait.until(lambda b: b.execute_script(CHART_SPAN) is not None)
        span, bottom, screen = browser.execute_script(CHART_SPAN)
        assert span > 6.9, span
        assert bottom <= screen, (bottom, screen)
        screenshot(browser, "demo-history")
        assert axe_violations(browser) == [], "history"

        browser.get(base + "/alerts")  # the week's alerts worked by the demo operator
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "tr[data-alert]"))
        screenshot(browser, "demo-alerts")
        assert axe_violations(browser) == [], "alerts"

        browser.get(base + "/fleet")  # no simulated device flagged for its clock
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "main .page table"))
        assert "not synchronised" not in browser.find_element(By.TAG_NAME, "main").text.lower()
        screenshot(browser, "demo-fleet")
        assert axe_violations(browser) == [], "fleet"

        browser.get(base + "/sensor")  # from the menu: a device, not an error
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#sensor-notes p"))
        screenshot(browser, "demo-sensor")
        assert axe_violations(browser) == [], "sensor"


def start_demo(data_dir: Path, broker: str, *more: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smartcity",
            "demo",
            "--data-dir",
            str(data_dir),
            "--broker",
            broker,
            "--mqtt-port",
            "0",
            "--port",
            "0",
            "--api-port",
            "0",
            "--devices",
            str(DEVICES),
            *more,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_demo(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)  # what Ctrl-C does
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "demo stopped" in output
    return output


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("broker", ["mosquitto", "builtin"])
def test_demo_fills_the_database_and_the_dashboard_then_stops_cleanly(broker: str) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="smartcity-demo-"))
    process = start_demo(data_dir, broker)
    try:
        started = time.monotonic()
        read_line(process, rf"MQTT broker \({broker}\)", 60)
        url = read_line(process, r"dashboard: (http://\S+/login/link/\S+)", 60)[1]
        api = read_line(process, r"planner API: (http://\S+)/docs", 60)[1]
        token = read_line(process, r"planner token: (sct_\S+)", 60)[1]
        assert time.monotonic() - started < 90, "the dashboard's address came after 90 s"
        dsn = f"postgresql://postgres:@/smartcity?host={data_dir / 'pgdata'}"
        # A new data directory starts with a week of history, judged by the detectors, and an
        # operator's work on some of its alerts.
        read_line(process, r"history written: [\d,]+ readings", 240)
        assert history_days(dsn) > 6.99  # a reading a minute from seven days back
        assert eventually(lambda: worked_alerts(dsn) == {"acknowledged", "resolved"}, 120)
        assert "resolved" in alert_states(dsn)
        count = (0, 0)
        while time.monotonic() - started < 180 and count[0] < DEVICES:
            time.sleep(1)
            count = reporting_devices(dsn)
        assert count[0] == DEVICES, f"only {count[0]} of {DEVICES} devices stored readings in 180 s"
        # Simulated devices report their own (synchronised) clocks, whatever the host's.
        assert eventually(lambda: clocks(dsn).get("true", 0) >= DEVICES // 2, 120), clocks(dsn)
        assert "false" not in clocks(dsn)

        request = urllib.request.Request(
            f"{api}/v1/devices", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback
            assert len(json.load(response)["items"]) == DEVICES
        if broker == "mosquitto":
            tour(url, dsn, data_dir)
        else:
            with chromium() as browser:
                browser.get(url)
                WebDriverWait(browser, 30).until(
                    lambda b: len(b.execute_script(MAP_POINTS)) == DEVICES
                )
        # Each service on its least-privilege role, none as the database's owner.
        with psycopg.connect(dsn) as conn:
            users = {
                str(row[0])
                for row in conn.execute(
                    "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = 'smartcity'"
                ).fetchall()
            }
        assert {"demo_ingest", "demo_dashboard", "demo_api"} <= users, users
        if broker == "builtin":
            # A second demo on the same machine chooses its own ports, ingest's health port too.
            other = start_demo(
                Path(tempfile.mkdtemp(prefix="smartcity-demo-")), broker, "--history-days", "0"
            )
            try:
                # Its first report comes 15 s in, once every service has stayed up that long.
                read_line(other, r"devices reporting", 90)
            finally:
                output = stop_demo(other)
            assert "exited with" not in output, output
    finally:
        if process.poll() is None:
            stop_demo(process)
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "PostgreSQL left running"

    # A second run keeps what the first stored.
    _, readings_before = count
    process = start_demo(data_dir, broker)
    try:
        read_line(process, r"dashboard: ", 60)
        _, readings_after = reporting_devices(
            f"postgresql://postgres:@/smartcity?host={data_dir / 'pgdata'}"
        )
        assert readings_after >= readings_before
    finally:
        stop_demo(process)
