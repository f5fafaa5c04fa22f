"""The ingest service: consumer -> pipeline -> database, as named tasks with a graceful stop."""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from edge.backoff import Backoff
from ingest import retention, rollups
from ingest.alert_publisher import AlertPublisher, BrokerAccount
from ingest.config import IngestConfig
from ingest.consumer import Consumer
from ingest.health import HealthServer
from ingest.metrics import IngestMetrics, PipelineStats
from ingest.mqtt import Message
from ingest.pipeline import Pipeline
from ingest.registry import PostgresDirectory
from ingest.schema import migrate
from ingest.validate import Limits, fast_loads
from ingest.writer import PostgresStore, prepare_connection
from processing.config import DetectionSettings
from processing.feed import PartitionMap
from processing.hook import BatchHook, no_detection
from processing.partitioned import PartitionedDetection
from processing.service import DetectionOptions, DetectionService
from processing.stage import DetectionStage

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[tuple[object, ...]]]

# Agents repeat their retained status every minute; ten minutes of silence from the status
# topic means the "online" on record is no longer news.
_ONLINE_DEVICES = (
    "SELECT count(*) FROM devices"
    " WHERE state = 'online' AND state_at > now() - interval '10 minutes'"
)


def open_pool(database_url: str, *, max_size: int = 4) -> Pool:
    """A pool for ingest's writes; open it with ``async with`` or :meth:`open`."""
    return AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        configure=prepare_connection,
        # A connection to a primary that has since failed over is found out before a batch is
        # written on it: the pool replaces it, through the URL's hosts, with one that can write.
        check=AsyncConnectionPool.check_connection,
        open=False,
        name="ingest",
    )


