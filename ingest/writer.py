"""Write validated messages to the database in one transaction per batch, with COPY.

Readings are copied into a per-connection temporary table, then inserted with ``ON CONFLICT DO
NOTHING`` on the readings' primary key: a reading redelivered by the broker (QoS 1 is at least
once) is counted as a duplicate and not stored twice. Rejections, device last-seen and status
changes go in the same transaction, so a batch is either all durable or not at all, and the
caller acknowledges its messages only after :meth:`PostgresStore.write` returns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from edge.contract import Status
from ingest.validate import Rejection

log = logging.getLogger(__name__)

StreamKey = tuple[str, str, str]  # device, sensor, metric


@dataclass(frozen=True, slots=True)
class Row:
    """One reading ready to store."""

    device: str
    sensor: str
    metric: str
    unit: str
    ts: datetime
    value: float


@dataclass(slots=True)
class WriteBatch:
    """Everything one transaction writes."""

    rows: list[Row] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    seen: dict[str, tuple[datetime, int]] = field(default_factory=dict)  # device -> (at, seq)
    statuses: dict[str, tuple[datetime, Status]] = field(default_factory=dict)  # latest per device

    def __bool__(self) -> bool:
        return bool(self.rows or self.rejections or self.seen or self.statuses)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: readings stored, and readings that were already stored."""

    inserted: int
    duplicates: int


class Store(Protocol):
    """Where batches go: the database, or memory in unit tests."""

    async def write(self, batch: WriteBatch) -> WriteResult:
        """Make ``batch`` durable, all or nothing."""
        ...


class MemoryStore:
    """A :class:`Store` in memory with the same deduplication rule, for unit tests."""

    def __init__(self) -> None:
        self.readings: dict[tuple[str, str, str, datetime], float] = {}
        self.rejections: list[Rejection] = []
        self.seen: dict[str, tuple[datetime, int]] = {}
        self.statuses: dict[str, Status] = {}
        self.fail_next = 0

    async def write(self, batch: WriteBatch) -> WriteResult:  # noqa: D102
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("simulated database outage")
        inserted = 0
        for row in batch.rows:
            key = (row.device, row.sensor, row.metric, row.ts)
            if key not in self.readings:
                self.readings[key] = row.value
                inserted += 1
        self.rejections.extend(batch.rejections)
        self.seen.update(batch.seen)
        self.statuses.update({device: status for device, (_, status) in batch.statuses.items()})
        return WriteResult(inserted, len(batch.rows) - inserted)


_STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS readings_in"
    " (ts timestamptz NOT NULL, stream_id integer NOT NULL, value double precision NOT NULL)"
    " ON COMMIT DELETE ROWS"
)


async def prepare_connection(conn: AsyncConnection[tuple[object, ...]]) -> None:
    """Pool ``configure`` hook: give each connection its staging table."""
    await conn.execute(_STAGING_DDL)
    await conn.commit()


