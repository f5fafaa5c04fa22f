"""Rollups at 1 minute, 1 hour and 1 day, kept exact as readings arrive in any order.

The writer marks the minutes each batch stores in ``rollup_dirty``, in the same transaction as
the readings (a batch spans one or two minutes, so this costs one tiny insert). :func:`refresh`
recomputes every stream's rollup of those minutes from the raw readings, then the hours holding
what changed from the minutes, and the days from the hours: late, out-of-order and backfilled
readings land in every level. A minute is rolled up once it has been over for ``settle_s``, so
the minute still being filled is not recomputed again and again; a reading arriving later marks
it again. One refresher runs at a time (an advisory lock); other workers skip their turn rather
than race on the same hour.

Minutes and hours are UTC; days are the city's local days (``city_settings``, moved by
``ingest/schema/zone.py`` when the zone changes). ``mean`` is ``total / n``; ``last_value`` is
the reading acquired last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection, AsyncCursor, sql

from ingest.schema.zone import ROLLUP_LOCK_KEY, day_source

_LOCK_KEY: Final = ROLLUP_LOCK_KEY
_MINUTE_US: Final = 60_000_000

MARK_DIRTY = (  # parameter: the minute numbers since the epoch
    "INSERT INTO rollup_dirty (bucket) SELECT to_timestamp(m * 60) FROM unnest(%s::bigint[]) m"
    " ON CONFLICT DO NOTHING"
)
_SCRATCH = (
    "CREATE TEMP TABLE IF NOT EXISTS rollup_taken (bucket timestamptz) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS rollup_touched (stream_id integer, bucket timestamptz)"
    " ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS rollup_touched_days (stream_id integer,"
    " bucket timestamptz) ON COMMIT DELETE ROWS",
)
_TAKE = """
WITH taken AS (
    DELETE FROM rollup_dirty WHERE bucket IN (
        SELECT bucket FROM rollup_dirty
        WHERE bucket < now() - interval '1 minute' - %(settle)s * interval '1 second'
        ORDER BY bucket LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    )
    RETURNING bucket
)
INSERT INTO rollup_taken SELECT bucket FROM taken
"""
_UPSERT = """
ON CONFLICT (stream_id, bucket) DO UPDATE SET n = excluded.n, total = excluded.total,
    low = excluded.low, high = excluded.high, last_ts = excluded.last_ts,
    last_value = excluded.last_value
RETURNING stream_id, bucket
"""
# Finer rollup rows ``f`` combined into one coarser row (hours from minutes, days from either).
_COMBINE = (
    "sum(f.n), sum(f.total), min(f.low), max(f.high), max(f.last_ts),"
    " (array_agg(f.last_value ORDER BY f.last_ts DESC))[1]"
)
# Every stream's minutes from the raw readings; each is recomputed whole and replaces the old.
_MINUTES = (
    """
WITH up AS (
    INSERT INTO rollup_1m (stream_id, bucket, n, total, low, high, last_ts, last_value)
    SELECT r.stream_id, t.bucket, count(*), sum(r.value), min(r.value), max(r.value),
           max(r.ts), (array_agg(r.value ORDER BY r.ts DESC))[1]
    FROM rollup_taken t
    JOIN readings r ON r.ts >= t.bucket AND r.ts < t.bucket + interval '1 minute'
    GROUP BY r.stream_id, t.bucket
"""
    + _UPSERT
    + ") INSERT INTO rollup_touched SELECT stream_id, bucket FROM up"
)
# The hours holding what changed, from the minutes; their pairs replace the minutes' in
# rollup_touched.
_HOURS = (
    """
WITH pairs AS (
    SELECT DISTINCT stream_id, date_bin('1 hour', bucket, TIMESTAMPTZ '1970-01-01Z') AS bucket
    FROM rollup_touched
), up AS (
    INSERT INTO rollup_1h (stream_id, bucket, n, total, low, high, last_ts, last_value)
    SELECT p.stream_id, p.bucket, """
    + _COMBINE
    + """
    FROM pairs p
    JOIN rollup_1m f ON f.stream_id = p.stream_id AND f.bucket >= p.bucket
                    AND f.bucket < p.bucket + interval '1 hour'
    GROUP BY p.stream_id, p.bucket
"""
    + _UPSERT
    + """
), cleared AS (
    DELETE FROM rollup_touched
)
INSERT INTO rollup_touched SELECT stream_id, bucket FROM up
"""
)
# The city's local days holding what changed (noted from the minutes before the hours replace
# them), from the hours, or from the minutes where the zone is not whole hours from UTC. A local
# day is 23 or 25 hours across a daylight-saving change. The source goes in as sql.Identifier.
_NOTE_DAYS = (
    "INSERT INTO rollup_touched_days SELECT DISTINCT stream_id,"
    " date_trunc('day', bucket, %(zone)s) FROM rollup_touched"
)
_DAYS = sql.SQL(
    """
INSERT INTO rollup_1d (stream_id, bucket, n, total, low, high, last_ts, last_value)
SELECT p.stream_id, p.bucket, """
    + _COMBINE
    + """
FROM rollup_touched_days p
JOIN {source} f ON f.stream_id = p.stream_id AND f.bucket >= p.bucket
               AND f.bucket < ((p.bucket AT TIME ZONE %(zone)s) + interval '1 day')
                              AT TIME ZONE %(zone)s
GROUP BY p.stream_id, p.bucket
"""
    + _UPSERT
)


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What one :func:`refresh` did."""

    minutes: int  # dirty minutes rolled up
    skipped: bool  # another refresher held the lock


def dirty_minutes(ts_us: NDArray[np.int64]) -> list[int]:
    """The distinct minute numbers (since the epoch) of a batch's acquisition times."""
    if ts_us.size == 0:
        return []
    return [int(m) for m in np.unique(np.floor_divide(ts_us, _MINUTE_US))]


async def mark_dirty(cur: AsyncCursor[tuple[object, ...]], ts_us: NDArray[np.int64]) -> None:
    """Record the minutes a batch writes; call inside the transaction that stores it."""
    minutes = dirty_minutes(ts_us)
    if minutes:
        await cur.execute(MARK_DIRTY, (minutes,))


async def refresh(
    conn: AsyncConnection[tuple[object, ...]], *, settle_s: float = 30.0, limit: int = 60
) -> Refreshed:
    """Roll up to ``limit`` dirty minutes that have been over for ``settle_s``."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,))
        row = await cur.fetchone()
        if row is None or not row[0]:
            return Refreshed(0, skipped=True)
        for scratch in _SCRATCH:
            await cur.execute(scratch)
        await cur.execute(_TAKE, {"settle": settle_s, "limit": limit})
        taken = cur.rowcount
        if taken <= 0:
            return Refreshed(0, skipped=False)
        await cur.execute(_MINUTES)
        await cur.execute("SELECT time_zone FROM city_settings")
        zone_row = await cur.fetchone()
        zone = str(zone_row[0]) if zone_row else "UTC"
        await cur.execute(_NOTE_DAYS, {"zone": zone})
        await cur.execute(_HOURS)
        source = sql.Identifier(day_source(ZoneInfo(zone)))
        await cur.execute(_DAYS.format(source=source), {"zone": zone})
        return Refreshed(taken, skipped=False)


async def refresh_all(
    conn: AsyncConnection[tuple[object, ...]], *, settle_s: float = 30.0, limit: int = 60
) -> int:
    """Refresh until no settled minute is dirty (or another refresher has the lock)."""
    done = 0
    while True:
        result = await refresh(conn, settle_s=settle_s, limit=limit)
        done += result.minutes
        if result.skipped or result.minutes < limit:
            return done
