"""The query layer the dashboard and the planner API share.

It picks the coarsest stored resolution that still resolves the bucket asked for (raw readings,
or the 1-minute, 1-hour or 1-day rollups), aggregates by time bucket and optionally by district,
family or metric, and reports gaps (buckets without data) rather than hiding them. Everything is
parameterised SQL; table names come from a fixed list.

Examples:
    >>> from datetime import timedelta
    >>> pick_level(timedelta(hours=1)).table, pick_level(timedelta(seconds=30)).table
    ('rollup_1h', 'readings')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from psycopg import AsyncConnection, sql

Aggregate = Literal["mean", "min", "max", "count", "sum", "last"]
GroupBy = Literal["stream", "site", "family", "metric"]

AGGREGATES: Final[tuple[Aggregate, ...]] = ("mean", "min", "max", "count", "sum", "last")
GROUPS: Final[tuple[GroupBy, ...]] = ("stream", "site", "family", "metric")
MAX_BUCKETS: Final = 100_000  # a longer answer is a request for an export, not a query


class QueryError(ValueError):
    """A query that cannot be answered as asked, with what would be."""


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BUCKET_PATTERN: Final = r"^[1-9][0-9]{0,5}[smhd]$"


def parse_bucket(text: str) -> timedelta:
    """A bucket written like ``30s``, ``10m``, ``1h`` or ``7d``.

    >>> parse_bucket("15m")
    datetime.timedelta(seconds=900)
    """
    if re.fullmatch(BUCKET_PATTERN, text) is None:
        raise QueryError(f"{text[:20]!r} is not a bucket like 30s, 10m, 1h or 1d")
    return timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])


@dataclass(frozen=True, slots=True)
class Level:
    """One stored resolution."""

    table: str
    step: timedelta  # zero for raw readings
    # Each aggregate over this level's columns (raw readings have only ``value``).
    columns: dict[str, str]


_RAW: Final = Level(
    "readings",
    timedelta(0),
    {
        "n": "count(*)",
        "total": "sum(value)",
        "low": "min(value)",
        "high": "max(value)",
        "last_ts": "max(ts)",
        "last_value": "(array_agg(value ORDER BY ts DESC))[1]",
        "ts": "ts",
    },
)


def _rollup(table: str, step: timedelta) -> Level:
    return Level(
        table,
        step,
        {
            "n": "sum(n)",
            "total": "sum(total)",
            "low": "min(low)",
            "high": "max(high)",
            "last_ts": "max(last_ts)",
            "last_value": "(array_agg(last_value ORDER BY last_ts DESC))[1]",
            "ts": "bucket",
        },
    )


LEVELS: Final = (
    _rollup("rollup_1d", timedelta(days=1)),
    _rollup("rollup_1h", timedelta(hours=1)),
    _rollup("rollup_1m", timedelta(minutes=1)),
    _RAW,
)


def pick_level(bucket: timedelta) -> Level:
    """The coarsest stored resolution whose step divides ``bucket``."""
    for level in LEVELS[:-1]:
        if bucket >= level.step and bucket % level.step == timedelta(0):
            return level
    return _RAW


@dataclass(frozen=True, slots=True)
class Row:
    """One bucket of one group."""

    group: str
    bucket: datetime
    value: float | None
    count: int


@dataclass(frozen=True, slots=True)
class Answer:
    """Aggregated buckets, the gaps, and where they came from."""

    rows: list[Row]
    gaps: dict[str, list[tuple[datetime, datetime]]]  # group: [(first empty, last empty)]
    level: str


_GROUP_COLUMN: Final = {
    "stream": "s.stream_id::text",
    "site": "d.site",
    "family": "d.family",
    "metric": "s.metric",
}


async def aggregate(
    conn: AsyncConnection[tuple[object, ...]],
    *,
    start: datetime,
    end: datetime,
    bucket: timedelta,
    aggregate: Aggregate = "mean",
    group_by: GroupBy = "stream",
    stream_ids: Sequence[int] | None = None,
    sites: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> Answer:
    """Buckets of ``bucket`` over [``start``, ``end``), per group, with the gaps.

    Raises:
        QueryError: A range, bucket, aggregate or grouping that cannot be answered.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise QueryError("start and end need a time zone (use UTC, e.g. 2026-11-23T08:00Z)")
    if end <= start:
        raise QueryError("end must come after start")
    if bucket < timedelta(seconds=1):
        raise QueryError("bucket must be at least 1 second")
    if (end - start) / bucket > MAX_BUCKETS:
        raise QueryError(
            f"{(end - start) / bucket:,.0f} buckets asked for; at most {MAX_BUCKETS:,}:"
            " choose a larger bucket or export the data"
        )
    if aggregate not in AGGREGATES:
        raise QueryError(f"aggregate must be one of {', '.join(AGGREGATES)}")
    if group_by not in GROUPS:
        raise QueryError(f"group_by must be one of {', '.join(GROUPS)}")
    level = pick_level(bucket)
    if aggregate == "last":
        query = _per_stream_first(level, group_by)
    else:
        query = _single_pass(level, group_by, aggregate)
    params = {
        "bucket": bucket,
        "origin": start,
        "start": start,
        "end": end,
        "streams": list(stream_ids) if stream_ids is not None else None,
        "sites": list(sites) if sites is not None else None,
        "families": list(families) if families is not None else None,
        "metrics": list(metrics) if metrics is not None else None,
    }
    cursor = await conn.execute(query, params)
    rows = []
    for group, slot, value, count in await cursor.fetchall():
        assert isinstance(slot, datetime)
        number = None if value is None else float(str(value))
        rows.append(Row(str(group), slot, number, int(str(count))))
    return Answer(rows, find_gaps(rows, start, end, bucket), level.table)


