"""The query layer the dashboard, the planner API, the CLI and the open-data views share.

An answer is always the raw readings' answer under the bucket rule of :mod:`history.buckets`:
the coarsest stored resolution (the 1-minute, 1-hour or 1-day rollups) serves only the part of
the range it covers whole and only its buckets that are rolled up (none of their minutes still
waiting in ``rollup_dirty``); the raw readings fill the edges of the range, the newest minutes
not yet rolled up, and late data not yet rolled up again. Both are read in one snapshot. Every
group the filters select gets a series, and buckets without readings are reported as gaps, so a
gap always means no reading exists. Everything is parameterised SQL; table names come from a
fixed list.

Examples:
    >>> from zoneinfo import ZoneInfo
    >>> rule = BucketRule(timedelta(hours=1), ZoneInfo("UTC"))
    >>> at = datetime(2026, 1, 1, tzinfo=UTC)
    >>> pick_level(rule, at, at + timedelta(days=1), "UTC").table
    'rollup_1h'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg import AsyncConnection, sql
from psycopg.pq import TransactionStatus

from edge.timestamps import whole_hours
from history.buckets import DAY, BucketError, BucketRule, local_midnight
from history.errors import HistoryError

Aggregate = Literal["mean", "min", "max", "count", "sum", "last"]
GroupBy = Literal["stream", "site", "family", "metric"]

AGGREGATES: Final[tuple[Aggregate, ...]] = ("mean", "min", "max", "count", "sum", "last")
GROUPS: Final[tuple[GroupBy, ...]] = ("stream", "site", "family", "metric")
MAX_CELLS: Final = 1_000_000  # buckets x groups; a longer answer is an export, not a query
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class QueryError(HistoryError, ValueError):
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
    """One stored rollup resolution (days in the city's zone, hours and minutes in UTC)."""

    table: str
    step: timedelta

    def floor(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """The start of this level's bucket holding ``moment``."""
        if self.step == DAY:
            return local_midnight(moment.astimezone(zone).date(), zone)
        return _EPOCH + ((moment - _EPOCH) // self.step) * self.step

    def after(self, slot: datetime, zone: ZoneInfo) -> datetime:
        """The start of the next bucket of this level."""
        if self.step == DAY:
            return local_midnight(slot.astimezone(zone).date() + DAY, zone)
        return slot + self.step

    def ceil(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """The first bucket start at or after ``moment``."""
        floor = self.floor(moment, zone)
        return floor if floor == moment else self.after(floor, zone)


ROLLUPS: Final = (
    Level("rollup_1d", DAY),
    Level("rollup_1h", timedelta(hours=1)),
    Level("rollup_1m", timedelta(minutes=1)),
)


def pick_level(rule: BucketRule, start: datetime, end: datetime, day_zone: str) -> Level | None:
    """The coarsest rollup each of whose buckets lies inside one answer bucket, or None.

    ``day_zone`` is the zone the 1-day rollup is kept in.
    """
    for level in ROLLUPS:
        if level.step == DAY:
            usable = rule.calendar and rule.zone.key == day_zone
        else:
            whole = rule.calendar or rule.width % level.step == timedelta(0)
            usable = rule.width >= level.step and whole
            if level.step == timedelta(hours=1):
                usable = usable and whole_hours(rule.zone, start, end)
        if usable:
            return level
    return None


@dataclass(frozen=True, slots=True)
class Row:
    """One bucket of one group; ``partial`` when the range cuts the bucket."""

    group: str
    bucket: datetime
    value: float | None
    count: int
    partial: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """Aggregated buckets, the gaps, and how they were read."""

    rows: list[Row]
    gaps: dict[str, list[tuple[datetime, datetime]]]  # group: [(first empty, last empty)]
    level: str  # the rollup that served the whole buckets ("readings" when none did)
    zone: str = "UTC"
    groups: list[str] = field(default_factory=list)  # every group selected, with data or not


_GROUP_COLUMN: Final = {
    "stream": "s.stream_id::text",
    "site": "d.site",
    "family": "d.family",
    "metric": "s.metric",
}
_FILTERS: Final = sql.SQL(
    " (%(streams)s::integer[] IS NULL OR s.stream_id = ANY(%(streams)s))"
    " AND (%(sites)s::text[] IS NULL OR d.site = ANY(%(sites)s))"
    " AND (%(families)s::text[] IS NULL OR d.family = ANY(%(families)s))"
    " AND (%(metrics)s::text[] IS NULL OR s.metric = ANY(%(metrics)s))"
)
_FINAL: Final = {
    "mean": "sum(total) / nullif(sum(n), 0)",
    "min": "min(low)",
    "max": "max(high)",
    "count": "sum(n)::double precision",
    "sum": "sum(total)",
    "last": "(array_agg(last_value ORDER BY last_ts DESC))[1]",
}


async def city_zone(conn: AsyncConnection[tuple[object, ...]]) -> ZoneInfo:
    """The city's time zone, as the schema records it (days are its local days)."""
    cursor = await conn.execute("SELECT time_zone FROM city_settings")
    row = await cursor.fetchone()
    try:
        return ZoneInfo(str(row[0])) if row else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise QueryError(f"the recorded city time zone {row!r} is unknown here") from exc


def _check(start: datetime, end: datetime, aggregate: str, group_by: str) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise QueryError("start and end need a time zone (use UTC, e.g. 2026-11-23T08:00Z)")
    if end <= start:
        raise QueryError("end must come after start")
    if aggregate not in AGGREGATES:
        raise QueryError(f"aggregate must be one of {', '.join(AGGREGATES)}")
    if group_by not in GROUPS:
        raise QueryError(f"group_by must be one of {', '.join(GROUPS)}")


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
    zone: ZoneInfo | None = None,
) -> Answer:
    """Buckets of ``bucket`` over [``start``, ``end``), per group, with the gaps.

    Args:
        conn: A connection; when idle, the answer is read in one repeatable-read snapshot.
        start: From, inclusive, with a zone.
        end: Until, exclusive, with a zone.
        bucket: Width under the rule of :mod:`history.buckets`.
        aggregate: How the readings of a bucket and group combine.
        group_by: One series per stream, site, family or metric.
        stream_ids: Only these streams (None: all).
        sites: Only these districts.
        families: Only these families.
        metrics: Only these metrics.
        zone: Where days begin; the city's recorded zone when None.

    Raises:
        QueryError: A range, bucket, aggregate or grouping that cannot be answered.
    """
    _check(start, end, aggregate, group_by)
    filters: dict[str, object] = {
        "streams": list(stream_ids) if stream_ids is not None else None,
        "sites": list(sites) if sites is not None else None,
        "families": list(families) if families is not None else None,
        "metrics": list(metrics) if metrics is not None else None,
    }
    ask = _Ask(start.astimezone(UTC), end.astimezone(UTC), bucket, aggregate, group_by, zone)
    try:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            async with conn.transaction():  # one snapshot for the rollups, raw rows and dirt
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return await _aggregate(conn, ask, filters)
        return await _aggregate(conn, ask, filters)
    except OverflowError as exc:  # a bucket or range reaching past year 1 or 9999
        raise QueryError("the range and bucket reach outside the calendar (years 1-9999)") from exc


@dataclass(frozen=True, slots=True)
class _Ask:
    start: datetime
    end: datetime
    bucket: timedelta
    aggregate: Aggregate
    group_by: GroupBy
    zone: ZoneInfo | None


async def _aggregate(
    conn: AsyncConnection[tuple[object, ...]], ask: _Ask, filters: dict[str, object]
) -> Answer:
    start, end, group_by = ask.start, ask.end, ask.group_by
    city = await city_zone(conn)
    try:
        rule = BucketRule(ask.bucket, ask.zone or city)
    except BucketError as exc:
        raise QueryError(str(exc)) from exc
    params: dict[str, object] = {**filters, **rule.params()}
    groups = await _groups(conn, group_by, params)
    cells = rule.count(start, end) * max(len(groups), 1)
    if cells > MAX_CELLS:
        raise QueryError(
            f"{rule.count(start, end):,.0f} buckets x {len(groups):,} groups is more than"
            f" {MAX_CELLS:,}: choose a larger bucket, fewer groups, or export the data"
        )
    level = pick_level(rule, start, end, city.key)
    windows = [(start, end)]
    if level is not None:
        whole_from, whole_to = level.ceil(start, rule.zone), level.floor(end, rule.zone)
        if whole_from < whole_to:
            stale = await _stale(conn, level, rule.zone, whole_from, whole_to)
            windows = [(start, whole_from), (whole_to, end)]
            windows += [(s, level.after(s, rule.zone)) for s in stale]
            params.update(whole_from=whole_from, whole_to=whole_to)
        else:
            level = None
    windows = merge_windows(windows)
    for index, (low, high) in enumerate(windows):
        params[f"lo{index}"], params[f"hi{index}"] = low, high
    query = _query(rule, level, group_by, ask.aggregate, len(windows))
    cursor = await conn.execute(query, params)
    partial = {rule.floor(start)} - {start} | ({rule.floor(end)} - {end})
    rows = []
    for group, slot, value, count in await cursor.fetchall():
        assert isinstance(slot, datetime)
        number = None if value is None else float(str(value))
        rows.append(Row(str(group), slot, number, int(str(count)), slot in partial))
    gaps = find_gaps(rows, rule.slots(start, end), groups)
    return Answer(rows, gaps, level.table if level else "readings", rule.zone.key, groups)


async def _groups(
    conn: AsyncConnection[tuple[object, ...]], group_by: GroupBy, params: dict[str, object]
) -> list[str]:
    """Every group the filters select, whether it has data in the range or not."""
    query = sql.SQL(
        "SELECT DISTINCT {group} FROM streams s JOIN devices d USING (device_id) WHERE {filters}"
        " ORDER BY 1"
    ).format(group=sql.SQL(_GROUP_COLUMN[group_by]), filters=_FILTERS)
    cursor = await conn.execute(query, params)
    return [str(row[0]) for row in await cursor.fetchall()]


async def _stale(
    conn: AsyncConnection[tuple[object, ...]],
    level: Level,
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
) -> list[datetime]:
    """The level's buckets in [start, end) holding a minute not rolled up yet."""
    cursor = await conn.execute(
        "SELECT bucket FROM rollup_dirty WHERE bucket >= %s AND bucket < %s ORDER BY bucket",
        (start, end),
    )
    floors = {level.floor(row[0], zone) for row in await cursor.fetchall()}  # type: ignore[arg-type]
    return sorted(floors)


MAX_WINDOWS: Final = 32  # raw time ranges in one query; more are joined over their gaps


def _same(rule: BucketRule, level: Level) -> bool:
    """Whether each of the level's buckets is one answer bucket (then it is its own label)."""
    return rule.width == level.step


def merge_windows(
    windows: Sequence[tuple[datetime, datetime]], most: int = MAX_WINDOWS
) -> list[tuple[datetime, datetime]]:
    """Non-empty time ranges, touching ones joined, at most ``most`` (over the shortest gaps).

    Joining two ranges reads the rollup buckets between them from the raw readings instead,
    which gives the same answer; it keeps the query small after scattered late data.

    >>> at = datetime(2026, 1, 1, tzinfo=UTC)
    >>> h = [(at + timedelta(hours=i), at + timedelta(hours=i + 1)) for i in (0, 1, 4, 9)]
    >>> [(a.hour, b.hour) for a, b in merge_windows(h, most=2)]
    [(0, 5), (9, 10)]
    """
    merged: list[tuple[datetime, datetime]] = []
    for low, high in sorted(w for w in windows if w[0] < w[1]):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    while len(merged) > most:
        gaps = sorted(range(len(merged) - 1), key=lambda i: merged[i + 1][0] - merged[i][1])
        keep = set(gaps[len(merged) - most :])  # the widest gaps stay gaps
        joined: list[tuple[datetime, datetime]] = [merged[0]]
        for i in range(1, len(merged)):
            if i - 1 in keep:
                joined.append(merged[i])
            else:
                joined[-1] = (joined[-1][0], merged[i][1])
        merged = joined
    return merged


def _within(column: str, count: int) -> sql.Composable:
    """``column`` inside any of the ``count`` windows ``%(loN)s``..``%(hiN)s``."""
    if count == 0:
        return sql.SQL("false")
    return sql.SQL("({})").format(
        sql.SQL(" OR ").join(
            sql.SQL("({c} >= {lo} AND {c} < {hi})").format(
                c=sql.SQL(column), lo=sql.Placeholder(f"lo{i}"), hi=sql.Placeholder(f"hi{i}")
            )
            for i in range(count)
        )
    )


_NEEDS: Final = {  # the partial aggregates each final one combines
    "mean": ("n", "total"),
    "min": ("n", "low"),
    "max": ("n", "high"),
    "count": ("n",),
    "sum": ("n", "total"),
    "last": ("n", "last_ts", "last_value"),
}


def _part_columns(aggregate: Aggregate, table: str, kind: Literal["rollup", "raw"]) -> str:
    """A part's partial aggregates: only those the answer's aggregate needs."""
    if kind == "rollup":
        ts, value = f"{table}.last_ts", f"{table}.last_value"
        exprs = {"n": f"sum({table}.n)", "total": f"sum({table}.total)",
                 "low": f"min({table}.low)", "high": f"max({table}.high)"}  # fmt: skip
    else:
        ts, value = f"{table}.ts", f"{table}.value"
        exprs = {"n": "count(*)", "total": f"sum({value})", "low": f"min({value})",
                 "high": f"max({value})"}  # fmt: skip
    exprs["last_ts"] = f"max({ts})"
    exprs["last_value"] = f"(array_agg({value} ORDER BY {ts} DESC))[1]"
    return ", ".join(f"{exprs[name]} AS {name}" for name in _NEEDS[aggregate])


def _query(
    rule: BucketRule, level: Level | None, group_by: GroupBy, aggregate: Aggregate, windows: int
) -> sql.Composed:
    """Partial aggregates per group and bucket from the rollup and the raw windows, combined.

    Every piece of SQL text comes from this module's constants, never from a request.
    """
    group = sql.SQL(_GROUP_COLUMN[group_by])
    parts = []
    if level is not None:
        columns = _part_columns(aggregate, "f", "rollup")
        parts.append(
            sql.SQL(
                "SELECT {group} AS grp, {slot} AS slot, {columns}"
                " FROM {table} f JOIN streams s USING (stream_id) JOIN devices d USING (device_id)"
                " WHERE f.bucket >= %(whole_from)s AND f.bucket < %(whole_to)s"
                " AND NOT {raw} AND {filters}"
                " GROUP BY 1, 2"
            ).format(
                group=group,
                slot=sql.SQL("f.bucket") if _same(rule, level) else rule.sql(sql.SQL("f.bucket")),
                raw=_within("f.bucket", windows),
                columns=sql.SQL(columns),
                table=sql.Identifier(level.table),
                filters=_FILTERS,
            )
        )
    if windows:
        columns = _part_columns(aggregate, "r", "raw")
        parts.append(
            sql.SQL(
                "SELECT {group} AS grp, {slot} AS slot, {columns}"
                " FROM readings r JOIN streams s USING (stream_id) JOIN devices d USING (device_id)"
                " WHERE {raw} AND {filters} GROUP BY 1, 2"
            ).format(
                group=group,
                slot=rule.sql(sql.SQL("r.ts")),
                columns=sql.SQL(columns),
                raw=_within("r.ts", windows),
                filters=_FILTERS,
            )
        )
    return sql.SQL(
        "SELECT grp, slot, {final}, sum(n)::bigint FROM ({parts}) p"
        " GROUP BY grp, slot ORDER BY grp, slot"
    ).format(final=sql.SQL(_FINAL[aggregate]), parts=sql.SQL(" UNION ALL ").join(parts))


def find_gaps(
    rows: Sequence[Row], slots: Sequence[datetime], groups: Sequence[str] = ()
) -> dict[str, list[tuple[datetime, datetime]]]:
    """Per group, the runs of buckets without readings: (first empty, last empty).

    Every group in ``groups`` is listed, a group without rows as one gap over every bucket.
    """
    seen: dict[str, set[datetime]] = {group: set() for group in groups}
    for row in rows:
        seen.setdefault(row.group, set()).add(row.bucket)
    gaps: dict[str, list[tuple[datetime, datetime]]] = {}
    for group, present in seen.items():
        runs: list[tuple[datetime, datetime]] = []
        first: datetime | None = None
        previous: datetime | None = None
        for slot in slots:
            if slot not in present:
                first = first or slot
                previous = slot
            elif first is not None and previous is not None:
                runs.append((first, previous))
                first = None
        if first is not None and previous is not None:
            runs.append((first, previous))
        gaps[group] = runs
    return gaps
