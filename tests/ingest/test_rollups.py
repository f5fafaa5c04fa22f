"""Rollups stay equal to a fresh aggregate of the raw readings, whatever the arrival order."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import psycopg

from edge.topics import telemetry_topic
from ingest import rollups
from ingest.columns import Columns
from ingest.service import Pool
from ingest.validate import to_us
from ingest.writer import PostgresStore, WriteBatch
from tests.conftest import BrokerAddress, Database
from tests.ingest.helpers import batch_payload, publish_all, recent, register, stored_keys
from tests.ingest.running import eventually, ingest_config, running_ingest

START = datetime(2026, 11, 22, 22, 50, tzinfo=UTC)  # batches straddle an hour and a day

# The reference: every level computed from scratch, straight from the raw readings.
FROM_SCRATCH = """
SELECT stream_id, date_trunc(%(unit)s, ts, 'UTC') AS bucket, count(*), sum(value), min(value),
       max(value), max(ts), (array_agg(value ORDER BY ts DESC))[1]
FROM readings GROUP BY 1, 2 ORDER BY 1, 2
"""
STORED = """
SELECT stream_id, bucket, n, total, low, high, last_ts, last_value
FROM {table} ORDER BY 1, 2
"""


def _rounded(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    # Sums of floats depend on the order they are added in: compare them to 1e-9.
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]


def assert_rollups_match(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        for table, unit in (("rollup_1m", "minute"), ("rollup_1h", "hour"), ("rollup_1d", "day")):
            expected = conn.execute(FROM_SCRATCH, {"unit": unit}).fetchall()
            stored = conn.execute(STORED.format(table=table)).fetchall()
            assert _rounded(stored) == _rounded(expected), table


def _batches(streams: list[int], seed: int) -> list[Columns]:
    """Readings over 25 minutes for each stream, shuffled into uneven batches."""
    rng = random.Random(seed)
    readings = [
        (stream, to_us(START + timedelta(seconds=7 * i)), round(rng.uniform(-5, 50), 3))
        for stream in streams
        for i in range(25 * 60 // 7)
    ]
    rng.shuffle(readings)
    batches = []
    while readings:
        size = rng.randint(1, 60)
        part, readings = readings[:size], readings[size:]
        columns = Columns()
        for reading in part:
            columns.append(*reading)
        batches.append(columns)
    return batches


async def test_rollups_equal_a_fresh_aggregate_after_shuffled_late_and_repeated_writes(
    pool: Pool, database: Database
) -> None:
    store = PostgresStore(pool)
    ids = await store.streams(
        {("aq-0001", "aq", "pm2_5"): "ug/m3", ("aq-0002", "aq", "no2"): "ug/m3"}
    )
    batches = _batches(sorted(ids.values()), seed=11)
    late, early = batches[: len(batches) // 3], batches[len(batches) // 3 :]
    for batch in early:
        await store.write(WriteBatch(readings=batch))
    async with pool.connection() as conn:
        assert await rollups.refresh_all(conn, settle_s=0) > 0
    assert_rollups_match(database.dsn)

    # Late readings for minutes, hours and a day already rolled up, then redeliveries.
    for batch in late:
        await store.write(WriteBatch(readings=batch))
    for batch in early[:5]:
        await store.write(WriteBatch(readings=batch))
    async with pool.connection() as conn:
        await rollups.refresh_all(conn, settle_s=0, limit=3)  # in many small steps
    assert_rollups_match(database.dsn)
    with psycopg.connect(database.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM rollup_dirty").fetchone() == (0,)


async def test_a_second_refresher_waits_its_turn(pool: Pool, database: Database) -> None:
    store = PostgresStore(pool)
    ids = await store.streams({("aq-0001", "aq", "pm2_5"): "ug/m3"})
    for batch in _batches(list(ids.values()), seed=12)[:10]:
        await store.write(WriteBatch(readings=batch))
    async with pool.connection() as first, pool.connection() as second, first.transaction():
        await first.execute("SELECT pg_advisory_xact_lock(%s)", (rollups._LOCK_KEY,))
        assert (await rollups.refresh(second, settle_s=0)).skipped
    async with pool.connection() as conn:
        assert (await rollups.refresh(conn, settle_s=0)).minutes > 0
    assert_rollups_match(database.dsn)


def test_dirty_minutes_are_the_distinct_minutes_of_a_batch() -> None:
    import numpy as np  # noqa: PLC0415

    ts = np.array([0, 59_999_999, 1, 60_000_000, -1], dtype=np.int64)
    assert rollups.dirty_minutes(ts) == [-1, 0, 1]


async def test_the_running_service_keeps_the_rollups_up_to_date(
    broker: BrokerAddress, database: Database, unique_site: str
) -> None:
    register(database.dsn, [("aq-0301", unique_site)])
    config = ingest_config(broker, database.dsn, rollup_every_s=0.2, rollup_settle_s=0)
    async with running_ingest(config):
        messages = [
            (telemetry_topic(unique_site, "aq-0301"), batch_payload("aq-0301", seq, recent(), 3))
            for seq in range(1, 4)
        ]
        await asyncio.to_thread(publish_all, broker, messages)

        def rolled_up() -> bool:
            with psycopg.connect(database.dsn) as conn:
                row = conn.execute("SELECT coalesce(sum(n), 0) FROM rollup_1d").fetchone()
            return row == (len(stored_keys(database.dsn)),) and row != (0,)

        assert await eventually(rolled_up)
    assert_rollups_match(database.dsn)


async def test_the_minute_still_filling_waits_until_it_has_settled(
    pool: Pool, database: Database
) -> None:
    store = PostgresStore(pool)
    ids = await store.streams({("aq-0001", "aq", "pm2_5"): "ug/m3"})
    now = Columns()
    now.append(next(iter(ids.values())), to_us(datetime.now(UTC)), 1.0)
    await store.write(WriteBatch(readings=now))
    async with pool.connection() as conn:
        assert (await rollups.refresh(conn, settle_s=30)).minutes == 0
    with psycopg.connect(database.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM rollup_dirty").fetchone() == (1,)
