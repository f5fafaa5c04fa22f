"""Run the real ingest service inside a test, against the session's broker and a test database."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

from ingest.config import IngestConfig
from ingest.service import IngestService
from tests.services.handles import BrokerAddress


def ingest_config(broker: BrokerAddress, dsn: str, **overrides: object) -> IngestConfig:
    """Settings for a test worker: its own client id, short sessions, quick flushes."""
    config = IngestConfig(
        database_url=dsn,
        broker_host=broker.host,
        broker_port=broker.port,
        client_id=f"ingest-test-{secrets.token_hex(4)}",
        session_expiry_s=120,
        batch_max_age_s=0.1,
        migrate=False,
        health_port=0,
        detection_warmup_s=0.0,  # tests feed minutes, not days, of history
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def running_ingest(config: IngestConfig) -> AsyncIterator[IngestService]:
    """Start the service, wait until it is subscribed, and stop it gracefully on exit."""
    service = IngestService(config)
    task = asyncio.create_task(service.run(), name="ingest-under-test")
    try:
        await asyncio.wait_for(service.started.wait(), 30)
        assert service.consumer is not None
        await asyncio.wait_for(service.consumer.connected.wait(), 30)
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)


async def eventually(
    check: Callable[[], bool], timeout_s: float = 30.0, every_s: float = 0.1
) -> bool:
    """Poll ``check`` (in a thread: it may query the database) until true or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(every_s)
    return await asyncio.to_thread(check)
