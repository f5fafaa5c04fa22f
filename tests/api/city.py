"""A small planted city behind a real planner API: devices of every family, two days of
minute readings with a known gap, rollups refreshed by the real code, alerts with history."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import uvicorn
from psycopg.conninfo import make_conninfo

from api import tokens
from api.app import create_app
from api.config import ApiConfig
from ingest import rollups
from tests.ingest.helpers import member_of
from tests.services.patroni import wait_standbys_replayed

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 2
MINUTES = DAYS * 24 * 60
GAP = (T0 + timedelta(hours=10), T0 + timedelta(hours=12))  # aq-0002 silent: [10:00, 12:00)

# device, family, site, lat, lon, [(sensor, metric, unit, mean)]
Stream = tuple[str, str, str, float]
DEVICES: tuple[tuple[str, str, str, float | None, float | None, list[Stream]], ...] = (
    ("aq-0001", "air", "north", 51.51, -0.12, [
        ("aq", "pm2_5", "ug/m3", 12.0), ("aq", "pm10", "ug/m3", 20.0),
        ("aq", "no2", "ug/m3", 35.0), ("climate", "temperature", "degC", 8.0),
        ("climate", "humidity", "%", 70.0),
    ]),
    ("aq-0002", "air", "south", 51.49, -0.10, [("aq", "pm2_5", "ug/m3", 30.0)]),
    ("tf-0001", "traffic", "north", 51.52, -0.11, [
        ("loop", "vehicle_count", "count", 40.0), ("loop", "speed_mean", "km/h", 35.0),
        ("loop", "occupancy", "%", 20.0),
    ]),
    ("wb-0001", "waste", "south", 51.48, -0.13, [
        ("bin", "fill_level", "%", 60.0), ("bin", "temperature", "degC", 12.0),
        ("bin", "tilt", "deg", 3.0),
    ]),
    ("aq-0009", "air", "east", None, None, []),  # registered, never reported
)  # fmt: skip
ROLES = ("planner", "operator", "technician", "admin")


@dataclass
class City:
    """The API's address, a token per role, and the databases behind it."""

    url: str
    admin_dsn: str
    tokens: dict[str, str] = field(default_factory=dict)
    revoked_token: str = ""

    def auth(self, role: str) -> dict[str, str]:
        """The header that authenticates as ``role``."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def plant(dsn: str) -> None:
    """Devices, readings (value = mean + a daily wave), latest values, rollups and alerts."""
    with psycopg.connect(dsn) as conn:
        for device, family, site, lat, lon, streams in DEVICES:
            conn.execute(
                "INSERT INTO devices (device_id, site, family, name, lat, lon, state, last_seen,"
                " status) VALUES (%s, %s, %s, %s, %s, %s, 'online', %s, %s)",
                (device, site, family, f"{family} {device}", lat, lon, T0 + timedelta(days=DAYS),
                 '{"software": "0.1.0"}'),
            )  # fmt: skip
            for sensor, metric, unit, mean in streams:
                (stream_id,) = conn.execute(
                    "INSERT INTO streams (device_id, sensor, metric, unit) VALUES (%s, %s, %s, %s)"
                    " RETURNING stream_id",
                    (device, sensor, metric, unit),
                ).fetchone()  # type: ignore[misc]
                conn.execute(
                    "INSERT INTO readings (ts, stream_id, value)"
                    " SELECT ts, %(id)s, %(mean)s + %(mean)s / 10"
                    "   * sin(extract(epoch FROM ts) / 86400 * 2 * pi())"
                    " FROM generate_series(%(t0)s::timestamptz, %(t1)s, interval '1 minute') ts"
                    " WHERE %(device)s <> 'aq-0002' OR ts < %(g0)s OR ts >= %(g1)s",
                    {"id": stream_id, "mean": mean, "t0": T0, "device": device,
                     "t1": T0 + timedelta(minutes=MINUTES - 1), "g0": GAP[0], "g1": GAP[1]},
                )  # fmt: skip
        conn.execute(
            "INSERT INTO latest SELECT DISTINCT ON (stream_id) stream_id, ts, value"
            " FROM readings ORDER BY stream_id, ts DESC"
        )
        minutes = np.arange(MINUTES, dtype=np.int64) * 60_000_000 + int(T0.timestamp() * 1e6)
        conn.execute(rollups.MARK_DIRTY, (rollups.dirty_minutes(minutes),))
        _alerts(conn)

    async def roll_up() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await rollups.refresh_all(conn, settle_s=0, limit=5000)

    asyncio.run(roll_up())


def _alerts(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    def stream(device: str, metric: str) -> int:
        row = conn.execute(
            "SELECT stream_id FROM streams WHERE device_id = %s AND metric = %s", (device, metric)
        ).fetchone()
        assert row is not None
        return int(str(row[0]))

    plan = (
        ("aq-0001", "north", "pm2_5", "spike", "warning", "resolved", 1),
        ("tf-0001", "north", "speed_mean", "congestion", "warning", "open", 2),
        ("wb-0001", "south", "fill_level", "overflow", "critical", "acknowledged", 3),
    )
    for device, site, metric, kind, severity, state, hour in plan:
        at = T0 + timedelta(hours=hour)
        (alert_id,) = conn.execute(
            "INSERT INTO alerts (stream_id, device_id, site, kind, severity, state, message,"
            " score, started_at, opened_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 0.9, %s, %s)"
            " RETURNING alert_id",
            (
                stream(device, metric),
                device,
                site,
                kind,
                severity,
                state,
                f"{kind} at {device}",
                at,
                at,
            ),
        ).fetchone()  # type: ignore[misc]
        conn.execute(
            "INSERT INTO alert_events (alert_id, at, action, actor) VALUES (%s, %s, 'opened',"
            " 'detector')", (alert_id, at),
        )  # fmt: skip
        if state != "open":
            conn.execute(
                "INSERT INTO alert_events (alert_id, at, action, actor, comment)"
                " VALUES (%s, %s, 'acknowledged', 'ops-anna', 'crew sent')",
                (alert_id, at + timedelta(minutes=5)),
            )
        if state == "resolved":
            conn.execute(
                "INSERT INTO alert_events (alert_id, at, action, actor, comment)"
                " VALUES (%s, %s, 'resolved', 'ops-anna', 'cleaned the inlet')",
                (alert_id, at + timedelta(minutes=30)),
            )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(admin_dsn: str, *, reads_prefer_standby: bool = False) -> Iterator[City]:
    """The real API (uvicorn, on loopback) on a login of the ``smartcity_api`` role.

    With ``reads_prefer_standby`` its reads go to a standby of the (multi-host) ``admin_dsn``.
    """
    port = _free_port()
    login = member_of(admin_dsn, "smartcity_api")
    reads = make_conninfo(login, target_session_attrs="prefer-standby")
    config = ApiConfig(
        database_url=login,
        read_database_url=reads if reads_prefer_standby else "",
        port=port,
        pool_size=4,
    )
    city = City(f"http://127.0.0.1:{port}", admin_dsn)
    with psycopg.connect(admin_dsn) as conn:
        for role in ROLES:
            city.tokens[role] = tokens.create(conn, f"test-{role}", role)
        city.revoked_token = tokens.create(conn, "test-revoked", "admin")
        tokens.revoke(conn, "test-revoked")
    if reads_prefer_standby:
        # The read pool connects at start-up: a standby that has not replayed the new login
        # refuses it, and libpq's prefer-standby then settles on the primary for good.
        wait_standbys_replayed(admin_dsn, timeout_s=30)
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the API stopped while starting"
        assert time.monotonic() < deadline, "the API did not start within 20 s"
        time.sleep(0.05)
    try:
        yield city
    finally:
        server.should_exit = True
        thread.join(timeout=20)