class PostgresStore:
    """A :class:`Store` on PostgreSQL (with or without TimescaleDB).

    Args:
        pool: A pool whose connections were configured with :func:`prepare_connection`.
    """

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[tuple[object, ...]]]) -> None:
        self._pool = pool
        self._streams: dict[StreamKey, int] = {}

    async def write(self, batch: WriteBatch) -> WriteResult:
        """Write the batch in one transaction; raises on failure and leaves nothing behind."""
        new_streams: dict[StreamKey, int] = {}
        async with self._pool.connection() as conn, conn.transaction():
            inserted = 0
            if batch.rows:
                new_streams = await self._resolve_streams(conn, batch.rows)
                inserted = await self._insert_readings(conn, batch.rows, new_streams)
            if batch.rejections:
                await self._insert_rejections(conn, batch.rejections)
            if batch.seen:
                await self._update_seen(conn, batch.seen)
            if batch.statuses:
                await self._update_statuses(conn, batch.statuses)
        # Only ids from a committed transaction are safe to remember.
        self._streams.update(new_streams)
        return WriteResult(inserted, len(batch.rows) - inserted)

    async def _resolve_streams(
        self, conn: AsyncConnection[tuple[object, ...]], rows: Sequence[Row]
    ) -> dict[StreamKey, int]:
        missing: dict[StreamKey, str] = {}
        for row in rows:
            key = (row.device, row.sensor, row.metric)
            if key not in self._streams:
                missing[key] = row.unit
        if not missing:
            return {}
        devices, sensors, metrics = (list(part) for part in zip(*missing, strict=True))
        units = list(missing.values())
        await conn.execute(
            "INSERT INTO streams (device_id, sensor, metric, unit)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
            " ON CONFLICT (device_id, sensor, metric) DO NOTHING",
            (devices, sensors, metrics, units),
        )
        cursor = await conn.execute(
            "SELECT s.device_id, s.sensor, s.metric, s.stream_id FROM streams s"
            " JOIN unnest(%s::text[], %s::text[], %s::text[]) AS k(device_id, sensor, metric)"
            " USING (device_id, sensor, metric)",
            (devices, sensors, metrics),
        )
        found: dict[StreamKey, int] = {}
        for device, sensor, metric, stream_id in await cursor.fetchall():
            found[(str(device), str(sensor), str(metric))] = int(str(stream_id))
        return found

    async def _insert_readings(
        self,
        conn: AsyncConnection[tuple[object, ...]],
        rows: Sequence[Row],
        new_streams: dict[StreamKey, int],
    ) -> int:
        streams = self._streams
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY readings_in (ts, stream_id, value) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["timestamptz", "int4", "float8"])
                for row in rows:
                    key = (row.device, row.sensor, row.metric)
                    stream_id = streams.get(key) or new_streams[key]
                    await copy.write_row((row.ts, stream_id, row.value))
            await cur.execute(
                "INSERT INTO readings (ts, stream_id, value)"
                " SELECT ts, stream_id, value FROM readings_in"
                " ON CONFLICT (stream_id, ts) DO NOTHING"
            )
            inserted = cur.rowcount
            await cur.execute(
                "INSERT INTO latest (stream_id, ts, value)"
                " SELECT DISTINCT ON (stream_id) stream_id, ts, value FROM readings_in"
                " ORDER BY stream_id, ts DESC"
                " ON CONFLICT (stream_id) DO UPDATE SET ts = excluded.ts, value = excluded.value"
                " WHERE latest.ts < excluded.ts"
            )
        return inserted

    async def _insert_rejections(
        self, conn: AsyncConnection[tuple[object, ...]], rejections: Sequence[Rejection]
    ) -> None:
        async with (
            conn.cursor() as cur,
            cur.copy(
                "COPY rejections (topic, device_id, reason, detail, reading_index, payload)"
                " FROM STDIN"
            ) as copy,
        ):
            for r in rejections:
                await copy.write_row(
                    (r.topic, r.device, str(r.reason), r.detail, r.reading_index, r.excerpt())
                )

    async def _update_seen(
        self, conn: AsyncConnection[tuple[object, ...]], seen: dict[str, tuple[datetime, int]]
    ) -> None:
        devices = list(seen)
        await conn.execute(
            "UPDATE devices AS d SET last_seen = GREATEST(d.last_seen, u.at), last_seq = u.seq"
            " FROM unnest(%s::text[], %s::timestamptz[], %s::bigint[]) AS u(device_id, at, seq)"
            " WHERE d.device_id = u.device_id",
            (devices, [seen[d][0] for d in devices], [seen[d][1] for d in devices]),
        )

    async def _update_statuses(
        self,
        conn: AsyncConnection[tuple[object, ...]],
        statuses: dict[str, tuple[datetime, Status]],
    ) -> None:
        devices = list(statuses)
        await conn.execute(
            "UPDATE devices AS d SET state = u.state, state_at = u.at, status = u.fields"
            " FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::jsonb[])"
            " AS u(device_id, state, at, fields)"
            " WHERE d.device_id = u.device_id",
            (
                devices,
                [statuses[d][1].state for d in devices],
                [statuses[d][0] for d in devices],
                [json.dumps(dict(statuses[d][1].fields)) for d in devices],
            ),
        )