# Aggregates that combine across streams directly, over the level's own aggregate expressions.
_DIRECT: Final = {
    "mean": "({total}) / nullif({n}, 0)",
    "min": "{low}",
    "max": "{high}",
    "count": "({n})::double precision",
    "sum": "{total}",
}


def _selected(level: Level, group_by: GroupBy, columns: str, group: str) -> sql.Composed:
    """``SELECT grp, slot, <columns>`` from the level's rows that pass the filters.

    ``columns`` and ``group`` are built from this module's constants, never from a request.
    """
    return sql.SQL(
        "SELECT {group} AS grp, date_bin(%(bucket)s, {ts}, %(origin)s) AS slot, {columns}"
        " FROM {table} f JOIN streams s USING (stream_id) JOIN devices d USING (device_id)"
        " WHERE {ts} >= %(start)s AND {ts} < %(end)s"
        " AND (%(streams)s::integer[] IS NULL OR f.stream_id = ANY(%(streams)s))"
        " AND (%(sites)s::text[] IS NULL OR d.site = ANY(%(sites)s))"
        " AND (%(families)s::text[] IS NULL OR d.family = ANY(%(families)s))"
        " AND (%(metrics)s::text[] IS NULL OR s.metric = ANY(%(metrics)s))"
        " GROUP BY {grouping}"
    ).format(
        group=sql.SQL(_GROUP_COLUMN[group_by]),
        ts=sql.SQL("f." + level.columns["ts"]),
        columns=sql.SQL(columns),
        table=sql.Identifier(level.table),
        grouping=sql.SQL(group),
    )


def _single_pass(level: Level, group_by: GroupBy, aggregate: Aggregate) -> sql.Composed:
    """One GROUP BY for every aggregate but ``last``: no per-stream pass, no ordered array."""
    final = _DIRECT[aggregate].format(**level.columns)
    columns = f"{final}, ({level.columns['n']})::bigint"
    return _selected(level, group_by, columns, "1, 2 ORDER BY 1, 2")


def _per_stream_first(level: Level, group_by: GroupBy) -> sql.Composed:
    """The last value: each stream's last in each bucket first, then the group's."""
    names = ("n", "total", "low", "high", "last_ts", "last_value")
    columns = ", ".join(f"{level.columns[name]} AS {name}" for name in names)
    inner = _selected(level, group_by, columns, "1, 2, f.stream_id")
    return sql.SQL(
        "SELECT grp, slot, (array_agg(last_value ORDER BY last_ts DESC))[1], sum(n)::bigint"
        " FROM ({inner}) per_stream GROUP BY grp, slot ORDER BY grp, slot"
    ).format(inner=inner)


def find_gaps(
    rows: Sequence[Row], start: datetime, end: datetime, bucket: timedelta
) -> dict[str, list[tuple[datetime, datetime]]]:
    """Per group, the runs of buckets in [start, end) that hold no data: (first, last)."""
    slots = int((end - start) / bucket) + (1 if (end - start) % bucket else 0)
    seen: dict[str, set[int]] = {}
    for row in rows:
        seen.setdefault(row.group, set()).add(int((row.bucket - start) / bucket))
    gaps: dict[str, list[tuple[datetime, datetime]]] = {}
    for group, present in seen.items():
        runs: list[tuple[datetime, datetime]] = []
        run_start: int | None = None
        for index in range(slots + 1):
            empty = index < slots and index not in present
            if empty and run_start is None:
                run_start = index
            elif not empty and run_start is not None:
                runs.append((start + run_start * bucket, start + (index - 1) * bucket))
                run_start = None
        gaps[group] = runs
    return gaps
