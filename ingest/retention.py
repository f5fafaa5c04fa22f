"""How long each resolution is kept, and dropping what is past it.

By default raw readings stay for months, minutes for years, hours and days for ever. Where
TimescaleDB holds the readings, whole chunks are dropped (no row-by-row delete, no bloat);
elsewhere old rows are deleted.

Raw readings are never dropped while a minute they belong to still waits to be rolled up, so the
rollups always hold what retention takes away.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from psycopg import AsyncConnection, sql

_LOCK_KEY: Final = 0x52657465  # "Rete"


@dataclass(frozen=True, slots=True)
class Retention:
    """Days to keep each resolution; 0 keeps it for ever.

    Attributes:
        raw_days: Raw readings (default 90).
        minute_days: 1-minute rollups (default two years).
        hour_days: 1-hour rollups (default for ever).
        day_days: 1-day rollups (default for ever).
    """

    raw_days: int = 90
    minute_days: int = 730
    hour_days: int = 0
    day_days: int = 0

    def __post_init__(self) -> None:
        kept = [self.raw_days, self.minute_days, self.hour_days, self.day_days]
        if any(days < 0 for days in kept):
            raise ValueError("retention days must be 0 (for ever) or positive")
        # A coarser level is built from the finer one: it must outlive it.
        finite = [days or 10**9 for days in kept]
        if finite != sorted(finite):
            raise ValueError("each resolution must be kept at least as long as the finer one")


@dataclass(frozen=True, slots=True)
class Dropped:
    """What one :func:`apply` removed."""

    raw_chunks: int  # TimescaleDB chunks dropped (0 on plain PostgreSQL)
    raw_rows: int  # rows deleted (plain PostgreSQL)
    rollup_rows: dict[str, int]
    skipped: bool = False


async def apply(
    conn: AsyncConnection[tuple[object, ...]], policy: Retention, *, now: datetime
) -> Dropped:
    """Drop what ``policy`` no longer keeps, as of ``now``."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,))
        row = await cur.fetchone()
        if row is None or not row[0]:
            return Dropped(0, 0, {}, skipped=True)
        chunks = rows = 0
        if policy.raw_days:
            cutoff = now - timedelta(days=policy.raw_days)
            await cur.execute("SELECT min(bucket) FROM rollup_dirty")
            pending = await cur.fetchone()
            if pending is not None and isinstance(pending[0], datetime):
                cutoff = min(cutoff, pending[0])  # not rolled up yet: keep it
            await cur.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
            )
            timescale = await cur.fetchone()
            if timescale is not None and timescale[0]:
                await cur.execute(
                    "SELECT count(*) FROM drop_chunks('readings', older_than => %s::timestamptz)",
                    (cutoff,),
                )
                dropped = await cur.fetchone()
                chunks = int(str(dropped[0])) if dropped else 0
            else:
                await cur.execute("DELETE FROM readings WHERE ts < %s", (cutoff,))
                rows = cur.rowcount
        removed: dict[str, int] = {}
        for table, days in (
            ("rollup_1m", policy.minute_days),
            ("rollup_1h", policy.hour_days),
            ("rollup_1d", policy.day_days),
        ):
            if days:
                await cur.execute(
                    sql.SQL("DELETE FROM {} WHERE bucket < %s").format(sql.Identifier(table)),
                    (now - timedelta(days=days),),
                )
                removed[table] = cur.rowcount
        return Dropped(chunks, rows, removed)
