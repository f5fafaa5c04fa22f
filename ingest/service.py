"""The ingest service: consumer -> pipeline -> database, as named tasks with a graceful stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import suppress

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ingest.config import IngestConfig
from ingest.consumer import Consumer
from ingest.pipeline import Pipeline, PipelineStats, Processor
from ingest.registry import PostgresDirectory
from ingest.schema import migrate
from ingest.validate import Limits, fast_loads
from ingest.writer import PostgresStore, prepare_connection

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[tuple[object, ...]]]


def open_pool(database_url: str, *, max_size: int = 4) -> Pool:
    """A pool for ingest's writes; open it with ``async with`` or :meth:`open`."""
    return AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        configure=prepare_connection,
        open=False,
        name="ingest",
    )


class IngestService:
    """One ingest worker.

    Args:
        config: Validated settings.
        process: Detection hook for committed rows.
    """

    def __init__(self, config: IngestConfig, *, process: Processor | None = None) -> None:
        self.config = config
        self._process = process
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()
        self.pipeline: Pipeline | None = None
        self.consumer: Consumer | None = None

    def stats(self) -> PipelineStats:
        """The pipeline's counters (zeros before start)."""
        return self.pipeline.stats if self.pipeline is not None else PipelineStats()

    def stop(self) -> None:
        """Ask the service to finish: stop receiving, write and acknowledge what it holds."""
        self.stopping.set()

    async def run(self) -> None:
        """Run until :meth:`stop`; migrations first when configured."""
        config = self.config
        if config.migrate:
            applied = await asyncio.to_thread(
                migrate, config.database_url, timescaledb=config.timescaledb
            )
            if applied:
                log.info("schema migrated: %s", ", ".join(f"{v:03d}" for v in applied))
        async with open_pool(config.database_url) as pool:
            await pool.wait(timeout=30)
            store = PostgresStore(pool)
            kwargs = {} if self._process is None else {"process": self._process}
            self.pipeline = Pipeline(
                store,
                PostgresDirectory(pool),
                max_rows=config.batch_max_rows,
                max_age_s=config.batch_max_age_s,
                queue_size=config.queue_max_messages,
                limits=Limits.from_seconds(config.max_future_s, config.max_past_s),
                loads=fast_loads,
                **kwargs,
            )
            self.consumer = Consumer(config, self.pipeline.deliver)
            log.info("ingest starting: %r", config)
            self.started.set()
            async with asyncio.TaskGroup() as group:
                group.create_task(self.pipeline.run(self.stopping), name="pipeline")
                group.create_task(
                    self.consumer.run(self.stopping, self.pipeline.drained), name="consumer"
                )
                group.create_task(self._report(), name="report")
        log.info("ingest stopped: %s", _summary(self.stats()))

    async def _report(self, every_s: float = 60.0) -> None:
        while not self.stopping.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every_s)
            if not self.stopping.is_set():
                log.info("%s", _summary(self.stats()))


def _summary(stats: PipelineStats) -> str:
    reasons: Sequence[tuple[str, int]] = stats.rejected_by_reason.most_common(5)
    return (
        f"received {stats.received}, stored {stats.readings_stored} readings in "
        f"{stats.batches} batches, {stats.duplicates} duplicates, rejected "
        f"{stats.rejected_messages} messages and {stats.rejected_readings} readings "
        f"{dict(reasons)}, write retries {stats.write_retries}"
    )
