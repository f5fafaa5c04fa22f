"""From received messages to committed batches: validate, batch by size or age, write, then ack.

One task owns the pipeline, so messages are written and acknowledged in arrival order. The
consumer hands over messages in bulk, straight from the socket; each one is validated, its good
readings appended to the batch's columns, and the batch written when it is big or old enough.
A failed write is retried with backoff while the batch is held: unacknowledged messages then
fill the broker's in-flight window and the broker stops sending (backpressure). A write the
database refuses because of the data itself is retried message by message, so the one message
at fault is stored as a rejection and everything else is kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg

from edge.backoff import Backoff
from edge.contract import ContractError, JsonLoads, Reason, Status, decode_status
from edge.metrics import METRICS
from edge.topics import parse_topic
from ingest.columns import Columns
from ingest.errors import IngestError
from ingest.metrics import IngestMetrics, PipelineStats
from ingest.mqtt import Message
from ingest.registry import SiteDirectory
from ingest.validate import Checked, IngestReason, Limits, Rejection, check_telemetry
from ingest.writer import LiveState, Store, StreamKey, WriteBatch, WriteResult
from processing.feed import PartitionMap
from processing.hook import BatchHook, no_detection

log = logging.getLogger(__name__)

AckToken = tuple[int, int, int]  # connection generation, packet id, QoS
Acknowledge = Callable[[list[AckToken]], None]

STORAGE_ERROR = "storage_error"
# Errors about the data itself: retrying the same batch cannot succeed.
_REFUSED = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError)


@dataclass(slots=True)
class _Part:
    """What one message contributes to a write: its rows are ``start:stop`` of the batch."""

    token: AckToken
    topic: str
    payload: bytes
    received_us: int
    start: int = 0
    stop: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    status: tuple[str, int, Status] | None = None
    seen: tuple[str, int, int] | None = None  # device, received µs, seq
    sent_at_us: int | None = None


@dataclass(slots=True)
class _Pending:
    """Messages gathered for the next write, in arrival order."""

    parts: list[_Part] = field(default_factory=list)
    columns: Columns = field(default_factory=Columns)
    started: float = 0.0


def _batch(parts: Sequence[_Part], columns: Columns) -> WriteBatch:
    batch = WriteBatch(readings=columns)
    for part in parts:
        batch.rejections.extend(part.rejections)
        if part.status is not None:
            device, at, status = part.status
            batch.statuses[device] = (at, status)
    return batch


class Pipeline:
    """Validates and writes messages; acknowledges each one after its batch commits.

    Args:
        store: Where batches are written.
        directory: Registered devices and their sites.
        acknowledge: Sends the PUBACKs of committed messages (the consumer's).
        max_rows: Write when this many readings are waiting...
        max_age_s: ...or when the oldest waiting message is this old.
        queue_size: Messages waiting ahead of the writer before the consumer is asked to
            pause reading (the broker's in-flight window normally stops it first).
        limits: Timestamp plausibility window.
        loads: JSON parser.
        process: Detection hook, called with every committed batch's readings.
        feed: When given, every batch also writes its readings to detection's feed, by the
            partition of each stream's site (detection then runs as the feed's consumer).
        metrics: Where to count for Prometheus; a private registry by default.
        live_interval_s: How often the newest values and last-seen times are written.
        give_up_s: After a stop is asked, how long to keep retrying a failing write before
            leaving its messages unacknowledged with the broker (which redelivers them).
    """

    def __init__(
        self,
        store: Store,
        directory: SiteDirectory,
        acknowledge: Acknowledge,
        *,
        max_rows: int = 5_000,
        max_age_s: float = 0.25,
        queue_size: int = 10_000,
        limits: Limits = Limits(),  # noqa: B008  # frozen, so sharing the default is safe
        loads: JsonLoads = json.loads,
        process: BatchHook = no_detection,
        feed: PartitionMap | None = None,
        metrics: IngestMetrics | None = None,
        live_interval_s: float = 1.0,
        give_up_s: float = 10.0,
    ) -> None:
        self._store = store
        self._directory = directory
        self._acknowledge = acknowledge
        self._max_rows = max_rows
        self._max_age_s = max_age_s
        self._queue_size = queue_size
        self._limits = limits
        self._loads = loads
        self._process = process
        self._feed = feed
        self._live_interval_s = live_interval_s
        self._give_up_s = give_up_s
        self._stopping = asyncio.Event()
        self._stop_asked = float("inf")
        self._inbox: deque[tuple[list[Message], int, int]] = deque()
        self._to_write: asyncio.Queue[tuple[list[_Part], Columns] | None] = asyncio.Queue(1)
        self._inbox_messages = 0
        self._arrived = asyncio.Event()
        self._unknown_checked: dict[str, float] = {}
        self._streams: dict[StreamKey, int] = {}
        self._live = LiveState()
        self._live_flushed = time.monotonic()
        self._sites_loaded_at = float("-inf")
        self.sites: dict[str, str] = {}
        self.metrics = metrics or IngestMetrics()
        self.stats: PipelineStats = self.metrics.stats
        self.drained = asyncio.Event()
        self.last_telemetry = float("-inf")  # monotonic time of the last telemetry message
        self.writing_blocked = False  # true while a write keeps failing
        self.on_room: Callable[[], None] = lambda: None

    # intake --------------------------------------------------------------------------------

    def deliver(self, messages: list[Message], generation: int) -> bool:
        """Take messages from the consumer; returns False when the consumer should pause."""
        self._inbox.append((messages, generation, time.time_ns() // 1_000))
        self._inbox_messages += len(messages)
        self._arrived.set()
        return self._inbox_messages < self._queue_size

    @property
    def queued(self) -> int:
        """Messages received and not yet taken into a batch."""
        return self._inbox_messages

    async def refresh_sites(self, *, min_age_s: float = 0.0) -> None:
        """Reload the device registry unless it was loaded less than ``min_age_s`` ago."""
        if time.monotonic() - self._sites_loaded_at < min_age_s:
            return
        try:
            sites = await self._directory.all()
        except Exception as exc:  # keep the registry we have; devices are looked up one by one
            log.warning(
                "cannot reload the device registry (%s); keeping %d devices", exc, len(self.sites)
            )
            return
        moved = {d for d, site in self.sites.items() if sites.get(d, site) != site}
        if moved:  # their streams are looked up again, and placed in their new site's partition
            self._streams = {key: i for key, i in self._streams.items() if key[0] not in moved}
        self.sites = sites
        self._sites_loaded_at = time.monotonic()
        self._unknown_checked.clear()

    # the loop ------------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event, registry_refresh_s: float = 30.0) -> None:
        """Process messages until ``stopping`` is set and nothing is left; then ``drained``."""
        self._stopping = stopping
        await self.refresh_sites()
        writer = asyncio.create_task(self._writer(), name="pipeline-writer")
        try:
            await self._loop(stopping, registry_refresh_s, writer)
            await self._hand_over(None, writer)
            await writer
        except _GivingUpError as exc:
            log.warning(
                "stopped with %d messages unwritten (%s); the broker keeps them for the next start",
                self._inbox_messages,
                exc.__cause__,
            )
            self._inbox.clear()
            self._inbox_messages = 0
        else:
            await self._flush_live()
        finally:
            writer.cancel()
        self.drained.set()

    async def _writer(self) -> None:
        """Write batches one after another, so acknowledgements leave in arrival order."""
        while (batch := await self._to_write.get()) is not None:
            await self._write(*batch)

    async def _hand_over(
        self, batch: tuple[list[_Part], Columns] | None, writer: asyncio.Task[None]
    ) -> None:
        """Queue a batch for the writer; the next one is validated meanwhile (one may wait)."""
        put = asyncio.ensure_future(self._to_write.put(batch))
        done, _ = await asyncio.wait({put, writer}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:
            put.cancel()
            writer.result()  # the writer ended: raise why (giving up on a stop)
            raise _GivingUpError("the writer stopped")

    async def _loop(
        self, stopping: asyncio.Event, registry_refresh_s: float, writer: asyncio.Task[None]
    ) -> None:
        pending = _Pending()
        while True:
            if stopping.is_set() and self._stop_asked == float("inf"):
                self._stop_asked = time.monotonic()
            if stopping.is_set() and not self._inbox and not pending.parts:
                break
            if not self._inbox and not stopping.is_set():
                timeout = 0.5
                if pending.parts:
                    timeout = max(0.0, pending.started + self._max_age_s - time.monotonic())
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout)
                except TimeoutError:
                    await self.refresh_sites(min_age_s=registry_refresh_s)
            await self._take_inbox(pending)
            if self._inbox_messages < self._queue_size // 2:
                self.on_room()
            if pending.parts and (
                len(pending.columns) >= self._max_rows
                or time.monotonic() - pending.started >= self._max_age_s
                or stopping.is_set()
            ):
                await self._hand_over((pending.parts, pending.columns), writer)
                pending = _Pending()
            if time.monotonic() - self._live_flushed >= self._live_interval_s:
                await self._flush_live()

    async def _take_inbox(self, pending: _Pending) -> None:
        """Validate waiting messages into ``pending`` until it is full or nothing waits."""
        while self._inbox and len(pending.columns) < self._max_rows:
            messages, generation, received_us = self._inbox.popleft()
            if not pending.parts:
                pending.started = time.monotonic()
            for taken, message in enumerate(messages, 1):
                self._inbox_messages -= 1
                pending.parts.append(
                    await self._part(message, generation, received_us, pending.columns)
                )
                if len(pending.columns) >= self._max_rows and taken < len(messages):
                    # The batch is full: the rest of this run waits for the next one.
                    self._inbox.appendleft((messages[taken:], generation, received_us))
                    break

    # one message ---------------------------------------------------------------------------

    async def _part(
        self, message: Message, generation: int, received_us: int, columns: Columns
    ) -> _Part:
        self.stats.received += 1
        part = _Part(
            (generation, message.packet_id, message.qos),
            message.topic,
            message.payload,
            received_us,
        )
        part.start = part.stop = len(columns)
        if message.oversize:
            _reject(part, _oversized(message))
            return part
        if message.topic.endswith("/status"):
            self._add_status(part, message)
            return part
        self.last_telemetry = time.monotonic()
        verdict = self._check(message, received_us)
        if (
            isinstance(verdict, Rejection)
            and verdict.reason == IngestReason.UNKNOWN_DEVICE
            and verdict.device is not None
            and await self._look_up(verdict.device)  # registered since the last load?
        ):
            verdict = self._check(message, received_us)
        if isinstance(verdict, Rejection):
            _reject(part, verdict)
            return part
        device = verdict.where.device
        streams = self._streams
        ids = [streams.get((device, sensor, metric)) for _, sensor, metric, _, _ in verdict.rows]
        if None in ids:
            await self._resolve(device, verdict.where.site, verdict.rows)
            ids = [streams[(device, sensor, metric)] for _, sensor, metric, _, _ in verdict.rows]
        append = columns.append
        for stream_id, (_, _, _, value, ts) in zip(ids, verdict.rows, strict=True):
            append(stream_id, ts, value)  # type: ignore[arg-type]  # resolved above
        part.stop = len(columns)
        part.seen = (device, received_us, verdict.envelope.seq)
        part.sent_at_us = int(verdict.envelope.sent_at.timestamp() * 1e6)
        for rejection in verdict.rejections:
            _reject(part, rejection)
        return part

    def _check(self, message: Message, received_us: int) -> Checked | Rejection:
        return check_telemetry(
            message.topic,
            message.payload,
            sites=self.sites,
            now_us=received_us,
            limits=self._limits,
            loads=self._loads,
        )

    async def _resolve(
        self, device: str, site: str, rows: Sequence[tuple[int, str, str, float, int]]
    ) -> None:
        wanted = {
            (device, sensor, metric): METRICS[metric].unit
            for _, sensor, metric, _, _ in rows
            if (device, sensor, metric) not in self._streams
        }
        backoff = Backoff(initial=0.2, maximum=10.0)
        while True:
            try:
                found = await self._store.streams(wanted)
                self._streams.update(found)
                if self._feed is not None:
                    self._feed.assign(found.values(), site)
                return
            except Exception as exc:  # database trouble: wait, never drop the message
                await self._retry_later(exc, backoff, "cannot register new streams")

    async def _look_up(self, device: str, *, every_s: float = 5.0) -> bool:
        """Whether ``device`` has been registered since the last load (asked at most every 5 s)."""
        now = time.monotonic()
        if now - self._unknown_checked.get(device, float("-inf")) < every_s:
            return False
        self._unknown_checked[device] = now
        try:
            site = await self._directory.one(device)
        except Exception as exc:  # treated as unknown this time; asked again in 5 s
            log.warning("cannot look up device %s: %s", device, exc)
            return False
        if site is None:
            return False
        self.sites[device] = site
        return True

    def _add_status(self, part: _Part, message: Message) -> None:
        try:
            where = parse_topic(message.topic)
            status = decode_status(message.payload, loads=self._loads)
        except ContractError as exc:
            _reject(part, Rejection(message.topic, None, exc.reason, exc.detail, message.payload))
            return
        if status.device != where.device:
            detail = f"status of {status.device!r} published on {where.device!r}'s topic"
            _reject(
                part,
                Rejection(
                    message.topic,
                    where.device,
                    IngestReason.DEVICE_MISMATCH,
                    detail,
                    message.payload,
                ),
            )
            return
        if self.sites.get(where.device) == where.site:
            part.status = (where.device, part.received_us, status)
        else:
            # Retained statuses of unregistered or moved devices arrive on every subscribe;
            # recording them as rejections each time would bury the real ones.
            self.stats.statuses_ignored += 1
            log.debug("ignored the status of unregistered %s at %s", where.device, where.site)

    async def _retry_later(self, exc: Exception, backoff: Backoff, what: str) -> None:
        """Wait out database trouble; give up once a stop has waited longer than allowed."""
        self.writing_blocked = True
        if self._stopping.is_set() and time.monotonic() - self._stop_asked > self._give_up_s:
            raise _GivingUpError from exc
        delay = backoff.next_delay()
        log.warning("%s (%s); retrying in %.1fs", what, exc, delay)
        await asyncio.sleep(delay)

    # writing -------------------------------------------------------------------------------

    def _batch(self, parts: Sequence[_Part], columns: Columns) -> WriteBatch:
        batch = _batch(parts, columns)
        if self._feed is not None and len(columns):
            batch.partitions = self._feed.of(columns.arrays().stream_ids)
        return batch

    async def _write(self, parts: Sequence[_Part], columns: Columns) -> None:
        batch = self._batch(parts, columns)
        backoff = Backoff(initial=0.2, maximum=10.0)
        started = time.perf_counter()
        while True:
            try:
                result = await self._store.write(batch)
                self.writing_blocked = False
                break
            except _REFUSED as exc:
                log.error("the database refused a batch (%s); writing its messages one by one", exc)
                await self._write_one_by_one(parts, columns)
                return
            except Exception as exc:  # outage or unknown: hold the batch, never drop or mark it
                self.stats.write_retries += 1
                await self._retry_later(exc, backoff, "database write failed")
        elapsed = time.perf_counter() - started
        self.stats.write_seconds += elapsed
        self.metrics.write_seconds.observe(elapsed)
        self._committed(parts, batch, result)

    async def _write_one_by_one(self, parts: Sequence[_Part], columns: Columns) -> None:
        for part in parts:
            own = columns.slice(part.start, part.stop)
            part.start, part.stop = 0, len(own)
            batch = self._batch([part], own)
            try:
                result = await self._store.write(batch)
            except _REFUSED as exc:
                detail = f"the database refused it: {exc}"[:300]
                device = part.seen[0] if part.seen else None
                refused = _Part(part.token, part.topic, part.payload, part.received_us)
                _reject(refused, Rejection(part.topic, device, STORAGE_ERROR, detail, part.payload))
                await self._write([refused], Columns())
                continue
            self._committed([part], batch, result)

    def _committed(self, parts: Sequence[_Part], batch: WriteBatch, result: WriteResult) -> None:
        stats = self.stats
        stats.batches += 1
        stats.readings_stored += result.inserted
        stats.duplicates += result.duplicates
        stats.statuses += len(batch.statuses)
        for part in parts:
            if part.seen is not None:
                stats.messages_stored += 1
                device, at, seq = part.seen
                self._live.seen[device] = (at, seq)
        for rejection in batch.rejections:
            reason = str(rejection.reason)
            stats.rejected_by_reason[reason] += 1
            scope = "message" if rejection.reading_index is None else "reading"
            stats.rejected_by_scope[reason, scope] += 1
            if scope == "message":
                stats.rejected_messages += 1
            else:
                stats.rejected_readings += 1
        if len(batch.readings):
            readings = batch.readings.arrays()
            self._live.readings.append(readings)
            started = time.perf_counter()
            try:
                self._process(readings)
            except Exception:  # detection must never stop ingest
                log.exception("detection failed on a batch of %d readings", len(readings))
            spent = time.perf_counter() - started
            stats.processing_seconds += spent
            self.metrics.processing_seconds.observe(spent)
        self._observe(parts, batch, result)
        self._acknowledge([part.token for part in parts])

    def _observe(self, parts: Sequence[_Part], batch: WriteBatch, result: WriteResult) -> None:
        metrics = self.metrics
        metrics.batch_rows.observe(len(batch.readings))
        metrics.queue_depth.set(self._inbox_messages)
        now_us = time.time_ns() // 1_000
        observe = metrics.commit_latency.observe
        for part in parts:
            observe((now_us - part.received_us) / 1e6)
        ages = sorted(now_us - p.sent_at_us for p in parts if p.sent_at_us is not None)
        if ages:
            metrics.lag.set(ages[len(ages) // 2] / 1e6)

    async def _flush_live(self) -> None:
        live, self._live = self._live, LiveState()
        self._live_flushed = time.monotonic()
        if not live:
            return
        try:
            await self._store.flush_live(live)
        except Exception as exc:  # derived data: keep it for the next flush
            log.warning("could not refresh latest values (%s); will retry", exc)
            self._live.readings[:0] = live.readings
            for device, seen in live.seen.items():
                self._live.seen.setdefault(device, seen)


class _GivingUpError(IngestError):
    """Stopping while the database is unreachable: leave the rest with the broker."""


def _oversized(message: Message) -> Rejection:
    """The rejection of an MQTT 3.1.1 message too large to read (its payload was skipped)."""
    try:
        device: str | None = parse_topic(message.topic).device
    except ContractError:
        device = None
    detail = f"MQTT packet of {message.oversize} bytes exceeds max_packet_bytes; read past unstored"
    return Rejection(message.topic, device, Reason.OVERSIZED, detail, b"")


def _reject(part: _Part, rejection: Rejection) -> None:
    part.rejections.append(rejection)
    where = rejection.device or rejection.topic[:100]
    what = "message" if rejection.reading_index is None else f"reading {rejection.reading_index}"
    log.info("rejected %s from %s: %s: %s", what, where, rejection.reason, rejection.detail)
