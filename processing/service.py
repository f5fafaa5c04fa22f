"""Detection inside an ingest worker: an inline hook, and a task turning transitions into alerts.

:class:`DetectionService` owns a :class:`~processing.stage.DetectionStage`. Ingest calls the stage
with every committed batch; :meth:`DetectionService.run` then, about once a second, learns what new
streams are, runs the time-driven checks, writes alert openings and resolutions (holding back what
the district rate limit defers), publishes the outbox, and checkpoints changed state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Literal

import numpy as np

from processing.alerts import AlertStore, Opening, Outbox, Pool
from processing.clock import ReadingsClock
from processing.explain import DEFAULT_ZONE, explain
from processing.feed import partition_of
from processing.hook import BatchHook, ReadingColumns
from processing.kinds import Kind, severity
from processing.owners import Fence
from processing.stage import DetectionStage, Event
from processing.streams import StreamInfo

log = logging.getLogger(__name__)

MAX_WAITING_READINGS = 200_000  # held for undescribed streams before they are judged anyway

_DESCRIBE = (
    "SELECT s.stream_id, s.device_id, s.sensor, s.metric, s.unit, d.family, d.site"
    " FROM streams s JOIN devices d USING (device_id)"
)
_SAVE = (
    "INSERT INTO detector_state (stream_id, state, saved_at) VALUES (%s, %s, now())"
    " ON CONFLICT (stream_id) DO UPDATE SET state = excluded.state, saved_at = now()"
)


@dataclass(frozen=True, slots=True)
class DetectionOptions:
    """How often the service does its periodic work, and its limits.

    Attributes:
        clock: ``wall`` runs the sweeps (missing data, neighbours) every ``sweep_every_s`` of real
            time; ``readings`` runs them at the end of every hour of acquisition time the readings
            reach, for history replayed faster than it happened (:mod:`processing.clock`).
    """

    tick_s: float = 1.0
    sweep_every_s: float = 10.0
    checkpoint_every_s: float = 300.0
    per_site_per_minute: int = 30
    zone: tzinfo = DEFAULT_ZONE
    clock: Literal["wall", "readings"] = "wall"


class DetectionService:
    """Anomaly detection and alerting for one ingest worker.

    Args:
        stage: The detectors.
        options: Periods and limits.
        publisher: Sends alert changes on MQTT; None keeps them in the database only.
    """

    def __init__(
        self,
        stage: DetectionStage | None = None,
        *,
        options: DetectionOptions | None = None,
        publisher: Outbox | None = None,
    ) -> None:
        self.stage = stage or DetectionStage()
        self.options = options or DetectionOptions()
        self.publisher = publisher
        self.started = datetime.now(UTC)
        self._detect: BatchHook = self.stage
        if self.options.clock == "readings":
            self._detect = ReadingsClock(self.stage)
        # Readings of streams not yet described wait (in order) for the next step to describe
        # them, so a new sensor's first readings are judged as what it is. Ingest calls the hook
        # and runs the service on the same event loop thread.
        self._described = np.zeros(1024, dtype=bool)
        self._waiting: list[ReadingColumns] = []
        self._waiting_readings = 0
        self._deferred: dict[tuple[int, Kind], Event] = {}
        # Transitions drained from the stage but not yet written (a database failover cut the
        # step short): first in line at the next step, so none is lost.
        self._unwritten: list[Event] = []
        self._partition: int | None = None
        self.opened = 0
        self.resolved = 0
        self.deferred = 0

    @property
    def hook(self) -> BatchHook:
        """What ingest calls with each committed batch."""
        return self._take

    def _take(self, batch: ReadingColumns) -> None:
        ids = batch.stream_ids
        known = ids.size == 0 or (
            int(ids.max()) < self._described.size and bool(self._described[ids].all())
        )
        if not self._waiting and known:
            self._detect(batch)
            return
        self._waiting.append(batch)
        self._waiting_readings += len(batch)
        if self._waiting_readings > MAX_WAITING_READINGS:
            log.warning("judging %d readings of undescribed streams", self._waiting_readings)
            self._release()

    def _release(self) -> None:
        waiting, self._waiting, self._waiting_readings = self._waiting, [], 0
        for batch in waiting:
            self._detect(batch)

    async def prepare(self, pool: Pool, partition: int | None = None) -> int:
        """Learn the registered streams and restore their checkpointed state; call before use.

        Args:
            pool: The telemetry database.
            partition: Only the streams of the sites in this feed partition; None for all.

        Returns the number of streams whose state was restored.
        """
        self._partition = partition
        await self._describe(pool, None)
        restored = await self._restore(pool, list(self.stage.infos))
        self.started = datetime.now(UTC)
        log.info(
            "detection ready%s: %d streams described, %d restored",
            "" if partition is None else f" for partition {partition}",
            len(self.stage.infos),
            restored,
        )
        return restored

    async def _restore(self, pool: Pool, stream_ids: list[int]) -> int:
        if not stream_ids:
            return 0
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT stream_id, state FROM detector_state WHERE stream_id = ANY(%s)",
                (stream_ids,),
            )
            rows = await cursor.fetchall()
        saved = [(int(str(row[0])), bytes(row[1])) for row in rows]  # type: ignore[call-overload]
        restored = self.stage.restore(saved)
        self.stage.mark_dirty([stream_id for stream_id, _ in saved], dirty=False)  # saved
        return restored

    async def run(self, pool: Pool, stopping: asyncio.Event) -> None:
        """Until ``stopping``: alerts from transitions, sweeps, publication, checkpoints."""
        store = AlertStore(pool, per_site_per_minute=self.options.per_site_per_minute)
        options = self.options
        next_sweep = time.monotonic() + options.sweep_every_s
        next_checkpoint = time.monotonic() + options.checkpoint_every_s
        while not stopping.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), options.tick_s)
            try:
                now = time.monotonic()
                if now >= next_sweep and options.clock == "wall":
                    next_sweep = now + options.sweep_every_s
                    self.stage.sweep(datetime.now(UTC), since=self.started)
                await self.step(pool, store)
                if now >= next_checkpoint:
                    next_checkpoint = now + options.checkpoint_every_s
                    await self.checkpoint(pool)
            except Exception:  # the database or broker is away; ingest reports that itself
                log.exception("detection could not write alerts; retrying")
        with suppress(Exception):
            await self.step(pool, store)
            await self.checkpoint(pool)
        if self.publisher is not None:
            await self.publisher.close()

    async def step(self, pool: Pool, store: AlertStore) -> None:
        """Write the stage's transitions as alerts, retry deferred ones, publish the outbox."""
        seen = set(self.stage.stream_ids())
        for batch in self._waiting:
            seen.update(np.unique(batch.stream_ids).tolist())
        unknown = sorted(s for s in seen if s not in self.stage.infos)
        if unknown:
            await self._describe(pool, unknown)
            # A stream whose device moved here from a site of another partition keeps its memory.
            await self._restore(pool, unknown)
        self._release()
        pending = list(self._deferred.values())
        self._deferred.clear()
        # A deferred opening is still wanted only while its condition lasts.
        pending = [e for e in pending if self.stage.active(e.stream_id, e.kind)]
        events = [*self._unwritten, *pending, *self.stage.drain()]
        self._unwritten = []
        for done, event in enumerate(events):
            try:
                await self._apply(store, event)
            except BaseException:
                # Writing it again is safe: one unresolved alert per stream and kind.
                self._unwritten = events[done:]
                raise
        if self.publisher is not None:
            try:
                while await self.publisher.publish_pending(pool) > 0:
                    pass
            except Exception as exc:  # the broker is away: the outbox keeps them
                log.warning("alerts not published yet: %s", exc)

    async def _apply(self, store: AlertStore, event: Event) -> None:
        info = self.stage.infos.get(event.stream_id)
        if info is None:
            log.warning("alert on unregistered stream %d dropped", event.stream_id)
            return
        message = explain(event, info, zone=self.options.zone, scheme=self.stage.scheme)
        if not event.opened:
            if self._deferred.pop((event.stream_id, event.kind), None) is None:
                resolved = await store.resolve_condition(
                    event.stream_id, event.kind.slug, f"back to normal: {message}", event.at
                )
                self.resolved += resolved is not None
            return
        outcome, _ = await store.open(
            Opening(
                event.stream_id,
                info.device,
                info.site,
                event.kind.slug,
                severity(event.kind, event.score),
                message,
                event.score,
                event.value,
                event.at,
            )
        )
        if outcome == "deferred":
            self.deferred += 1
            self._deferred[event.stream_id, event.kind] = event
        elif outcome == "opened":
            self.opened += 1

    async def checkpoint(self, pool: Pool, fence: Fence | None = None) -> int:
        """Save every changed stream's state; returns how many rows were written.

        Args:
            pool: The telemetry database.
            fence: The feed partition's tenure: the state is saved, with how far into the feed
                it reaches, only while this worker still owns the partition.

        Raises:
            PartitionLostError: The fence's tenure is over; nothing was saved.
        """
        rows = self.stage.take_dirty()
        rows = [(s, blob) for s, blob in rows if s in self.stage.infos]
        if not rows and fence is None:
            return 0
        try:
            async with pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                if rows:
                    await cursor.executemany(_SAVE, rows)
                if fence is not None and not await fence.record(cursor):
                    raise PartitionLostError(fence.partition)
        except BaseException:
            self.stage.mark_dirty([stream_id for stream_id, _ in rows])  # saved next time
            raise
        return len(rows)

    async def _describe(self, pool: Pool, stream_ids: list[int] | None) -> None:
        async with pool.connection() as conn:
            if stream_ids is None:
                cursor = await conn.execute(_DESCRIBE)
            else:
                cursor = await conn.execute(
                    _DESCRIBE + " WHERE s.stream_id = ANY(%s)", (stream_ids,)
                )
            rows = await cursor.fetchall()
        infos = [
            StreamInfo(
                int(str(r[0])), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6])
            )
            for r in rows
        ]
        if self._partition is not None and stream_ids is None:
            infos = [i for i in infos if partition_of(i.site) == self._partition]
        self.stage.describe(infos)
        if infos:
            top = max(i.stream_id for i in infos)
            if top >= self._described.size:
                grown = np.zeros(max(top + 1, 2 * self._described.size), dtype=bool)
                grown[: self._described.size] = self._described
                self._described = grown
            self._described[[i.stream_id for i in infos]] = True


class PartitionLostError(Exception):
    """Another worker owns the feed partition now: this worker's state of it is stale."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"detection partition {partition} is owned by another worker now")
        self.partition = partition
