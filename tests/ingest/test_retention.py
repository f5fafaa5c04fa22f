"""Retention drops what the policy no longer keeps, and nothing else, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest import retention
from ingest.config import IngestConfig
from ingest.retention import Retention
from ingest.service import Pool
from smartcity.cli import main
from tests.ingest.helpers import register
from tests.services.handles import Database

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
POLICY = Retention(raw_days=90, minute_days=730)


def _fill(dsn: str) -> int:
    """A reading every 6 hours for 120 days, and rollup rows from 3 years ago to now."""
    with psycopg.connect(dsn) as conn:
        stream = conn.execute(
            "INSERT INTO streams (device_id, sensor, metric, unit)"
            " VALUES ('aq-0001', 'aq', 'pm2_5', 'ug/m3') RETURNING stream_id"
        ).fetchone()
        assert stream is not None
        conn.execute(
            "INSERT INTO readings (ts, stream_id, value)"
            " SELECT %s - g * interval '6 hours', %s, g FROM generate_series(0, 480) g",
            (NOW, stream[0]),
        )
        for table in ("rollup_1m", "rollup_1h", "rollup_1d"):
            conn.execute(
                f"INSERT INTO {table} (stream_id, bucket, n, total, low, high, last_ts, last_value)"
                " SELECT %s, %s - g * interval '30 days', 1, 1, 1, 1,"
                " %s - g * interval '30 days', 1"
                " FROM generate_series(0, 36) g",
                (stream[0], NOW, NOW),
            )
        return int(stream[0])


def _times(dsn: str, query: str) -> list[datetime]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(query).fetchall()]


async def test_old_raw_data_and_old_minutes_go_and_nothing_newer(
    pool: Pool, database: Database
) -> None:
    _fill(database.dsn)
    raw_before = _times(database.dsn, "SELECT ts FROM readings ORDER BY ts")
    async with pool.connection() as conn:
        dropped = await retention.apply(conn, POLICY, now=NOW)
    cutoff = NOW - timedelta(days=90)
    raw_after = set(_times(database.dsn, "SELECT ts FROM readings"))
    assert {ts for ts in raw_before if ts >= cutoff} <= raw_after  # nothing newer is touched
    if database.kind == "timescaledb":  # whole daily chunks: all of those ending by the cutoff
        day = cutoff.replace(hour=0, minute=0)
        assert not {ts for ts in raw_after if ts < day}
        assert dropped.raw_chunks > 0
    else:
        assert min(raw_after) >= cutoff
        assert dropped.raw_rows == sum(1 for ts in raw_before if ts < cutoff)
    minutes = _times(database.dsn, "SELECT bucket FROM rollup_1m")
    assert minutes
    assert min(minutes) >= NOW - timedelta(days=730)
    for table in ("rollup_1h", "rollup_1d"):  # kept for ever
        assert len(_times(database.dsn, f"SELECT bucket FROM {table}")) == 37


async def test_readings_not_yet_rolled_up_are_kept(pool: Pool, database: Database) -> None:
    _fill(database.dsn)
    waiting = NOW - timedelta(days=100)
    with psycopg.connect(database.dsn) as conn:
        conn.execute("INSERT INTO rollup_dirty (bucket) VALUES (%s)", (waiting,))
    async with pool.connection() as conn:
        await retention.apply(conn, POLICY, now=NOW)
    assert waiting in _times(database.dsn, "SELECT ts FROM readings")


@pytest.mark.parametrize(
    "days",
    [
        {"raw_days": -1},
        {"raw_days": 800, "minute_days": 730},  # raw outliving the minutes built from it
        {"minute_days": 0, "hour_days": 365},  # minutes for ever, hours not
    ],
)
def test_a_policy_that_cannot_hold_is_refused(days: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"retention|resolution"):
        Retention(**days)
    with pytest.raises(ValueError, match=r"retention|resolution"):
        IngestConfig(**{f"retention_{k}": v for k, v in days.items()})  # type: ignore[arg-type]


def test_the_command_runs_once_and_reports(
    database: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    register(database.dsn, [("aq-0001", "centre")])
    _fill(database.dsn)
    monkeypatch.setenv("CITY_INGEST_DATABASE_URL", database.dsn)
    assert main(["retention"]) == 0
    assert "raw readings:" in capsys.readouterr().out
