"""The control room's overview with 10,000 sensors: first render, and what each live update costs.

    python benchmarks/dashboard.py               # 10,000 devices, a table
    python benchmarks/dashboard.py --json        # one JSON object
    python benchmarks/dashboard.py --devices 2000 --rounds 3

Starts its own PostgreSQL + TimescaleDB (as the test suite does) with ``--devices`` devices
over 10 districts, each with a stream and a latest value, runs the real dashboard (waitress on
loopback, one shared snapshot timer) and a real headless Chromium, then measures:

1. ``first_render_s``: from asking for the overview (logged in) until every device is on the
   map in Chromium, as a median of ``--renders``;
2. ``update_bytes`` and ``update_server_ms``: one live update after 1 % of the devices
   changed status (a patch of those points), as the page asks for it: the response's size on
   the wire and the server's own time (its ``Server-Timing`` header); medians of ``--rounds``;
3. ``naive_update_bytes`` and ``naive_update_server_ms``: the same tick answered the naive way,
   the whole figure and page rebuilt (what a page that has no version gets).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from waitress.server import create_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dashboard import accounts  # noqa: E402
from dashboard.app import create_app  # noqa: E402
from dashboard.config import DashboardConfig  # noqa: E402
from edge.fleet import plan_fleet  # noqa: E402
from ingest.registry import DeviceRecord, register_devices  # noqa: E402
from ingest.schema import migrate  # noqa: E402
from tests.browser import chromium  # noqa: E402
from tests.dashboard.serving import PASSWORD, browser_login, login  # noqa: E402
from tests.services.postgres import PostgresServer, create_database, replace_dbname  # noqa: E402

REFRESH_S = 2.0
DEBUG = False
OUTPUTS = (
    "..overview-cards.children...overview-districts.children...overview-map.figure"
    "...overview-table.children...overview-feed.children...shell-last-update.children"
    "...overview-version.data.."
)
POINTS_ON_MAP = """
const plot = document.querySelector('#overview-map .js-plotly-plot');
if (!plot || !plot.data) { return 0; }
return plot.data.filter(t => t.customdata).reduce((n, t) => n + t.customdata.length, 0);
"""


def log(message: str) -> None:
    print(f"[dashboard] {message}", file=sys.stderr, flush=True)


def populate(dsn: str, count: int) -> list[str]:
    """Devices over the demo districts, one stream and a latest value each, all live."""
    specs = plan_fleet(count, seed=7)
    register_devices(
        dsn, [DeviceRecord(s.device, s.site, s.family, s.name, s.lat, s.lon) for s in specs]
    )
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO streams (device_id, sensor, metric, unit) SELECT device_id, 's',"
            " CASE family WHEN 'air' THEN 'pm2_5' WHEN 'waste' THEN 'fill_level'"
            " ELSE 'vehicle_count' END,"
            " CASE family WHEN 'air' THEN 'ug/m3' WHEN 'waste' THEN '%' ELSE 'count' END"
            " FROM devices"
        )
        conn.execute("INSERT INTO latest SELECT stream_id, now(), 10 + stream_id % 70 FROM streams")
        conn.execute("UPDATE devices SET last_seen = now(), state = 'online'")
    return [s.device for s in specs]


def flip(dsn: str, devices: list[str], silent: bool) -> None:
    """1 % of the devices fall silent (or report again)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE devices SET last_seen = now() - CASE WHEN %s THEN interval '1 hour'"
            " ELSE interval '0' END WHERE device_id = ANY(%s)",
            (silent, devices),
        )


