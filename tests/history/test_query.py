"""The query layer on both databases: resolution, aggregation by group, gaps, bad requests."""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest

from edge.timestamps import to_us
from history.buckets import BucketRule
from history.decimate import lttb
from history.query import QueryError, aggregate, pick_level
from ingest import rollups
from ingest.columns import Columns
from ingest.service import Pool, open_pool
from ingest.writer import PostgresStore, WriteBatch
from tests.ingest.helpers import register
from tests.services.handles import Database

START = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
HOLE = (START + timedelta(minutes=70), START + timedelta(minutes=110))


def _value(stream: int, t: datetime) -> float:
    return 10.0 * stream + (t - START).total_seconds() / 600.0


@pytest.fixture
async def planted(database: Database) -> AsyncIterator[tuple[Pool, dict[str, int], Database]]:
    """Two streams in two districts, a reading every 20 s for 3 hours; stream b has a hole."""
    register(database.dsn, [("aq-0001", "north"), ("aq-0002", "south")])
    async with open_pool(database.dsn) as pool:
        await pool.wait(timeout=10)
        store = PostgresStore(pool)
        ids = await store.streams(
            {("aq-0001", "aq", "pm2_5"): "ug/m3", ("aq-0002", "aq", "pm2_5"): "ug/m3"}
        )
        named = {"a": ids[("aq-0001", "aq", "pm2_5")], "b": ids[("aq-0002", "aq", "pm2_5")]}
        columns = Columns()
        for i in range(3 * 180):
            t = START + timedelta(seconds=20 * i)
            columns.append(named["a"], to_us(t), _value(1, t))
            if not HOLE[0] <= t < HOLE[1]:
                columns.append(named["b"], to_us(t), _value(2, t))
        await store.write(WriteBatch(readings=columns))
        async with pool.connection() as conn:
            await rollups.refresh_all(conn, settle_s=0)
        yield pool, named, database


def _expected_means(stream: int, bucket: timedelta, hole: bool) -> list[float]:
    means = []
    t0 = START
    while t0 < START + timedelta(hours=3):
        values = [
            _value(stream, t0 + timedelta(seconds=20 * k))
            for k in range(int(bucket.total_seconds() // 20))
            if not (hole and HOLE[0] <= t0 + timedelta(seconds=20 * k) < HOLE[1])
        ]
        if values:
            means.append(statistics.fmean(values))
        t0 += bucket
    return means


@pytest.mark.parametrize(
    ("bucket", "table"),
    [
        (timedelta(hours=1), "rollup_1h"),
        (timedelta(minutes=10), "rollup_1m"),
        (timedelta(seconds=40), "readings"),
    ],
)
async def test_means_per_stream_match_the_raw_data_at_every_resolution(
    planted: tuple[Pool, dict[str, int], Database], bucket: timedelta, table: str
) -> None:
    pool, ids, _ = planted
    async with pool.connection() as conn:
        answer = await aggregate(conn, start=START, end=START + timedelta(hours=3), bucket=bucket)
    assert answer.level == table
    for name, stream, hole in (("a", 1, False), ("b", 2, True)):
        got = [r.value for r in answer.rows if r.group == str(ids[name])]
        assert got == pytest.approx(_expected_means(stream, bucket, hole))


async def test_gaps_are_reported_not_hidden(planted: tuple[Pool, dict[str, int], Database]) -> None:
    pool, ids, _ = planted
    async with pool.connection() as conn:
        answer = await aggregate(
            conn, start=START, end=START + timedelta(hours=4), bucket=timedelta(minutes=10)
        )
    assert answer.gaps[str(ids["a"])] == [
        (START + timedelta(hours=3), START + timedelta(minutes=230))
    ]
    assert answer.gaps[str(ids["b"])] == [
        (START + timedelta(minutes=70), START + timedelta(minutes=100)),
        (START + timedelta(hours=3), START + timedelta(minutes=230)),
    ]


async def test_grouping_by_district_and_filters(
    planted: tuple[Pool, dict[str, int], Database],
) -> None:
    pool, _, _ = planted
    async with pool.connection() as conn:
        by_site = await aggregate(
            conn, start=START, end=START + timedelta(hours=3), bucket=timedelta(hours=1),
            group_by="site", aggregate="count",
        )  # fmt: skip
        north = await aggregate(
            conn, start=START, end=START + timedelta(hours=3), bucket=timedelta(hours=1),
            sites=["north"], aggregate="max",
        )  # fmt: skip
        injected = await aggregate(
            conn, start=START, end=START + timedelta(hours=3), bucket=timedelta(hours=1),
            sites=["north' OR '1'='1"],
        )  # fmt: skip
    counts = {(r.group, r.bucket): r.value for r in by_site.rows}
    assert counts[("north", START)] == 180
    assert counts[("south", START + timedelta(hours=1))] == 180 - 40 * 3
    # Only stream a, whose last reading is its largest; stream b's are all above it.
    assert max(r.value or 0 for r in north.rows) == pytest.approx(
        _value(1, START + timedelta(hours=3, seconds=-20))
    )
    assert injected.rows == []  # a filter value is a value, never SQL


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start": datetime(2026, 11, 20, 6, 0)}, "time zone"),
        ({"end": START}, "after start"),
        ({"bucket": timedelta(milliseconds=10)}, "at least 1 second"),
        ({"bucket": timedelta(seconds=1), "end": START + timedelta(days=30)}, "buckets"),
        ({"aggregate": "median"}, "aggregate must be"),
        ({"group_by": "colour"}, "group_by must be"),
    ],
)
async def test_bad_requests_are_refused_clearly(
    planted: tuple[Pool, dict[str, int], Database], change: dict[str, object], message: str
) -> None:
    pool, _, _ = planted
    request: dict[str, object] = {
        "start": START, "end": START + timedelta(hours=1), "bucket": timedelta(minutes=5),
    }  # fmt: skip
    request.update(change)
    async with pool.connection() as conn:
        with pytest.raises(QueryError, match=message):
            await aggregate(conn, **request)  # type: ignore[arg-type]


