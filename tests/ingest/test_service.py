"""The ingest service on a real Mosquitto and real databases."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import psycopg
import pytest

from edge.contract import Status, encode_status
from tests.conftest import BrokerAddress, Database
from tests.ingest.helpers import (
    batch_payload,
    non_numeric_payload,
    publish_all,
    recent,
    register,
    rejection_rows,
    stored_keys,
)
from tests.ingest.running import eventually, ingest_config, running_ingest


async def test_bad_messages_are_rejected_with_reasons_and_the_good_ones_around_them_stored(
    broker: BrokerAddress, database: Database, unique_site: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest")
    device = "aq-0001"
    register(database.dsn, [(device, unique_site)])
    topic = f"city/v1/{unique_site}/{device}/telemetry"
    start = recent()
    wrong_version = batch_payload(device, 3, start).replace(b'"v":1', b'"v":2')
    messages = [
        (topic, batch_payload(device, 1, start - timedelta(minutes=1), 3)),
        (topic, b'{"v": 1, "device": "aq-0001", "seq": 2, "readings": [{'),
        (topic, batch_payload(device, 2, start - timedelta(minutes=2), 3)),
        (topic, wrong_version),
        (topic, batch_payload(device, 4, start - timedelta(minutes=3), 3)),
        (topic, non_numeric_payload(device, 5, start - timedelta(minutes=4))),
        (topic, batch_payload(device, 6, start - timedelta(minutes=5), 3)),
    ]
    async with running_ingest(ingest_config(broker, database.dsn)) as service:
        await asyncio.to_thread(publish_all, broker, messages)
        assert await eventually(lambda: len(rejection_rows(database.dsn)) == 3)
        assert await eventually(lambda: len(stored_keys(database.dsn)) == 4 * 3 + 2)
        stats = service.stats()
    assert rejection_rows(database.dsn) == [
        (device, "malformed_json", None),
        (device, "unsupported_version", None),
        (device, "wrong_type", 1),
    ]
    assert stats.rejected_by_reason == {
        "malformed_json": 1,
        "unsupported_version": 1,
        "wrong_type": 1,
    }
    logged = caplog.text
    for reason in ("malformed_json", "unsupported_version", "wrong_type"):
        assert f": {reason}: " in logged


async def test_status_messages_update_the_device(
    broker: BrokerAddress, timescale_database: Database, unique_site: str
) -> None:
    dsn = timescale_database.dsn
    register(dsn, [("aq-0001", unique_site)])
    status = encode_status(Status("aq-0001", "online", recent(), {"backlog": 4, "software": "1.2"}))
    async with running_ingest(ingest_config(broker, dsn)):
        await asyncio.to_thread(
            publish_all, broker, [(f"city/v1/{unique_site}/aq-0001/status", status)], True
        )

        def updated() -> bool:
            with psycopg.connect(dsn) as conn:
                row = conn.execute("SELECT state, status FROM devices").fetchone()
            return row == ("online", {"backlog": 4, "software": "1.2"})

        assert await eventually(updated)
    # Clear the retained message so later tests do not receive it.
    await asyncio.to_thread(
        publish_all, broker, [(f"city/v1/{unique_site}/aq-0001/status", b"")], True
    )


async def test_messages_published_while_ingest_is_away_are_stored_when_it_returns(
    broker: BrokerAddress, timescale_database: Database, unique_site: str
) -> None:
    dsn = timescale_database.dsn
    register(dsn, [("aq-0001", unique_site)])
    topic = f"city/v1/{unique_site}/aq-0001/telemetry"
    config = ingest_config(broker, dsn)
    start = recent()
    async with running_ingest(config):
        await asyncio.to_thread(publish_all, broker, [(topic, batch_payload("aq-0001", 1, start))])
        assert await eventually(lambda: len(stored_keys(dsn)) == 3)
    # Ingest is stopped; its persistent session makes the broker queue for it.
    later = [
        (topic, batch_payload("aq-0001", i, start - timedelta(minutes=i), 2)) for i in range(2, 12)
    ]
    await asyncio.to_thread(publish_all, broker, later)
    async with running_ingest(config):
        assert await eventually(lambda: len(stored_keys(dsn)) == 3 + 10 * 2)