class IngestService:
    """One ingest worker.

    Args:
        config: Validated settings.
        process: Detection hook for committed rows.
    """

    def __init__(self, config: IngestConfig, *, process: BatchHook | None = None) -> None:
        self.config = config
        # Detection reads the committed batches back from the feed, for the partitions this
        # worker owns; a hook given here instead runs inline on this worker's batches only.
        self.detection: PartitionedDetection | None = None
        if process is None and config.detection:
            self.detection = detection_for(config)
        self._process = process or no_detection
        self.metrics = IngestMetrics()
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()
        self.pipeline: Pipeline | None = None
        self.consumers: list[Consumer] = []  # one per broker of the city, the first first
        self.health: HealthServer | None = None
        self.stalled = False
        self.down: dict[str, str] = {}  # supervised tasks not running now, and why

    def _deliver(self, messages: list[Message], generation: int) -> bool:
        assert self.pipeline is not None
        return self.pipeline.deliver(messages, generation)

    @property
    def consumer(self) -> Consumer | None:
        """The consumer of the first broker (``broker_host``)."""
        return self.consumers[0] if self.consumers else None

    def _ack(self, tokens: list[tuple[int, int, int]]) -> None:
        # Generations are unique across consumers: each acknowledges only its own connection's.
        for consumer in self.consumers:
            consumer.ack(tokens)

    def _resume(self) -> None:
        for consumer in self.consumers:
            consumer.resume()

    def stats(self) -> PipelineStats:
        """The pipeline's counters (zeros before start)."""
        return self.pipeline.stats if self.pipeline is not None else PipelineStats()

    def stop(self) -> None:
        """Ask the service to finish: stop receiving, write and acknowledge what it holds."""
        self.stopping.set()

    def readiness(self) -> tuple[bool, str]:
        """Whether this worker is doing its job, and if not, why."""
        if self.down:
            return False, "; ".join(f"{task} {why}" for task, why in sorted(self.down.items()))
        stall = "no telemetry although devices report themselves online"
        if not any(consumer.connected.is_set() for consumer in self.consumers):
            if self.stalled:  # the watchdog reconnects on a stall: the stall is the reason
                return False, f"{stall}; reconnecting to the broker"
            return False, "not connected to the broker"
        if self.pipeline is not None and self.pipeline.writing_blocked:
            return False, "database writes are failing; retrying"
        if self.stalled:
            return False, stall
        return True, "ready"

    async def run(self) -> None:
        """Run until :meth:`stop`; migrations first when configured."""
        config = self.config
        if config.migrate:
            applied = await asyncio.to_thread(
                migrate,
                config.database_url,
                timescaledb=config.timescaledb,
                city_zone=config.city_timezone,
            )
            if applied:
                log.info("schema migrated: %s", ", ".join(f"{v:03d}" for v in applied))
        async with open_pool(config.database_url) as pool:
            await pool.wait(timeout=30)
            connected = self.metrics.broker_connected
            generations = itertools.count(1)

            def count_connected(up: bool) -> None:
                connected.set(sum(c.connected.is_set() for c in self.consumers))

            self.consumers = [
                Consumer(
                    config,
                    self._deliver,
                    on_connection=count_connected,
                    address=address,
                    generations=generations,
                )
                for address in config.brokers()
            ]
            self.pipeline = Pipeline(
                PostgresStore(pool),
                PostgresDirectory(pool),
                self._ack,
                max_rows=config.batch_max_rows,
                max_age_s=config.batch_max_age_s,
                queue_size=config.queue_max_messages,
                limits=Limits.from_seconds(config.max_future_s, config.max_past_s),
                loads=fast_loads,
                process=self._process,
                feed=PartitionMap() if self.detection is not None else None,
                metrics=self.metrics,
            )
            self.pipeline.on_room = self._resume
            if config.health_port >= 0:
                self.health = HealthServer(self.metrics.registry, self.readiness)
                await self.health.start(config.health_host, config.health_port)
            log.info("ingest starting: %r", config)
            self.started.set()
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self.pipeline.run(self.stopping), name="pipeline")
                    drained = self.pipeline.drained
                    for index, consumer in enumerate(self.consumers):
                        # The first broker's task is "consumer"; others are named by address.
                        host, port = consumer.address
                        name = "consumer" if index == 0 else f"consumer {host}:{port}"
                        group.create_task(
                            self._supervised(name, _runner(consumer, self.stopping, drained)),
                            name=name,
                        )
                    group.create_task(self._watchdog(pool), name="watchdog")
                    group.create_task(self._report(), name="report")
                    if config.rollup_every_s > 0:
                        group.create_task(self._rollups(pool), name="rollups")
                    if config.retention_every_s > 0:
                        group.create_task(self._retention(pool), name="retention")
                    if self.detection is not None:
                        # Runs until the pipeline has drained, so the last batch's alerts land.
                        detection = self.detection
                        group.create_task(
                            self._supervised("detection", lambda: detection.run(pool, drained)),
                            name="detection",
                        )
            finally:
                if self.health is not None:
                    await self.health.stop()
        log.info("ingest stopped: %s", _summary(self.stats()))

    async def _supervised(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a task that must last as long as the service, restarting it if it ends early.

        Whatever ends it (an exception, a cancellation that was not the service's, or a plain
        return) is logged, shown on /readyz and counted, and the task starts again with backoff:
        ingest never carries on without its consumer or its alert publisher.
        """
        backoff = Backoff(initial=0.5, maximum=30.0)
        while True:
            try:
                await run()
                if self.stopping.is_set():
                    return
                why = "stopped"
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the service itself is being cancelled
                why = "was cancelled"
            except Exception as exc:
                log.exception("%s failed", name)
                if self.stopping.is_set():
                    return
                why = f"failed: {exc}"
            self.down[name] = why
            self.metrics.task_restarts.labels(name).inc()
            delay = backoff.next_delay()
            log.error("%s %s while ingest runs; restarting it in %.1fs", name, why, delay)
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            del self.down[name]  # once stopping, the run above finishes its own part and returns

    async def _watchdog(self, pool: Pool) -> None:
        """Report (and reconnect) when telemetry stops while devices say they are online."""
        pipeline, consumers = self.pipeline, self.consumers
        if pipeline is None or not consumers:
            return
        every_s = min(10.0, self.config.stall_after_s / 2)
        quiet_since = time.monotonic()
        while not self.stopping.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every_s)
            if self.stopping.is_set():
                return
            quiet_s = time.monotonic() - max(pipeline.last_telemetry, quiet_since)
            up = [consumer for consumer in consumers if consumer.connected.is_set()]
            if quiet_s < self.config.stall_after_s or not up:
                self._set_stalled(False)
                continue
            try:
                async with pool.connection() as conn:
                    cursor = await conn.execute(_ONLINE_DEVICES)
                    row = await cursor.fetchone()
            except Exception as exc:  # the pipeline reports database trouble on its own
                log.debug("watchdog could not count online devices: %s", exc)
                continue
            online = int(str(row[0])) if row else 0
            if online == 0:
                self._set_stalled(False)
                continue
            log.warning(
                "no telemetry for %.0fs although %d devices report themselves online; "
                "reconnecting to the broker",
                quiet_s,
                online,
            )
            self._set_stalled(True)
            quiet_since = time.monotonic()
            for consumer in up:
                consumer.reconnect()

    async def _rollups(self, pool: Pool) -> None:
        """Bring the rollups up to date every ``rollup_every_s``, and once more at the end."""
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.config.rollup_every_s)
            if self.stopping.is_set() and self.pipeline is not None:
                await self.pipeline.drained.wait()
            try:
                async with pool.connection() as conn:
                    await rollups.refresh_all(conn, settle_s=self.config.rollup_settle_s)
            except Exception as exc:  # the dirty minutes stay marked: the next round does them
                log.warning("rollup refresh failed, will retry: %s", exc)
            if self.stopping.is_set():
                return

    async def _retention(self, pool: Pool) -> None:
        """Apply the retention policy at start and every ``retention_every_s``."""
        policy = self.config.retention()
        while not self.stopping.is_set():
            try:
                async with pool.connection() as conn:
                    dropped = await retention.apply(conn, policy, now=datetime.now(UTC))
                if dropped.raw_chunks or dropped.raw_rows or any(dropped.rollup_rows.values()):
                    log.info("retention: %s", dropped)
            except Exception as exc:  # nothing is lost by trying again later
                log.warning("retention failed, will retry: %s", exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.config.retention_every_s)

    def _set_stalled(self, stalled: bool) -> None:
        self.stalled = stalled
        self.metrics.stalled.set(int(stalled))

    async def _report(self, every_s: float = 60.0) -> None:
        while not self.stopping.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every_s)
            if not self.stopping.is_set():
                log.info("%s", _summary(self.stats()))


def _runner(
    consumer: Consumer, stopping: asyncio.Event, drained: asyncio.Event
) -> Callable[[], Awaitable[None]]:
    """A fresh run of ``consumer`` each time it is called (for ``_supervised``)."""
    return lambda: consumer.run(stopping, drained)


def detection_for(config: IngestConfig) -> PartitionedDetection:
    """The detection ``config`` asks for, publishing with ingest's broker account."""
    publisher = None
    if config.alert_topic_prefix:
        tls = (
            ssl.create_default_context(cafile=config.broker_ca_file)
            if config.broker_ca_file
            else None
        )
        account = BrokerAccount(
            config.broker_host,
            config.broker_port,
            f"{config.client_id}-alerts",
            config.broker_username,
            config.broker_password,
            tls,
            5 if config.mqtt_protocol == "5" else 4,
            fallbacks=config.brokers()[1:],
        )
        publisher = AlertPublisher(account, config.alert_topic_prefix)
    zone = ZoneInfo(config.city_timezone)
    settings = DetectionSettings(warmup_s=config.detection_warmup_s)
    options = DetectionOptions(
        checkpoint_every_s=config.checkpoint_every_s,
        per_site_per_minute=config.alerts_per_site_per_minute,
        zone=zone,
        clock=config.detection_clock,
        readings_window_s=config.detection_readings_window_s,
    )

    def one_partition() -> DetectionService:
        stage = DetectionStage(settings, scheme=config.aqi_scheme, zone=zone)
        return DetectionService(stage, options=options)

    return PartitionedDetection(
        one_partition, options=options, publisher=publisher, lease_s=config.detection_lease_s
    )


def _summary(stats: PipelineStats) -> str:
    reasons = dict(stats.rejected_by_reason.most_common(5))
    return (
        f"received {stats.received}, stored {stats.readings_stored} readings in "
        f"{stats.batches} batches, {stats.duplicates} duplicates, rejected "
        f"{stats.rejected_messages} messages and {stats.rejected_readings} readings "
        f"{reasons}, write retries {stats.write_retries}, "
        f"detection {stats.processing_seconds:.2f}s"
    )