def _level(bucket: timedelta, zone: str = "UTC", days_in: str = "UTC") -> str:
    rule = BucketRule(bucket, ZoneInfo(zone))
    level = pick_level(rule, START, START + timedelta(days=30), days_in)
    return level.table if level else "readings"


def test_the_resolution_follows_the_bucket_and_the_zone() -> None:
    assert _level(timedelta(days=7)) == "rollup_1d"
    assert _level(timedelta(hours=6)) == "rollup_1h"
    assert _level(timedelta(minutes=90)) == "rollup_1m"
    assert _level(timedelta(seconds=90)) == "readings"  # not whole minutes
    # Days kept in another zone than asked for are summed from hours instead...
    assert _level(timedelta(days=1), "Europe/Paris", days_in="UTC") == "rollup_1h"
    # ...and in a zone half an hour off UTC, hours do not fit its days either.
    assert _level(timedelta(days=1), "Asia/Kolkata", days_in="UTC") == "rollup_1m"
    assert _level(timedelta(days=1), "Asia/Kolkata", days_in="Asia/Kolkata") == "rollup_1d"


def test_decimation_keeps_the_ends_and_the_spikes() -> None:
    rng = np.random.default_rng(3)
    x = np.arange(100_000, dtype=np.float64)
    y = rng.normal(0, 1, x.size)
    y[[12_345, 77_777]] = [40.0, -40.0]
    keep = lttb(x, y, 500)
    assert keep.size == 500
    assert keep[0] == 0
    assert keep[-1] == x.size - 1
    assert np.all(np.diff(keep) > 0)
    assert {12_345, 77_777} <= set(keep.tolist())
    assert lttb(x[:10], y[:10], 500).tolist() == list(range(10))
    with pytest.raises(ValueError, match="at least 3"):
        lttb(x, y, 2)
    with pytest.raises(ValueError, match="equal length"):
        lttb(x, y[:-1], 100)


def _reference(how: str, values: list[float]) -> float:
    match how:
        case "mean":
            return statistics.fmean(values)
        case "min":
            return min(values)
        case "max":
            return max(values)
        case "count":
            return float(len(values))
        case "sum":
            return sum(values)
    return values[-1]


