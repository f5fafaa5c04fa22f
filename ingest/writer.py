"""Durable writes: one transaction per batch, readings by binary COPY, exactly once.

Readings are COPYed straight into ``readings``. Its primary key (stream, timestamp) is the
deduplication rule: a reading the broker redelivers (QoS 1 is at least once) makes the COPY
fail, and the batch is then written again through a staging table with ``ON CONFLICT DO
NOTHING``, which counts the duplicates instead of storing them. Redeliveries only follow a
failure, so almost every batch takes the one-statement path. Rejections and status changes of
the same messages commit in the same transaction; the caller acknowledges after it returns.

The newest value per stream and the devices' last-seen times are derived data, written
separately and less often by :meth:`PostgresStore.flush_live` (a lost update heals itself).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from edge.contract import Status
from ingest import rollups
from ingest.columns import Columns, newest_per_stream
from ingest.validate import Rejection
from processing.feed import INSERT_FEED, feed_rows
from processing.hook import ReadingColumns

log = logging.getLogger(__name__)

StreamKey = tuple[str, str, str]  # device, sensor, metric


@dataclass(slots=True)
class WriteBatch:
    """Everything one transaction writes."""

    readings: Columns = field(default_factory=Columns)
    rejections: list[Rejection] = field(default_factory=list)
    statuses: dict[str, tuple[int, Status]] = field(default_factory=dict)  # device: (µs, status)
    # Each reading's detection partition, when detection reads the feed (processing.feed).
    partitions: NDArray[np.int16] | None = None

    def __bool__(self) -> bool:
        return bool(len(self.readings) or self.rejections or self.statuses)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: readings stored, and readings that were already stored."""

    inserted: int
    duplicates: int


@dataclass(slots=True)
class LiveState:
    """Derived state to refresh: the newest value per stream, and each device's last message."""

    readings: list[ReadingColumns] = field(default_factory=list)
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)  # device: (µs, seq)

    def __bool__(self) -> bool:
        return bool(self.readings or self.seen)


class Store(Protocol):
    """Where batches go: the database, or memory in unit tests."""

    async def streams(self, wanted: dict[StreamKey, str]) -> dict[StreamKey, int]:
        """Ids of the given streams (key: unit), creating the ones that do not exist yet."""
        ...

    async def write(self, batch: WriteBatch) -> WriteResult:
        """Make ``batch`` durable, all or nothing."""
        ...

    async def flush_live(self, live: LiveState) -> None:
        """Refresh the newest values and last-seen times."""
        ...


class MemoryStore:
    """A :class:`Store` in memory with the same deduplication rule, for unit tests."""

    def __init__(self) -> None:
        self.ids: dict[StreamKey, int] = {}
        self.readings: dict[tuple[int, int], float] = {}
        self.rejections: list[Rejection] = []
        self.statuses: dict[str, Status] = {}
        self.seen: dict[str, tuple[int, int]] = {}
        self.latest: dict[int, tuple[int, float]] = {}
        self.fail_next = 0

    async def streams(self, wanted: dict[StreamKey, str]) -> dict[StreamKey, int]:  # noqa: D102
        for key in wanted:
            self.ids.setdefault(key, len(self.ids) + 1)
        return {key: self.ids[key] for key in wanted}

    def key_of(self, stream_id: int) -> StreamKey:
        """The (device, sensor, metric) of a stream id."""
        return next(key for key, sid in self.ids.items() if sid == stream_id)

    async def write(self, batch: WriteBatch) -> WriteResult:  # noqa: D102
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("simulated database outage")
        inserted = 0
        columns = batch.readings
        for sid, ts, value in zip(columns.stream_ids, columns.ts_us, columns.values, strict=True):
            if (sid, ts) not in self.readings:
                self.readings[(sid, ts)] = value
                inserted += 1
        self.rejections.extend(batch.rejections)
        self.statuses.update({device: status for device, (_, status) in batch.statuses.items()})
        return WriteResult(inserted, len(columns) - inserted)

    async def flush_live(self, live: LiveState) -> None:  # noqa: D102
        for columns in live.readings:
            for sid, ts, value in zip(*newest_per_stream(columns), strict=True):
                if int(ts) > self.latest.get(int(sid), (-1, 0.0))[0]:
                    self.latest[int(sid)] = (int(ts), float(value))
        self.seen.update(live.seen)


_STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS readings_in"
    " (ts timestamptz NOT NULL, stream_id integer NOT NULL, value double precision NOT NULL)"
    " ON COMMIT DELETE ROWS"
)
# Timestamps travel as integer microseconds since the Unix epoch and become timestamptz
# exactly through "'epoch'::timestamptz + us * interval '1 microsecond'".
_COPY_READINGS = "COPY readings (ts, stream_id, value) FROM STDIN (FORMAT BINARY)"
_COPY_STAGING = "COPY readings_in (ts, stream_id, value) FROM STDIN (FORMAT BINARY)"
_INSERT_STAGED = (
    "INSERT INTO readings (ts, stream_id, value) SELECT ts, stream_id, value FROM readings_in"
    " ON CONFLICT (stream_id, ts) DO NOTHING"
)
# The same, returning what was new: only that goes on to detection's feed.
_INSERT_STAGED_FRESH = (
    _INSERT_STAGED + " RETURNING stream_id, (extract(epoch FROM ts) * 1000000)::bigint, value"
)
_COPY_REJECTIONS = (
    "COPY rejections (topic, device_id, reason, detail, reading_index, payload) FROM STDIN"
)
_UPDATE_STATUS = (
    "UPDATE devices AS d SET state = u.state, status = u.fields,"
    " state_at = 'epoch'::timestamptz + u.at * interval '1 microsecond'"
    " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::jsonb[])"
    " AS u(device_id, state, at, fields) WHERE d.device_id = u.device_id"
)
_UPSERT_LATEST = (
    "INSERT INTO latest (stream_id, ts, value)"
    " SELECT u.stream_id, 'epoch'::timestamptz + u.ts * interval '1 microsecond', u.value"
    " FROM unnest(%s::int[], %s::bigint[], %s::float8[]) AS u(stream_id, ts, value)"
    " ON CONFLICT (stream_id) DO UPDATE SET ts = excluded.ts, value = excluded.value"
    " WHERE latest.ts < excluded.ts"
)
_UPDATE_SEEN = (
    "UPDATE devices AS d"
    " SET last_seen = GREATEST(d.last_seen,"
    " 'epoch'::timestamptz + u.ts * interval '1 microsecond'), last_seq = u.seq"
    " FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS u(device_id, ts, seq)"
    " WHERE d.device_id = u.device_id"
)


def _fresh(rows: list[tuple[object, ...]]) -> ReadingColumns:
    """The readings a deduplicating insert returned as new."""
    return ReadingColumns(
        np.array([int(str(r[0])) for r in rows], dtype=np.int32),
        np.array([int(str(r[1])) for r in rows], dtype=np.int64),
        np.array([float(str(r[2])) for r in rows], dtype=np.float64),
    )


def _partitions_of(
    fresh: ReadingColumns, batch: ReadingColumns, partitions: NDArray[np.int16]
) -> NDArray[np.int16]:
    """The partitions of ``fresh``'s streams, as the whole batch had them."""
    of = dict(zip(batch.stream_ids.tolist(), partitions.tolist(), strict=True))
    return np.array([of[s] for s in fresh.stream_ids.tolist()], dtype=np.int16)


async def prepare_connection(conn: AsyncConnection[tuple[object, ...]]) -> None:
    """Pool ``configure`` hook: give each connection its staging table."""
    await conn.execute(_STAGING_DDL)
    await conn.commit()


