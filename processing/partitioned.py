"""Detection as a partitioned consumer of committed batches: each stream judged by one worker.

With several ingest workers on a shared subscription, each receives part of every stream. Rather
than detect on that part, ingest writes every committed batch to ``detection_feed`` (by the
partition of each reading's site, in the batch's own transaction), and each worker runs detection
only for the partitions it owns (:mod:`processing.owners`), reading their feed in commit order.
A partition has its own :class:`~processing.service.DetectionService`: taking one over restores
its streams from their checkpoint and replays the feed written since; the alert store recognises
the transitions the previous owner had already recorded (:mod:`processing.alerts`).

Reading only rows whose transaction id is below the oldest running transaction's makes the order
safe: such a transaction has ended, so no row can still appear behind the position reached. Rows
are judged once they have settled (``settle_s`` after they were written), and those read
together are merged by acquisition time: two workers receive alternate messages of one device,
and their batches of the same moment reach the detectors in the device's order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from processing.alerts import AlertStore, Outbox, Pool
from processing.feed import decode, in_time_order, partition_of
from processing.hook import ReadingColumns
from processing.owners import Fence, Lease, Ownership, Turn
from processing.service import (
    DetectionOptions,
    DetectionService,
    PartitionLostError,
    describe_streams,
)
from processing.streams import StreamInfo

log = logging.getLogger(__name__)

ROWS_PER_READ = 64  # feed rows per partition and query; catching up reads again at once
CATCH_UP_S = 0.5  # longest a tick spends reading the feed before writing alerts
# Longest a stop spends reading the feed: what is left stays there for the next owner, so a
# stop during a long backlog (a backfilled week) does not judge all of it first.
STOP_READ_S = 5.0
_READ = (
    "SELECT f.partition, f.xid::text, f.written_at < now() - make_interval(secs => %s),"
    " f.stream_ids, f.ts_us, f.vals"
    " FROM unnest(%s::int2[], %s::text[]) AS c(partition, after)"
    " CROSS JOIN LATERAL (SELECT * FROM detection_feed d"
    "  WHERE d.partition = c.partition AND d.xid > c.after::xid8"
    "  AND d.xid < pg_snapshot_xmin(pg_current_snapshot())"
    "  ORDER BY d.xid LIMIT %s) f"
    " ORDER BY f.partition, f.xid"
)
_PRUNE = (
    "DELETE FROM detection_feed f USING detection_partitions p"
    " WHERE f.partition = p.partition AND f.xid <= p.read_to"
)


def _warm_up(service: DetectionService) -> None:
    """Run every kernel once on throwaway neighbours, so none compiles later on the loop."""
    stage = service.stage
    stage.describe(
        StreamInfo(i, f"warm-up-{i}", "aq", "pm2_5", "ug/m3", "air", "warm-up") for i in range(3)
    )
    now = datetime.now(UTC)
    minutes = np.repeat(np.arange(8, 0, -1, dtype=np.int64), 3)
    ts = int(now.timestamp() * 1e6) - minutes * 60_000_000
    ids = np.tile(np.arange(3, dtype=np.int32), 8)
    stage.process(ReadingColumns(ids, ts, 10.0 + np.arange(24.0) % 5))
    stage.sweep(now, since=now - timedelta(hours=1))


def worker_name() -> str:
    """A name unique among live workers: host, process and a nonce (a restart is a new worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(slots=True)
class _Owned:
    """One partition this worker owns: its detectors and how far into the feed they are."""

    lease: Lease
    service: DetectionService
    position: int  # feed rows with xid <= position are in the detectors' state
    caught_up: bool = False


class PartitionedDetection:
    """Detection and alerting for the feed partitions this worker owns.

    Args:
        make_service: A fresh detection service (stage and options) for one partition.
        options: Periods and limits (``tick_s``, ``sweep_every_s``, ``checkpoint_every_s``).
        publisher: Sends alert changes on MQTT; None keeps them in the database only.
        worker: This worker's name among the live ones; unique by default.
        lease_s: How long a partition stays with a worker that stopped renewing it.
        settle_s: How long a feed row waits before it is judged, for the batches other workers
            are committing at the same moment.
    """

    def __init__(
        self,
        make_service: Callable[[], DetectionService],
        *,
        options: DetectionOptions | None = None,
        publisher: Outbox | None = None,
        worker: str | None = None,
        lease_s: float = 10.0,
        settle_s: float = 1.0,
    ) -> None:
        self._make_service = make_service
        self.options = options or DetectionOptions()
        self.publisher = publisher
        self.worker = worker or worker_name()
        self.lease_s = lease_s
        self.settle_s = settle_s
        self.owned: dict[int, _Owned] = {}
        self.live: list[str] = []
        self._valid_until = 0.0
        self.taken_on = 0  # partitions taken on since start (a handover to here counts one)

    # -- what tests and the service report ---------------------------------------------------

    @property
    def opened(self) -> int:
        """Alerts this worker opened (across the partitions it owns now)."""
        return sum(o.service.opened for o in self.owned.values())

    @property
    def readings(self) -> int:
        """Readings judged by the partitions this worker owns now."""
        return sum(o.service.stage.readings for o in self.owned.values())

    def service_of(self, site: str) -> DetectionService | None:
        """The detection service judging ``site``'s streams here, if this worker owns it."""
        owned = self.owned.get(partition_of(site))
        return owned.service if owned is not None else None

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, pool: Pool, stopping: asyncio.Event) -> None:
        """Until ``stopping`` (ingest has drained): own, read, judge, alert, checkpoint.

        On the way out everything read is judged and written, every partition checkpointed and
        released, and this worker leaves, so the others take over its share at once. The outbox
        is published all along by a task of its own: it holds operators' actions too, and owes
        nothing to the partitions.
        """
        publishing = asyncio.create_task(self._publishing(pool, stopping), name="alert-outbox")
        try:
            await self._detect(pool, stopping)
        finally:
            publishing.cancel()
            with suppress(asyncio.CancelledError):
                await publishing
            if self.publisher is not None:
                await self._publish(pool)  # the last transitions written on the way out
                await self.publisher.close()

    async def _detect(self, pool: Pool, stopping: asyncio.Event) -> None:
        # Compiled (or loaded from numba's cache) on a thread before any lease is taken: a
        # first compile takes tens of seconds, longer than a lease, and would block the loop.
        # A stop meanwhile does not wait for it: nothing is owned yet, the feed keeps it all.
        warming = asyncio.ensure_future(asyncio.to_thread(_warm_up, self._make_service()))
        stopped = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({warming, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not warming.done():
            return
        warming.result()
        ownership = Ownership(pool, self.worker, lease_s=self.lease_s)
        store = AlertStore(pool, per_site_per_minute=self.options.per_site_per_minute)
        options = self.options
        next_turn = next_sweep = 0.0
        next_checkpoint = time.monotonic() + options.checkpoint_every_s
        while not stopping.is_set():
            try:
                now = time.monotonic()
                if now >= next_turn:
                    await self._turn(pool, ownership, store)
                    next_turn = now + self.lease_s / 3
                await self._read(pool)
                if now >= next_sweep and options.clock == "wall":
                    next_sweep = now + options.sweep_every_s
                    self._sweep()
                await self._step(pool, store)
                if now >= next_checkpoint:
                    next_checkpoint = now + options.checkpoint_every_s
                    await self._checkpoint_all(pool, release=False)
            except Exception:  # the database or broker is away; ingest reports that itself
                log.exception("detection could not keep up with its partitions; retrying")
            with suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), options.tick_s)
        with suppress(Exception):
            # Renewed first: a long pause (the kernels compiling, a busy machine) may have let
            # the leases run short, and what is read here must still be checkpointed.
            await self._turn(pool, ownership, store)
            await self._read(pool, until_empty=True, limit_s=STOP_READ_S)
            await self._step(pool, store)
            await self._checkpoint_all(pool, release=True)
            await ownership.leave()

    async def _publishing(self, pool: Pool, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self._publish(pool)
            with suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.options.tick_s)

    async def _publish(self, pool: Pool) -> None:
        if self.publisher is None:
            return
        try:
            while await self.publisher.publish_pending(pool) > 0:
                pass
        except Exception as exc:  # the broker or the database is away: the outbox keeps them
            log.warning("alerts not published yet: %s", exc)

    async def _turn(self, pool: Pool, ownership: Ownership, store: AlertStore) -> None:
        turn: Turn = await ownership.turn({p: o.lease.epoch for p, o in self.owned.items()})
        self._valid_until = turn.valid_until
        self.live = turn.live
        for partition in turn.lost:
            log.warning("detection partition %d was taken over by another worker", partition)
            self.owned.pop(partition, None)
        # One read of the registry for every partition taken on, split by site.
        by_partition: dict[int, list[StreamInfo]] = {}
        if turn.gained:
            for info in await describe_streams(pool):
                by_partition.setdefault(partition_of(info.site), []).append(info)
        for lease in turn.gained:
            service = self._make_service()
            infos = by_partition.get(lease.partition, [])
            restored = await service.prepare(pool, infos)
            self.owned[lease.partition] = _Owned(lease, service, lease.read_to)
            self.taken_on += 1
            log.info(
                "detection partition %d taken on (epoch %d) among %d live workers:"
                " %d streams, %d restored",
                lease.partition,
                lease.epoch,
                len(turn.live),
                len(infos),
                restored,
            )
        for partition in turn.hand_over:
            owned = self.owned.get(partition)
            if owned is None:
                continue
            # Everything read is judged and its transitions written before the state leaves.
            await self._read(pool, only=partition, until_empty=True)
            await owned.service.step(pool, store)
            if await self._checkpoint(pool, partition, owned, release=True):
                log.info("detection partition %d handed over", partition)
            self.owned.pop(partition, None)

    def _leased(self) -> bool:
        """Whether the leases renewed at the last turn still certainly hold."""
        return time.monotonic() < self._valid_until

    async def _read(
        self,
        pool: Pool,
        *,
        only: int | None = None,
        until_empty: bool = False,
        limit_s: float | None = None,
    ) -> None:
        """Feed the owned partitions' detectors the rows committed since their position.

        A tick reads for at most ``CATCH_UP_S``; ``until_empty`` reads without waiting for rows
        to settle and, unless ``limit_s`` is given, to the end of the feed.
        """
        started = time.monotonic()
        limit = limit_s if until_empty else CATCH_UP_S
        while self.owned and self._leased():
            chosen = {p: o for p, o in self.owned.items() if only is None or p == only}
            if not chosen:
                return
            settle_s = 0.0 if until_empty else self.settle_s
            async with pool.connection() as conn:
                cursor = await conn.execute(
                    _READ,
                    (
                        settle_s,
                        list(chosen),
                        [str(o.position) for o in chosen.values()],
                        ROWS_PER_READ,
                    ),
                )
                rows = await cursor.fetchall()
            counts: dict[int, int] = {}
            settled: dict[int, list[ReadingColumns]] = {}
            unsettled: set[int] = set()
            for partition, xid, ready, ids, ts, values in rows:
                owned = chosen[int(str(partition))]
                number = owned.lease.partition
                counts[number] = counts.get(number, 0) + 1
                if not ready or number in unsettled:
                    unsettled.add(number)  # this row and the rest of its partition wait
                    continue
                blobs = bytes(ids), bytes(ts), bytes(values)  # type: ignore[call-overload]
                settled.setdefault(number, []).append(decode(*blobs))
                owned.position = int(str(xid))
            for number, parts in settled.items():
                chosen[number].service.hook(in_time_order(parts))
            for partition, owned in chosen.items():
                owned.caught_up = partition in unsettled or counts.get(partition, 0) < ROWS_PER_READ
            behind = any(not o.caught_up for o in chosen.values())
            if not behind or (limit is not None and time.monotonic() - started > limit):
                return

    def _sweep(self) -> None:
        """Missing data and neighbours, on partitions whose feed has been read to its end."""
        now = datetime.now(UTC)
        for owned in self.owned.values():
            if owned.caught_up:
                owned.service.stage.sweep(now, since=owned.service.started)

    async def _step(self, pool: Pool, store: AlertStore) -> None:
        if not self._leased():
            return
        for owned in list(self.owned.values()):
            await owned.service.step(pool, store)

    async def _checkpoint_all(self, pool: Pool, *, release: bool) -> None:
        for partition, owned in list(self.owned.items()):
            await self._checkpoint(pool, partition, owned, release=release)
        async with pool.connection() as conn:
            await conn.execute(_PRUNE)

    async def _checkpoint(
        self, pool: Pool, partition: int, owned: _Owned, *, release: bool
    ) -> bool:
        """Save the partition's state and position (and release it); False if it is not ours."""
        if not self._leased():
            return False
        fence = Fence(partition, self.worker, owned.lease.epoch, owned.position, release)
        try:
            await owned.service.checkpoint(pool, fence)
        except PartitionLostError:
            log.warning("detection partition %d was taken over before its checkpoint", partition)
            self.owned.pop(partition, None)
            return False
        return True
