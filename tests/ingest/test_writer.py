"""The batch writer on both databases: COPY, deduplication, latest values, rejections, statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from edge.contract import Status
from ingest.service import Pool, open_pool
from ingest.validate import Rejection
from ingest.writer import PostgresStore, Row, WriteBatch
from tests.conftest import Database
from tests.ingest.helpers import register, stored_keys

AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
async def pool(database: Database) -> AsyncIterator[Pool]:
    register(database.dsn, [("aq-0001", "centre"), ("aq-0002", "north")])
    async with open_pool(database.dsn) as pool:
        await pool.wait(timeout=10)
        yield pool


def rows(device: str, start: datetime, count: int, metric: str = "pm2_5") -> list[Row]:
    return [
        Row(device, "aq", metric, "ug/m3", start + timedelta(seconds=i), float(i))
        for i in range(count)
    ]


async def test_rows_are_stored_once_even_when_redelivered(pool: Pool, database: Database) -> None:
    store = PostgresStore(pool)
    first = await store.write(WriteBatch(rows=rows("aq-0001", AT, 100)))
    again = await store.write(WriteBatch(rows=rows("aq-0001", AT + timedelta(seconds=50), 100)))
    assert (first.inserted, first.duplicates) == (100, 0)
    assert (again.inserted, again.duplicates) == (50, 50)
    assert len(stored_keys(database.dsn)) == 150


async def test_duplicates_inside_one_batch_are_stored_once(pool: Pool, database: Database) -> None:
    store = PostgresStore(pool)
    result = await store.write(WriteBatch(rows=rows("aq-0001", AT, 5) * 2))
    assert (result.inserted, result.duplicates) == (5, 5)


async def test_streams_are_created_once_and_reused(pool: Pool, database: Database) -> None:
    await PostgresStore(pool).write(WriteBatch(rows=rows("aq-0001", AT, 3)))
    # A second store (another worker) resolves the same stream ids from the database.
    await PostgresStore(pool).write(
        WriteBatch(rows=rows("aq-0001", AT + timedelta(hours=1), 3) + rows("aq-0002", AT, 2, "no2"))
    )
    with psycopg.connect(database.dsn) as conn:
        streams = conn.execute("SELECT device_id, metric FROM streams ORDER BY 1, 2").fetchall()
    assert streams == [("aq-0001", "pm2_5"), ("aq-0002", "no2")]
    assert len(stored_keys(database.dsn)) == 8


async def test_latest_keeps_the_newest_value_whatever_the_arrival_order(
    pool: Pool, database: Database
) -> None:
    store = PostgresStore(pool)
    await store.write(WriteBatch(rows=[Row("aq-0001", "aq", "pm2_5", "ug/m3", AT, 5.0)]))
    await store.write(
        WriteBatch(rows=[Row("aq-0001", "aq", "pm2_5", "ug/m3", AT - timedelta(hours=1), 99.0)])
    )
    with psycopg.connect(database.dsn) as conn:
        latest = conn.execute("SELECT ts, value FROM latest").fetchall()
    assert latest == [(AT, 5.0)]


async def test_rejections_seen_and_status_are_written_with_the_batch(
    pool: Pool, database: Database
) -> None:
    batch = WriteBatch(
        rows=rows("aq-0001", AT, 1),
        rejections=[
            Rejection(
                "city/v1/centre/aq-0001/telemetry",
                "aq-0001",
                "malformed_json",
                "payload is not JSON",
                b"{\x00\xff",
            ),
            Rejection(
                "city/v1/centre/aq-0001/telemetry",
                "aq-0001",
                "non_finite",
                "value is nan",
                b"{}",
                reading_index=2,
            ),
        ],
        seen={"aq-0001": (AT, 41)},
        statuses={"aq-0002": (AT, Status("aq-0002", "online", AT, {"backlog": 3}))},
    )
    await PostgresStore(pool).write(batch)
    with psycopg.connect(database.dsn) as conn:
        rejected = conn.execute(
            "SELECT reason, reading_index, payload FROM rejections ORDER BY id"
        ).fetchall()
        devices = conn.execute(
            "SELECT device_id, last_seen, last_seq, state, status FROM devices ORDER BY 1"
        ).fetchall()
    assert rejected == [("malformed_json", None, "{\\x00\\xff"), ("non_finite", 2, "{}")]
    assert devices == [
        ("aq-0001", AT, 41, None, {}),
        ("aq-0002", None, None, "online", {"backlog": 3}),
    ]


async def test_a_failed_batch_leaves_nothing_behind(pool: Pool, database: Database) -> None:
    store = PostgresStore(pool)
    bad = [*rows("aq-0001", AT, 3), Row("unregistered", "aq", "pm2_5", "ug/m3", AT, 1.0)]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await store.write(WriteBatch(rows=bad))
    assert stored_keys(database.dsn) == []
    # The store is still usable and has not cached ids from the rolled-back transaction.
    result = await store.write(WriteBatch(rows=rows("aq-0001", AT, 3)))
    assert result.inserted == 3
