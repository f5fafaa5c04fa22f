"""From received messages to committed batches: validate, batch by size or age, write, then ack.

One task owns the pipeline, so messages are written and acknowledged in arrival order. A failed
write is retried with backoff while the batch is held; the bounded queue in front of it then
fills, the consumer stops reading, and the broker's in-flight window stops the flow. A write the
database refuses because of the data itself is retried message by message, so the one message at
fault is stored as a rejection and everything else is kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from edge.contract import ContractError, JsonLoads, decode_status
from edge.topics import parse_topic
from ingest.backoff import Backoff
from ingest.consumer import Inbound
from ingest.metrics import IngestMetrics
from ingest.registry import SiteDirectory
from ingest.validate import Accepted, IngestReason, Limits, Rejection, validate_telemetry
from ingest.writer import Row, Store, WriteBatch, WriteResult
from processing.hook import no_detection

log = logging.getLogger(__name__)

Processor = Callable[[Sequence[Row]], None]  # processing.hook.BatchHook, seen from ingest

STORAGE_ERROR = "storage_error"
# Errors about the data itself: retrying the same batch cannot succeed.
_REFUSED = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError)


@dataclass(slots=True)
class PipelineStats:
    """Counters since start, for logs, metrics and tests. Everything counted is committed."""

    received: int = 0
    messages_stored: int = 0
    readings_stored: int = 0
    duplicates: int = 0
    rejected_messages: int = 0
    rejected_readings: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    statuses: int = 0
    statuses_ignored: int = 0
    batches: int = 0
    write_retries: int = 0
    write_seconds: float = 0.0
    processing_seconds: float = 0.0


@dataclass(slots=True)
class _Part:
    """What one message contributes to a write."""

    message: Inbound
    batch: WriteBatch
    sent_at: datetime | None = None


@dataclass(slots=True)
class _Pending:
    """Messages gathered for the next write, in arrival order."""

    parts: list[_Part] = field(default_factory=list)
    rows: int = 0
    started: float = 0.0


def _merge(parts: Sequence[_Part]) -> WriteBatch:
    merged = WriteBatch()
    for part in parts:
        merged.rows.extend(part.batch.rows)
        merged.rejections.extend(part.batch.rejections)
        merged.seen.update(part.batch.seen)
        merged.statuses.update(part.batch.statuses)
    return merged


class Pipeline:
    """Validates and writes messages; acknowledges each one after its batch commits.

    Args:
        store: Where batches are written.
        directory: Registered devices and their sites.
        max_rows: Write when this many readings are waiting...
        max_age_s: ...or when the oldest waiting message is this old.
        queue_size: Messages accepted ahead of the writer, at most.
        limits: Timestamp plausibility window.
        loads: JSON parser.
        process: Detection hook, called with every committed batch's rows.
        metrics: Where to count for Prometheus; a private registry by default.
    """

    def __init__(
        self,
        store: Store,
        directory: SiteDirectory,
        *,
        max_rows: int = 5_000,
        max_age_s: float = 0.25,
        queue_size: int = 10_000,
        limits: Limits = Limits(),  # noqa: B008  # frozen, so sharing the default is safe
        loads: JsonLoads = json.loads,
        process: Processor = no_detection,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self._store = store
        self._directory = directory
        self._unknown_checked: dict[str, float] = {}
        self._max_rows = max_rows
        self._max_age_s = max_age_s
        self._limits = limits
        self._loads = loads
        self._process = process
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=queue_size)
        self.sites: dict[str, str] = {}
        self._sites_loaded_at = float("-inf")
        self.stats = PipelineStats()
        self.metrics = metrics or IngestMetrics()
        self.drained = asyncio.Event()
        self.last_telemetry = float("-inf")  # monotonic time of the last telemetry message
        self.writing_blocked = False  # true while a write keeps failing

    async def deliver(self, message: Inbound) -> None:
        """Accept a message from the consumer, waiting while the queue is full."""
        await self.queue.put(message)

    async def refresh_sites(self, *, min_age_s: float = 0.0) -> None:
        """Reload the device registry unless it was loaded less than ``min_age_s`` ago."""
        if time.monotonic() - self._sites_loaded_at < min_age_s:
            return
        self.sites = await self._directory.all()
        self._sites_loaded_at = time.monotonic()
        self._unknown_checked.clear()

    async def _look_up(self, device: str, *, every_s: float = 5.0) -> bool:
        """Whether ``device`` has been registered since the last load (asked at most every 5 s)."""
        now = time.monotonic()
        if now - self._unknown_checked.get(device, float("-inf")) < every_s:
            return False
        self._unknown_checked[device] = now
        site = await self._directory.one(device)
        if site is None:
            return False
        self.sites[device] = site
        return True

    async def run(self, stopping: asyncio.Event, registry_refresh_s: float = 30.0) -> None:
        """Process messages until ``stopping`` is set and the queue is empty; then ``drained``."""
        await self.refresh_sites()
        pending = _Pending()
        while True:
            finishing = stopping.is_set() and self.queue.empty()
            if finishing and not pending.parts:
                break
            timeout = 0.5
            if pending.parts:
                timeout = max(0.0, pending.started + self._max_age_s - time.monotonic())
            message: Inbound | None = None
            if not finishing:
                try:
                    message = await asyncio.wait_for(self.queue.get(), timeout=timeout)
                except TimeoutError:
                    await self.refresh_sites(min_age_s=registry_refresh_s)
            if message is not None:
                if not pending.parts:
                    pending.started = time.monotonic()
                part = await self._part(message)
                pending.parts.append(part)
                pending.rows += len(part.batch.rows)
            if pending.parts and (
                finishing
                or pending.rows >= self._max_rows
                or time.monotonic() - pending.started >= self._max_age_s
            ):
                await self._write(pending.parts)
                pending = _Pending()
        self.drained.set()

    async def _part(self, message: Inbound) -> _Part:
        self.stats.received += 1
        part = _Part(message, WriteBatch())
        if message.topic.endswith("/status"):
            self._add_status(part.batch, message)
            return part
        self.last_telemetry = time.monotonic()
        verdict = self._validate(message)
        if (
            isinstance(verdict, Rejection)
            and verdict.reason == IngestReason.UNKNOWN_DEVICE
            and verdict.device is not None
            and await self._look_up(verdict.device)  # registered since the last load?
        ):
            verdict = self._validate(message)
        if isinstance(verdict, Rejection):
            _reject(part.batch, verdict)
            return part
        device = verdict.batch.device
        part.sent_at = verdict.batch.sent_at
        part.batch.rows.extend(
            Row(device, r.sensor, r.metric, r.unit, r.ts, r.value) for r in verdict.batch.readings
        )
        part.batch.seen[device] = (message.received_at, verdict.batch.seq)
        for rejection in verdict.rejections:
            _reject(part.batch, rejection)
        return part

    def _validate(self, message: Inbound) -> Accepted | Rejection:
        return validate_telemetry(
            message.topic,
            message.payload,
            sites=self.sites,
            now=message.received_at,
            limits=self._limits,
            loads=self._loads,
        )

    def _add_status(self, batch: WriteBatch, message: Inbound) -> None:
        try:
            where = parse_topic(message.topic)
            status = decode_status(message.payload, loads=self._loads)
        except ContractError as exc:
            _reject(batch, Rejection(message.topic, None, exc.reason, exc.detail, message.payload))
            return
        if status.device != where.device:
            detail = f"status of {status.device!r} published on {where.device!r}'s topic"
            _reject(
                batch,
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
            batch.statuses[where.device] = (message.received_at, status)
        else:
            # Retained statuses of unregistered or moved devices arrive on every subscribe;
            # recording them as rejections each time would bury the real ones.
            self.stats.statuses_ignored += 1
            log.debug("ignored the status of unregistered %s at %s", where.device, where.site)

    async def _write(self, parts: Sequence[_Part]) -> None:
        batch = _merge(parts)
        backoff = Backoff(initial=0.2, maximum=10.0)
        started = time.perf_counter()
        while True:
            try:
                result = await self._store.write(batch)
                self.writing_blocked = False
                break
            except _REFUSED as exc:
                log.error("the database refused a batch (%s); writing its messages one by one", exc)
                await self._write_one_by_one(parts)
                return
            except Exception as exc:  # outage or unknown: hold the batch, never drop or mark it
                self.stats.write_retries += 1
                self.metrics.write_retries.inc()
                self.writing_blocked = True
                delay = backoff.next_delay()
                log.warning("database write failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
        elapsed = time.perf_counter() - started
        self.stats.write_seconds += elapsed
        self.metrics.write_seconds.observe(elapsed)
        self._committed(parts, batch, result)

    async def _write_one_by_one(self, parts: Sequence[_Part]) -> None:
        for part in parts:
            try:
                result = await self._store.write(part.batch)
            except _REFUSED as exc:
                fallback = WriteBatch()
                _reject(
                    fallback,
                    Rejection(
                        part.message.topic,
                        None,
                        STORAGE_ERROR,
                        f"the database refused it: {exc}"[:300],
                        part.message.payload,
                    ),
                )
                await self._write([_Part(part.message, fallback)])
                continue
            self._committed([part], part.batch, result)

    def _committed(self, parts: Sequence[_Part], batch: WriteBatch, result: WriteResult) -> None:
        stats, metrics = self.stats, self.metrics
        stats.batches += 1
        stats.readings_stored += result.inserted
        stats.duplicates += result.duplicates
        stats.messages_stored += len(batch.seen)
        stats.statuses += len(batch.statuses)
        for rejection in batch.rejections:
            reason = str(rejection.reason)
            stats.rejected_by_reason[reason] += 1
            if rejection.reading_index is None:
                stats.rejected_messages += 1
                metrics.rejected.labels(reason, "message").inc()
            else:
                stats.rejected_readings += 1
                metrics.rejected.labels(reason, "reading").inc()
        self._observe(parts, batch, result)
        if batch.rows:
            started = time.perf_counter()
            try:
                self._process(batch.rows)
            except Exception:  # detection must never stop ingest
                log.exception("detection failed on a batch of %d readings", len(batch.rows))
            spent = time.perf_counter() - started
            stats.processing_seconds += spent
            self.metrics.processing_seconds.observe(spent)
        for part in parts:
            part.message.ack()

    def _observe(self, parts: Sequence[_Part], batch: WriteBatch, result: WriteResult) -> None:
        metrics = self.metrics
        metrics.received.inc(len(parts))
        metrics.messages_stored.inc(len(batch.seen))
        metrics.readings_stored.inc(result.inserted)
        metrics.duplicates.inc(result.duplicates)
        metrics.statuses.inc(len(batch.statuses))
        metrics.batch_rows.observe(len(batch.rows))
        metrics.queue_depth.set(self.queue.qsize())
        now = datetime.now(UTC)
        for part in parts:
            metrics.commit_latency.observe((now - part.message.received_at).total_seconds())
        ages = sorted((now - p.sent_at).total_seconds() for p in parts if p.sent_at is not None)
        if ages:
            metrics.lag.set(ages[len(ages) // 2])


def _reject(batch: WriteBatch, rejection: Rejection) -> None:
    batch.rejections.append(rejection)
    where = rejection.device or rejection.topic[:100]
    what = "message" if rejection.reading_index is None else f"reading {rejection.reading_index}"
    log.info("rejected %s from %s: %s: %s", what, where, rejection.reason, rejection.detail)