def ask(client: httpx.Client, shown: dict[str, Any] | None) -> tuple[int, float, dict[str, Any]]:
    """One overview tick as the page sends it: (bytes, server ms, the new version)."""
    body = {
        "output": OUTPUTS,
        "outputs": [
            dict(zip(("id", "property"), part.split(".", 1), strict=True))
            for part in OUTPUTS.strip(".").split("...")
        ],
        "inputs": [{"id": "shell-refresh", "property": "n_intervals", "value": 1}],
        "state": [{"id": "overview-version", "property": "data", "value": shown}],
        "changedPropIds": ["shell-refresh.n_intervals"],
    }
    headers = {"X-CSRFToken": client.cookies.get("_csrf_token") or ""}
    response = client.post("/_dash-update-component", json=body, headers=headers)
    assert response.status_code == 200, response.text[:300]
    timing = re.search(r"dur=([0-9.]+)", response.headers.get("server-timing", ""))
    answer = response.json()["response"]
    if DEBUG:
        log(str({k: len(json.dumps(v)) for k, v in answer.items()}))
    version = answer["overview-version"]["data"]
    return len(response.content), float(timing[1]) if timing else float("nan"), version


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7, help="live updates measured")
    parser.add_argument("--renders", type=int, default=3, help="first renders measured")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    server = PostgresServer()
    server.start()
    try:
        create_database(server.dsn(), "control")
        dsn = replace_dbname(server.dsn(), "control")
        migrate(dsn, timescaledb="require")
        devices = populate(dsn, args.devices)
        with psycopg.connect(dsn) as conn:
            accounts.create(conn, "planner", "planner", PASSWORD)
        config = DashboardConfig(database_url=dsn, port=0, refresh_s=REFRESH_S,
                                 secret_key=secrets.token_urlsafe(32), cookie_secure=False)  # fmt: skip
        app = create_app(config)
        web = create_server(app.server, host="127.0.0.1", port=0, threads=8)
        threading.Thread(target=web.run, daemon=True).start()
        url = f"http://127.0.0.1:{web.effective_port}"
        figures = measure(args, dsn, url, devices)
        web.close()
    finally:
        server.cleanup()
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"overview with {args.devices:,} devices; medians\n")
    print(f"{'':<34}{'bytes':>12}{'server ms':>12}")
    print(f"{'live update (patch, 1 % changed)':<34}{figures['update_bytes']:>12,.0f}"
          f"{figures['update_server_ms']:>12.1f}")  # fmt: skip
    print(f"{'naive update (full rebuild)':<34}{figures['naive_update_bytes']:>12,.0f}"
          f"{figures['naive_update_server_ms']:>12.1f}")  # fmt: skip
    print(f"\nfirst render in Chromium: {figures['first_render_s']:.2f} s;"
          f" updates {figures['bytes_ratio']:.0f}x smaller,"
          f" {figures['server_ratio']:.1f}x less server time than the naive page")  # fmt: skip
    return 0


def measure(args: argparse.Namespace, dsn: str, url: str, devices: list[str]) -> dict[str, Any]:
    """First renders in Chromium, then live and naive ticks over HTTP."""
    renders = []
    with chromium() as browser:
        browser_login(browser, url, "planner", PASSWORD)
        for _ in range(args.renders):
            started = time.perf_counter()
            browser.get(url + "/")
            deadline = started + 60
            while browser.execute_script(POINTS_ON_MAP) < args.devices:
                assert time.perf_counter() < deadline, "the map did not fill in 60 s"
                time.sleep(0.02)
            renders.append(time.perf_counter() - started)
    log(f"first renders: {', '.join(f'{r:.2f} s' for r in renders)}")
    with httpx.Client(base_url=url, timeout=60) as client:
        return _ticks(args, dsn, client, devices, renders)


def _ticks(
    args: argparse.Namespace,
    dsn: str,
    client: httpx.Client,
    devices: list[str],
    renders: list[float],
) -> dict[str, Any]:
    """Live ticks (patches) and naive ticks (full rebuilds) over HTTP, after 1 % changed."""
    assert login(client, "planner", PASSWORD).status_code == 302
    _, _, shown = ask(client, None)
    patch_bytes, patch_ms, naive_bytes, naive_ms = [], [], [], []
    changing = devices[::100]  # 1 %: silent one round, back the next
    for round_ in range(args.rounds):
        flip(dsn, changing, silent=round_ % 2 == 0)
        time.sleep(REFRESH_S * 1.5)  # the snapshot timer's next turn
        size, ms, shown = ask(client, shown)
        patch_bytes.append(size)
        patch_ms.append(ms)
        size, ms, _ = ask(client, None)
        naive_bytes.append(size)
        naive_ms.append(ms)
    figures: dict[str, Any] = {
        "devices": args.devices,
        "first_render_s": statistics.median(renders),
        "update_bytes": statistics.median(patch_bytes),
        "update_server_ms": statistics.median(patch_ms),
        "naive_update_bytes": statistics.median(naive_bytes),
        "naive_update_server_ms": statistics.median(naive_ms),
    }
    figures["bytes_ratio"] = figures["naive_update_bytes"] / figures["update_bytes"]
    figures["server_ratio"] = figures["naive_update_server_ms"] / figures["update_server_ms"]
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