@pytest.mark.parametrize("how", ["mean", "min", "max", "count", "sum", "last"])
@pytest.mark.parametrize("bucket", [timedelta(hours=1), timedelta(seconds=40)])
async def test_every_aggregate_by_district_matches_the_raw_data(
    planted: tuple[Pool, dict[str, int], Database], how: str, bucket: timedelta
) -> None:
    pool, _, _ = planted
    async with pool.connection() as conn:
        answer = await aggregate(
            conn, start=START, end=START + timedelta(hours=3), bucket=bucket,
            aggregate=how, group_by="site",  # type: ignore[arg-type]
        )  # fmt: skip
    for site, stream, hole in (("north", 1, False), ("south", 2, True)):
        expected = []
        t0 = START
        while t0 < START + timedelta(hours=3):
            times = [
                t0 + timedelta(seconds=20 * k) for k in range(int(bucket.total_seconds() // 20))
            ]
            values = [_value(stream, t) for t in times if not (hole and HOLE[0] <= t < HOLE[1])]
            if values:
                expected.append(_reference(how, values))
            t0 += bucket
        got = [r.value for r in answer.rows if r.group == site]
        assert got == pytest.approx(expected)


def _raw_count(dsn: str, start: datetime, end: datetime, stream: int) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE stream_id = %s AND ts >= %s AND ts < %s",
            (stream, start, end),
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


@pytest.mark.parametrize("minutes", [0, 10, 50])
async def test_an_hour_keeps_its_clock_label_whatever_minute_the_range_starts_at(
    planted: tuple[Pool, dict[str, int], Database], minutes: int
) -> None:
    pool, ids, _ = planted
    start = START - timedelta(hours=2) + timedelta(minutes=minutes)  # 04:00, 04:10, 04:50
    async with pool.connection() as conn:
        hourly = await aggregate(
            conn, start=start, end=START + timedelta(hours=2), bucket=timedelta(hours=1),
            aggregate="count", stream_ids=[ids["a"]],
        )  # fmt: skip
        minutely = await aggregate(
            conn, start=START, end=START + timedelta(hours=1), bucket=timedelta(minutes=1),
            aggregate="count", stream_ids=[ids["a"]],
        )  # fmt: skip
    assert [(r.bucket, r.count) for r in hourly.rows] == [
        (START, sum(r.count for r in minutely.rows)),  # 06:00, the sum of its minutes
        (START + timedelta(hours=1), 180),
    ]
    first = START - timedelta(hours=2)
    assert hourly.gaps[str(ids["a"])] == [(first, first + timedelta(hours=1))]  # before the data
    assert [r.partial for r in hourly.rows] == [False, False]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (START + timedelta(minutes=43), START + timedelta(minutes=46, seconds=30)),  # end inside
        (START + timedelta(minutes=43, seconds=30), START + timedelta(minutes=47)),  # start inside
    ],
)
async def test_a_range_cutting_a_minute_counts_exactly_the_readings_inside_it(
    planted: tuple[Pool, dict[str, int], Database], start: datetime, end: datetime
) -> None:
    pool, ids, database = planted
    async with pool.connection() as conn:
        answer = await aggregate(
            conn, start=start, end=end, bucket=timedelta(minutes=1), aggregate="count",
            group_by="site",
        )  # fmt: skip
    north = [r for r in answer.rows if r.group == "north"]
    assert sum(r.count for r in north) == _raw_count(database.dsn, start, end, ids["a"])
    assert [r.bucket.minute for r in north] == [43, 44, 45, 46]  # labels stay on the minute
    assert [r.partial for r in north] == [
        start.second > 0,
        False,
        False,
        end.second > 0 and end.minute == 46,
    ]


async def test_the_newest_minutes_not_rolled_up_yet_are_data_not_gaps(
    planted: tuple[Pool, dict[str, int], Database],
) -> None:
    pool, ids, database = planted
    now = datetime.now(UTC).replace(microsecond=0)
    columns = Columns()
    for k in range(12):  # the last four minutes, every 20 s: the newest are not settled
        columns.append(ids["a"], to_us(now - timedelta(seconds=20 * k)), 1.0)
    await PostgresStore(pool).write(WriteBatch(readings=columns))
    async with pool.connection() as conn:
        await rollups.refresh_all(conn, settle_s=30)  # rolls up only minutes over for 30 s
        answer = await aggregate(
            conn, start=now - timedelta(minutes=10), end=now + timedelta(minutes=1),
            bucket=timedelta(hours=1), aggregate="count", stream_ids=[ids["a"]],
        )  # fmt: skip
    start = now - timedelta(minutes=10)
    assert sum(r.count for r in answer.rows) == 12
    assert sum(r.count for r in answer.rows) == _raw_count(
        database.dsn, start, now + timedelta(minutes=1), ids["a"]
    )


async def test_a_stream_without_data_gets_a_series_that_is_one_gap(
    planted: tuple[Pool, dict[str, int], Database],
) -> None:
    pool, ids, database = planted
    register(database.dsn, [("aq-0003", "east")])
    quiet = (await PostgresStore(pool).streams({("aq-0003", "aq", "pm2_5"): "ug/m3"}))[
        ("aq-0003", "aq", "pm2_5")
    ]
    async with pool.connection() as conn:
        answer = await aggregate(
            conn, start=START, end=START + timedelta(hours=3), bucket=timedelta(hours=1),
            stream_ids=[ids["a"], quiet],
        )  # fmt: skip
    assert answer.groups == sorted([str(ids["a"]), str(quiet)])
    assert answer.gaps[str(quiet)] == [(START, START + timedelta(hours=2))]
    assert answer.gaps[str(ids["a"])] == []