class PostgresStore:
    """A :class:`Store` on PostgreSQL, with or without TimescaleDB.

    Args:
        pool: A pool whose connections were configured with :func:`prepare_connection`.
        timeout_s: How long to wait for a connection before counting the write as failed.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[tuple[object, ...]]],
        timeout_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._timeout_s = timeout_s  # waiting longer for a connection only hides an outage

    async def streams(self, wanted: dict[StreamKey, str]) -> dict[StreamKey, int]:
        """Resolve stream ids in a transaction of their own (an unused stream row is harmless)."""
        devices, sensors, metrics = (list(part) for part in zip(*wanted, strict=True))
        units = list(wanted.values())
        async with self._pool.connection(timeout=self._timeout_s) as conn:
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
            rows = await cursor.fetchall()
        return {(str(d), str(s), str(m)): int(str(i)) for d, s, m, i in rows}

    async def write(self, batch: WriteBatch) -> WriteResult:
        """Write the batch in one transaction; raises on failure and leaves nothing behind."""
        buffer = batch.readings.copy_buffer() if len(batch.readings) else b""
        try:
            return await self._write(batch, buffer, deduplicate=False)
        except psycopg.errors.UniqueViolation:
            log.info("batch holds readings already stored (a redelivery); deduplicating")
            return await self._write(batch, buffer, deduplicate=True)

    async def _write(self, batch: WriteBatch, buffer: bytes, *, deduplicate: bool) -> WriteResult:
        count = len(batch.readings)
        inserted = 0
        async with (
            self._pool.connection(timeout=self._timeout_s) as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            if count:
                async with cur.copy(_COPY_STAGING if deduplicate else _COPY_READINGS) as copy:
                    await copy.write(buffer)
                inserted = count
                arrays = batch.readings.arrays()
                partitions = batch.partitions
                if deduplicate and partitions is None:
                    await cur.execute(_INSERT_STAGED)
                    inserted = cur.rowcount
                elif deduplicate and partitions is not None:
                    await cur.execute(_INSERT_STAGED_FRESH)
                    fresh = _fresh(await cur.fetchall())
                    inserted = len(fresh)
                    partitions = _partitions_of(fresh, arrays, partitions)
                    arrays = fresh
                # In this transaction: a stored reading always reaches the rollups, and detection.
                await rollups.mark_dirty(cur, batch.readings.arrays().ts_us)
                if partitions is not None and len(arrays):
                    await cur.executemany(INSERT_FEED, feed_rows(arrays, partitions))
            if batch.rejections:
                async with cur.copy(_COPY_REJECTIONS) as copy:
                    for r in batch.rejections:
                        await copy.write_row(
                            (
                                r.topic,
                                r.device,
                                str(r.reason),
                                r.detail,
                                r.reading_index,
                                r.excerpt(),
                            )
                        )
            if batch.statuses:
                devices = list(batch.statuses)
                await cur.execute(
                    _UPDATE_STATUS,
                    (
                        devices,
                        [batch.statuses[d][1].state for d in devices],
                        [batch.statuses[d][0] for d in devices],
                        [json.dumps(dict(batch.statuses[d][1].fields)) for d in devices],
                    ),
                )
        return WriteResult(inserted, count - inserted)

    async def flush_live(self, live: LiveState) -> None:
        """Upsert the newest value per stream and the devices' last-seen times."""
        async with self._pool.connection(timeout=self._timeout_s) as conn, conn.transaction():
            if live.readings:
                merged = ReadingColumns(
                    np.concatenate([c.stream_ids for c in live.readings]),
                    np.concatenate([c.ts_us for c in live.readings]),
                    np.concatenate([c.values for c in live.readings]),
                )
                ids, ts, values = newest_per_stream(merged)
                await conn.execute(_UPSERT_LATEST, (ids.tolist(), ts.tolist(), values.tolist()))
            if live.seen:
                devices = list(live.seen)
                seen = [live.seen[d] for d in devices]
                await conn.execute(
                    _UPDATE_SEEN, (devices, [at for at, _ in seen], [seq for _, seq in seen])
                )
