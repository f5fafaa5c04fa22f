"""Rollups stay equal to a fresh aggregate of the raw readings, whatever the arrival order."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import psycopg

from edge.timestamps import to_us
from edge.topics import telemetry_topic
from ingest import rollups
from ingest.columns import Columns
from ingest.schema.zone import city_zone, set_city_zone
from ingest.service import Pool
from ingest.writer import PostgresStore, WriteBatch
from tests.ingest.helpers import batch_payload, publish_all, recent, register, stored_keys
from tests.ingest.running import eventually, ingest_config, running_ingest
from tests.services.handles import BrokerAddress, Database

START = datetime(2026, 11, 22, 22, 50, tzinfo=UTC)  # batches straddle an hour and a day

# The reference: every level computed from scratch, straight from the raw readings.
FROM_SCRATCH = """
SELECT stream_id, date_trunc(%(unit)s, ts, %(zone)s) AS bucket, count(*), sum(value), min(value),
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
        zone = city_zone(conn)  # days are the city's local days; minutes and hours UTC
        for table, unit in (("rollup_1m", "minute"), ("rollup_1h", "hour"), ("rollup_1d", "day")):
            where = zone if unit == "day" else "UTC"
            expected = conn.execute(FROM_SCRATCH, {"unit": unit, "zone": where}).fetchall()
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


async def _write_every(pool: Pool, stream: int, start: datetime, hours: int, step_s: int) -> None:
    columns = Columns()
    for k in range(hours * 3600 // step_s):
        columns.append(stream, to_us(start + timedelta(seconds=step_s * k)), float(k % 17))
    await PostgresStore(pool).write(WriteBatch(readings=columns))


async def test_days_are_the_citys_local_days_across_daylight_saving(
    pool: Pool, database: Database
) -> None:
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        set_city_zone(conn, "Europe/London")
    ids = await PostgresStore(pool).streams({("aq-0001", "aq", "pm2_5"): "ug/m3"})
    stream = ids[("aq-0001", "aq", "pm2_5")]
    for first in (datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 10, 24, 12, tzinfo=UTC)):
        await _write_every(pool, stream, first, 48, 600)
    async with pool.connection() as conn:
        await rollups.refresh_all(conn, settle_s=0, limit=10_000)
    assert_rollups_match(database.dsn)
    with psycopg.connect(database.dsn) as conn:
        days: dict[object, object] = dict(
            conn.execute("SELECT bucket, n FROM rollup_1d ORDER BY 1").fetchall()
        )
    assert days[datetime(2026, 3, 29, tzinfo=UTC)] == 23 * 6  # 29 March: 23 hours
    assert days[datetime(2026, 10, 24, 23, tzinfo=UTC)] == 25 * 6  # 25 October: 25 hours


async def test_a_new_zone_moves_the_day_rollups(pool: Pool, database: Database) -> None:
    ids = await PostgresStore(pool).streams({("aq-0001", "aq", "pm2_5"): "ug/m3"})
    await _write_every(pool, ids[("aq-0001", "aq", "pm2_5")], START, 50, 300)
    async with pool.connection() as conn:
        await rollups.refresh_all(conn, settle_s=0, limit=10_000)
    assert_rollups_match(database.dsn)  # UTC days, as recorded by the migration
    for zone in ("Asia/Kolkata", "America/New_York", "UTC"):  # half-hour offset, then hours
        with psycopg.connect(database.dsn, autocommit=True) as conn:
            assert set_city_zone(conn, zone)
            assert not set_city_zone(conn, zone)  # already so: nothing recomputed
            assert city_zone(conn) == zone
        assert_rollups_match(database.dsn)
