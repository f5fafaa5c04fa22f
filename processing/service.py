"""Detection of one feed partition: a hook taking its readings, steps writing its alerts.

:class:`DetectionService` owns a :class:`~processing.stage.DetectionStage`. Its partition's owner
(:mod:`processing.partitioned`) feeds it the partition's committed readings, and about once a
second calls :meth:`DetectionService.step`, which learns what new streams are and writes alert
openings and resolutions (holding back what the district rate limit defers), and now and then
:meth:`DetectionService.checkpoint`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Literal

import numpy as np

from processing.alerts import AlertStore, Opening, Pool
from processing.clock import ReadingsClock
from processing.errors import DetectionError
from processing.explain import DEFAULT_ZONE, explain
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
            time; ``readings`` runs them at the end of every ``readings_window_s`` of
            acquisition time the readings reach, for history replayed faster than it happened
            (:mod:`processing.clock`).
    """

    tick_s: float = 1.0
    sweep_every_s: float = 10.0
    checkpoint_every_s: float = 300.0
    per_site_per_minute: int = 30
    zone: tzinfo = DEFAULT_ZONE
    clock: Literal["wall", "readings"] = "wall"
    readings_window_s: float = 3600.0


class DetectionService:
    """Anomaly detection and alerting for the streams of one feed partition.

    Args:
        stage: The detectors.
        options: Periods and limits.
    """

    def __init__(
        self, stage: DetectionStage | None = None, *, options: DetectionOptions | None = None
    ) -> None:
        self.stage = stage or DetectionStage()
        self.options = options or DetectionOptions()
        self.started = datetime.now(UTC)
        self._detect: BatchHook = self.stage
        if self.options.clock == "readings":
            self._detect = ReadingsClock(self.stage, window_s=self.options.readings_window_s)
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

    async def prepare(self, pool: Pool, infos: list[StreamInfo]) -> int:
        """Learn these streams and restore their checkpointed state; call before use.

        Args:
            pool: The telemetry database.
            infos: The partition's streams (:func:`describe_streams`).

        Returns the number of streams whose state was restored.
        """
        self._learn(infos)
        restored = await self._restore(pool, [i.stream_id for i in infos])
        self.started = datetime.now(UTC)
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

    async def step(self, pool: Pool, store: AlertStore) -> None:
        """Write the stage's transitions as alerts, and retry deferred ones."""
        seen = set(self.stage.stream_ids())
        for batch in self._waiting:
            seen.update(np.unique(batch.stream_ids).tolist())
        unknown = sorted(s for s in seen if s not in self.stage.infos)
        if unknown:
            self._learn(await describe_streams(pool, unknown))
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

    def _learn(self, infos: list[StreamInfo]) -> None:
        """Describe ``infos`` to the stage; their waiting readings can then be judged."""
        self.stage.describe(infos)
        if infos:
            top = max(i.stream_id for i in infos)
            if top >= self._described.size:
                grown = np.zeros(max(top + 1, 2 * self._described.size), dtype=bool)
                grown[: self._described.size] = self._described
                self._described = grown
            self._described[[i.stream_id for i in infos]] = True


async def describe_streams(pool: Pool, stream_ids: list[int] | None = None) -> list[StreamInfo]:
    """What the given streams are (metric, device, family, site); None: every registered one."""
    async with pool.connection() as conn:
        if stream_ids is None:
            cursor = await conn.execute(_DESCRIBE)
        else:
            cursor = await conn.execute(_DESCRIBE + " WHERE s.stream_id = ANY(%s)", (stream_ids,))
        rows = await cursor.fetchall()
    return [
        StreamInfo(int(str(r[0])), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6]))
        for r in rows
    ]


class PartitionLostError(DetectionError):
    """Another worker owns the feed partition now: this worker's state of it is stale."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"detection partition {partition} is owned by another worker now")
        self.partition = partition
