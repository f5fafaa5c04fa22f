"""Rollups at 1 minute, 1 hour and 1 day, kept exact as readings arrive in any order.

The writer marks every (stream, minute) a batch stores in ``rollup_dirty``, in the same
transaction as the readings. :func:`refresh` then recomputes exactly those minutes from the raw
readings, the hours holding them from the minutes, and the days from the hours, so late,
out-of-order and backfilled readings land in every level. One refresher runs at a time (an
advisory lock); other workers skip their turn rather than race on the same hour.

Buckets are UTC. ``mean`` is ``total / n``; ``last_value`` is the reading with the latest
acquisition time.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Final

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection, AsyncCursor, sql

LEVELS: Final = (("rollup_1m", "1 minute"), ("rollup_1h", "1 hour"), ("rollup_1d", "1 day"))
_LOCK_KEY: Final = 0x526F6C6C  # "Roll"
_MINUTE_US: Final = 60_000_000

_MARK = (
    "INSERT INTO rollup_dirty (stream_id, bucket)"
    " SELECT s, to_timestamp(m * 60) FROM unnest(%s::integer[], %s::bigint[]) AS u(s, m)"
    " ON CONFLICT DO NOTHING"
)
_TAKEN_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS rollup_taken (stream_id integer, bucket timestamptz)"
    " ON COMMIT DELETE ROWS"
)
_TAKE = """
WITH taken AS (
    DELETE FROM rollup_dirty d USING (
        SELECT stream_id, bucket FROM rollup_dirty LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) pick
    WHERE d.stream_id = pick.stream_id AND d.bucket = pick.bucket
    RETURNING d.stream_id, d.bucket
)
INSERT INTO rollup_taken SELECT stream_id, bucket FROM taken
"""
_UPSERT = """
ON CONFLICT (stream_id, bucket) DO UPDATE SET n = excluded.n, total = excluded.total,
    low = excluded.low, high = excluded.high, last_ts = excluded.last_ts,
    last_value = excluded.last_value
"""
# Minutes from the raw readings: each taken minute is recomputed whole, so it replaces the old.
_MINUTES = (
    """
INSERT INTO rollup_1m (stream_id, bucket, n, total, low, high, last_ts, last_value)
SELECT t.stream_id, t.bucket, count(*), sum(r.value), min(r.value), max(r.value), max(r.ts),
       (array_agg(r.value ORDER BY r.ts DESC))[1]
FROM rollup_taken t
JOIN readings r ON r.stream_id = t.stream_id AND r.ts >= t.bucket
               AND r.ts < t.bucket + interval '1 minute'
GROUP BY t.stream_id, t.bucket
"""
    + _UPSERT
)
# A coarser level from the finer one, for the buckets holding what changed. Table names go in
# as sql.Identifier, values as parameters.
_COARSER = sql.SQL(
    """
INSERT INTO {target} (stream_id, bucket, n, total, low, high, last_ts, last_value)
SELECT t.stream_id, t.bucket, sum(f.n), sum(f.total), min(f.low), max(f.high), max(f.last_ts),
       (array_agg(f.last_value ORDER BY f.last_ts DESC))[1]
FROM (
    SELECT DISTINCT stream_id, date_trunc(%(unit)s, bucket, 'UTC') AS bucket FROM rollup_taken
) t
JOIN {source} f ON f.stream_id = t.stream_id AND f.bucket >= t.bucket
               AND f.bucket < t.bucket + %(width)s::interval
GROUP BY t.stream_id, t.bucket
"""
    + _UPSERT
)


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What one :func:`refresh` did."""

    minutes: int  # dirty minutes recomputed
    skipped: bool  # another refresher held the lock


def dirty_minutes(
    stream_ids: NDArray[np.int32], ts_us: NDArray[np.int64]
) -> tuple[list[int], list[int]]:
    """The distinct (stream, minute number since the epoch) pairs of a batch."""
    if stream_ids.size == 0:
        return [], []
    minutes = np.floor_divide(ts_us, _MINUTE_US)
    pairs = np.unique(np.stack([stream_ids.astype(np.int64), minutes]), axis=1)
    return pairs[0].tolist(), pairs[1].tolist()


async def mark_dirty(
    cur: AsyncCursor[tuple[object, ...]], stream_ids: NDArray[np.int32], ts_us: NDArray[np.int64]
) -> None:
    """Record the minutes a batch writes; call inside the transaction that stores it."""
    streams, minutes = dirty_minutes(stream_ids, ts_us)
    if streams:
        await cur.execute(_MARK, (streams, minutes))


async def refresh(conn: AsyncConnection[tuple[object, ...]], *, limit: int = 50_000) -> Refreshed:
    """Recompute up to ``limit`` dirty minutes and the hours and days holding them."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,))
        row = await cur.fetchone()
        if row is None or not row[0]:
            return Refreshed(0, skipped=True)
        await cur.execute(_TAKEN_TABLE)
        await cur.execute(_TAKE, {"limit": limit})
        taken = cur.rowcount
        if taken <= 0:
            return Refreshed(0, skipped=False)
        await cur.execute(_MINUTES)
        for (source, _), (target, width) in pairwise(LEVELS):
            unit = width.split()[1]
            statement = _COARSER.format(
                source=sql.Identifier(source), target=sql.Identifier(target)
            )
            await cur.execute(statement, {"unit": unit, "width": width})
        return Refreshed(taken, skipped=False)


async def refresh_all(conn: AsyncConnection[tuple[object, ...]], *, limit: int = 50_000) -> int:
    """Refresh until nothing is dirty (or another refresher has the lock); minutes done."""
    done = 0
    while True:
        result = await refresh(conn, limit=limit)
        done += result.minutes
        if result.skipped or result.minutes < limit:
            return done
