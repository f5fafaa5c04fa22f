"""Whatever level serves a request, the answer is the raw readings' answer under the rule.

Hypothesis draws readings (around both daylight-saving changes of the year and an ordinary day),
which of them are rolled up and which arrive late or twice and wait in ``rollup_dirty``, then a
range (aligned or not), a bucket, an aggregate, a grouping and a filter. The query layer's rows,
partial marks and gaps must equal a plain reference computed here from the readings with the
rule of history/buckets.py: counts and sums exactly, means and last values to rounding.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.timestamps import to_us
from history.buckets import BucketRule
from history.query import Row, aggregate
from ingest import rollups
from ingest.columns import Columns
from ingest.schema.zone import set_city_zone
from ingest.service import Pool, open_pool
from ingest.writer import PostgresStore, WriteBatch
from tests.ingest.helpers import register
from tests.services.handles import Database

# (device, site, family, metric); the last stream never gets a reading.
STREAMS = [
    ("aq-0001", "north", "air", "pm2_5"),
    ("aq-0002", "south", "air", "pm2_5"),
    ("tr-0001", "north", "traffic", "vehicle_count"),
    ("tr-0002", "south", "traffic", "vehicle_count"),
]
BASES = [  # a day and a half around the spring change, the autumn change, and an ordinary day
    datetime(2026, 3, 28, 12, tzinfo=UTC),
    datetime(2026, 10, 24, 12, tzinfo=UTC),
    datetime(2026, 11, 19, 12, tzinfo=UTC),
]
SPAN_S = 36 * 3600
BUCKETS = [timedelta(minutes=1), timedelta(minutes=15), timedelta(hours=1), timedelta(hours=6),
           timedelta(days=1), timedelta(days=7), timedelta(seconds=20)]  # fmt: skip


@dataclass(frozen=True)
class Reading:
    stream: int  # index into STREAMS
    ts: datetime
    value: float


@dataclass
class Planted:
    pool: Pool
    dsn: str
    ids: list[int]
    zone: str


@pytest.fixture(params=["Europe/London", "Asia/Kolkata"])
async def planted(database: Database, request: pytest.FixtureRequest) -> AsyncIterator[Planted]:
    for device, site, family, _ in STREAMS:
        register(database.dsn, [(device, site)], family=family)
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        set_city_zone(conn, str(request.param))
    async with open_pool(database.dsn) as pool:
        await pool.wait(timeout=10)
        found = await PostgresStore(pool).streams(
            {(d, "s1", m): "count" if m == "vehicle_count" else "ug/m3" for d, _, _, m in STREAMS}
        )
        ids = [found[(d, "s1", m)] for d, _, _, m in STREAMS]
        yield Planted(pool, database.dsn, ids, str(request.param))


def readings(base: datetime) -> st.SearchStrategy[list[Reading]]:
    one = st.builds(
        lambda s, off, v: Reading(s, base + timedelta(seconds=off, microseconds=s), float(v)),
        st.integers(0, 2),  # never stream 3
        st.integers(0, SPAN_S),
        st.integers(0, 500),  # integers: sums are exact in floating point
    )
    return st.lists(one, min_size=1, max_size=40)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    base = draw(st.sampled_from(BASES))
    settled = draw(readings(base))
    late = draw(st.lists(readings(base), max_size=2))  # written after the roll-up: dirty
    again = draw(st.lists(st.sampled_from(settled), max_size=5))  # redelivered
    start_off = draw(st.integers(-3600, SPAN_S))
    length = draw(st.integers(1, SPAN_S + 7200))
    aligned = draw(st.booleans())
    start = base + timedelta(seconds=start_off)
    end = start + timedelta(seconds=length)
    if aligned:  # on whole hours, as charts and most planners ask
        start = start.replace(minute=0, second=0)
        end = end.replace(minute=0, second=0) + timedelta(hours=1)
    return {
        "settled": settled,
        "late": late,
        "again": again,
        "start": start,
        "end": end,
        "bucket": draw(st.sampled_from(BUCKETS)),
        "aggregate": draw(st.sampled_from(["mean", "min", "max", "count", "sum", "last"])),
        "group_by": draw(st.sampled_from(["stream", "site", "family", "metric"])),
        "sites": draw(st.sampled_from([None, ["north"], ["north", "south"]])),
    }


async def _write(store: PostgresStore, ids: list[int], batch: list[Reading]) -> None:
    columns = Columns()
    for r in batch:
        columns.append(ids[r.stream], to_us(r.ts), r.value)
    await store.write(WriteBatch(readings=columns))


def _group(index: int, ids: list[int], group_by: str) -> str:
    _device, site, family, metric = STREAMS[index]
    return {"stream": str(ids[index]), "site": site, "family": family, "metric": metric}[group_by]


def reference(case: dict[str, object], ids: list[int], zone: str) -> tuple[list[Row], dict]:  # type: ignore[type-arg]
    """The answer computed from the raw readings, by the documented rule."""
    rule = BucketRule(case["bucket"], ZoneInfo(zone))  # type: ignore[arg-type]
    start, end = case["start"], case["end"]
    group_by, how, sites = case["group_by"], case["aggregate"], case["sites"]
    stored: dict[tuple[int, datetime], float] = {}
    batches: list[list[Reading]] = [case["settled"], *case["late"], case["again"]]  # type: ignore[list-item,misc]
    for batch in batches:
        for r in batch:
            stored.setdefault((r.stream, r.ts), r.value)  # the key keeps the first
    cells: dict[tuple[str, datetime], list[tuple[datetime, float]]] = {}
    for (stream, ts), value in stored.items():
        if start <= ts < end and (sites is None or STREAMS[stream][1] in sites):  # type: ignore[operator]
            key = (_group(stream, ids, group_by), rule.floor(ts))  # type: ignore[arg-type]
            cells.setdefault(key, []).append((ts, value))
    partial = {rule.floor(start)} - {start} | ({rule.floor(end)} - {end})  # type: ignore[arg-type]
    rows = []
    for (group, slot), found in sorted(cells.items()):
        values = [v for _, v in found]
        result = {
            "mean": sum(values) / len(values),
            "min": min(values),
            "max": max(values),
            "count": float(len(values)),
            "sum": sum(values),
            "last": max(found)[1],
        }[how]  # type: ignore[index]
        rows.append(Row(group, slot, result, len(values), slot in partial))
    groups = sorted(
        {_group(i, ids, group_by) for i in range(len(STREAMS))  # type: ignore[arg-type]
         if sites is None or STREAMS[i][1] in sites}  # type: ignore[operator]
    )  # fmt: skip
    slots = rule.slots(start, end)  # type: ignore[arg-type]
    gaps = {}
    for group in groups:
        present = {slot for g, slot in cells if g == group}
        runs, first, prev = [], None, None
        for slot in slots:
            if slot not in present:
                first, prev = first or slot, slot
            elif first is not None:
                runs.append((first, prev))
                first = None
        if first is not None:
            runs.append((first, prev))
        gaps[group] = runs
    return rows, gaps


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a failure is reproducible
)
@given(case=scenarios())
async def test_the_answer_is_the_raw_readings_answer(
    planted: Planted, case: dict[str, object]
) -> None:
    with psycopg.connect(planted.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, rollup_1m, rollup_1h, rollup_1d, rollup_dirty")
    store = PostgresStore(planted.pool)
    await _write(store, planted.ids, case["settled"])  # type: ignore[arg-type]
    async with planted.pool.connection() as conn:
        await rollups.refresh_all(conn, settle_s=0)
    later: list[list[Reading]] = [*case["late"], case["again"]]  # type: ignore[list-item,misc]
    for batch in later:
        if batch:
            await _write(store, planted.ids, batch)
    async with planted.pool.connection() as conn:
        answer = await aggregate(
            conn, start=case["start"], end=case["end"], bucket=case["bucket"],  # type: ignore[arg-type]
            aggregate=case["aggregate"], group_by=case["group_by"], sites=case["sites"],  # type: ignore[arg-type]
        )  # fmt: skip
    rows, gaps = reference(case, planted.ids, planted.zone)
    assert [(r.group, r.bucket, r.count, r.partial) for r in answer.rows] == [
        (r.group, r.bucket, r.count, r.partial) for r in rows
    ]
    for got, want in zip(answer.rows, rows, strict=True):
        assert got.value is not None
        assert want.value is not None
        if case["aggregate"] in ("count", "sum", "min", "max", "last"):
            assert got.value == want.value, (got, want)
        else:
            assert math.isclose(got.value, want.value, rel_tol=1e-9), (got, want)
    assert answer.gaps == gaps
    assert answer.zone == planted.zone
