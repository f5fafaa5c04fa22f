"""The batch writer on both databases: COPY, deduplication, latest values, rejections, statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from edge.contract import Status
from edge.timestamps import to_us
from ingest.columns import Columns
from ingest.service import Pool
from ingest.validate import Rejection
from ingest.writer import LiveState, PostgresStore, WriteBatch
from processing.feed import PartitionMap, decode, partition_of
from tests.ingest.helpers import stored_keys
from tests.services.handles import Database

AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


async def stream(store: PostgresStore, device: str = "aq-0001", metric: str = "pm2_5") -> int:
    ids = await store.streams({(device, "aq", metric): "ug/m3"})
    return ids[(device, "aq", metric)]


def columns(stream_id: int, start: datetime, count: int) -> Columns:
    built = Columns()
    for i in range(count):
        built.append(stream_id, to_us(start + timedelta(seconds=i)), float(i))
    return built


async def test_rows_are_stored_once_even_when_redelivered(pool: Pool, database: Database) -> None:
    store = PostgresStore(pool)
    sid = await stream(store)
    first = await store.write(WriteBatch(readings=columns(sid, AT, 100)))
    again = await store.write(WriteBatch(readings=columns(sid, AT + timedelta(seconds=50), 100)))
    assert (first.inserted, first.duplicates) == (100, 0)
    assert (again.inserted, again.duplicates) == (50, 50)
    keys = stored_keys(database.dsn)
    assert len(keys) == 150
    assert keys[0] == ("aq-0001", "aq", "pm2_5", AT, 0.0)
    assert keys[-1][3] == AT + timedelta(seconds=149)


async def test_detections_feed_gets_each_committed_reading_once_by_partition(
    pool: Pool, database: Database
) -> None:
    """A redelivered batch feeds detection only the readings it stored for the first time."""
    store = PostgresStore(pool)
    north, south = await stream(store), await stream(store, "aq-0002")
    sites = PartitionMap()
    sites.assign([north], "north")
    sites.assign([south], "south")

    def batch(start: datetime) -> WriteBatch:
        both = columns(north, start, 10)
        both.extend(columns(south, start, 10))
        return WriteBatch(readings=both, partitions=sites.of(both.arrays().stream_ids))

    await store.write(batch(AT))
    await store.write(batch(AT + timedelta(seconds=5)))  # half of it is already stored
    with psycopg.connect(database.dsn) as conn:
        rows = conn.execute(
            "SELECT partition, stream_ids, ts_us, vals FROM detection_feed ORDER BY xid, partition"
        ).fetchall()
    fed = [(int(p), decode(bytes(i), bytes(t), bytes(v))) for p, i, t, v in rows]
    assert sorted({p for p, _ in fed}) == sorted({partition_of("north"), partition_of("south")})
    by_stream: dict[int, list[int]] = {}
    for partition, readings in fed:
        for sid, ts in zip(readings.stream_ids.tolist(), readings.ts_us.tolist(), strict=True):
            assert partition == partition_of("north" if sid == north else "south")
            by_stream.setdefault(sid, []).append(ts)
    expected = [to_us(AT + timedelta(seconds=i)) for i in range(15)]
    assert {sid: sorted(ts) for sid, ts in by_stream.items()} == {north: expected, south: expected}


async def test_duplicates_inside_one_batch_are_stored_once(pool: Pool, database: Database) -> None:
    store = PostgresStore(pool)
    sid = await stream(store)
    doubled = columns(sid, AT, 5)
    doubled.extend(columns(sid, AT, 5))
    result = await store.write(WriteBatch(readings=doubled))
    assert (result.inserted, result.duplicates) == (5, 5)


async def test_streams_are_created_once_and_shared(pool: Pool, database: Database) -> None:
    one, two = PostgresStore(pool), PostgresStore(pool)  # two workers
    assert await stream(one) == await stream(two)
    other = await stream(two, "aq-0002", "no2")
    with psycopg.connect(database.dsn) as conn:
        rows = conn.execute(
            "SELECT device_id, metric, stream_id FROM streams ORDER BY 1"
        ).fetchall()
    assert [(d, m) for d, m, _ in rows] == [("aq-0001", "pm2_5"), ("aq-0002", "no2")]
    assert rows[1][2] == other


async def test_latest_keeps_the_newest_value_whatever_the_arrival_order(
    pool: Pool, database: Database
) -> None:
    store = PostgresStore(pool)
    sid = await stream(store)
    newer, older = Columns(), Columns()
    newer.append(sid, to_us(AT), 5.0)
    older.append(sid, to_us(AT - timedelta(hours=1)), 99.0)
    await store.flush_live(LiveState(readings=[newer.arrays()], seen={"aq-0001": (to_us(AT), 41)}))
    await store.flush_live(
        LiveState(readings=[older.arrays()], seen={"aq-0001": (to_us(AT) - 10, 40)})
    )
    with psycopg.connect(database.dsn) as conn:
        latest = conn.execute("SELECT ts, value FROM latest").fetchall()
        seen = conn.execute("SELECT last_seen FROM devices WHERE device_id = 'aq-0001'").fetchone()
    assert latest == [(AT, 5.0)]
    assert seen == (AT,)  # last_seen never goes backwards


async def test_rejections_and_status_are_written_with_the_batch(
    pool: Pool, database: Database
) -> None:
    store = PostgresStore(pool)
    sid = await stream(store)
    batch = WriteBatch(
        readings=columns(sid, AT, 1),
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
        statuses={"aq-0002": (to_us(AT), Status("aq-0002", "online", AT, {"backlog": 3}))},
    )
    await store.write(batch)
    with psycopg.connect(database.dsn) as conn:
        rejected = conn.execute(
            "SELECT reason, reading_index, payload FROM rejections ORDER BY id"
        ).fetchall()
        devices = conn.execute(
            "SELECT device_id, state, state_at, status FROM devices ORDER BY 1"
        ).fetchall()
    assert rejected == [("malformed_json", None, "{\\x00\\xff"), ("non_finite", 2, "{}")]
    assert devices == [
        ("aq-0001", None, None, {}),
        ("aq-0002", "online", AT, {"backlog": 3}),
    ]


async def test_a_failed_batch_leaves_nothing_behind(pool: Pool, database: Database) -> None:
    store = PostgresStore(pool)
    sid = await stream(store)
    broken = WriteBatch(
        readings=columns(sid, AT, 3),
        # A rejection whose index overflows integer: the whole transaction must roll back.
        rejections=[Rejection("t", None, "wrong_type", "d", b"p", reading_index=2**40)],
    )
    with pytest.raises(psycopg.DataError):
        await store.write(broken)
    assert stored_keys(database.dsn) == []
    result = await store.write(WriteBatch(readings=columns(sid, AT, 3)))
    assert result.inserted == 3
