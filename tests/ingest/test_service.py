"""The ingest service on a real Mosquitto and real databases."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import psycopg
import pytest

from edge.contract import Status, encode_status
from ingest.config import IngestConfig
from ingest.service import IngestService
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
from tests.services.handles import BrokerAddress, Database
from tests.services.mosquitto import Mosquitto


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


async def test_a_batch_seen_through_two_brokers_is_stored_once_and_acknowledged_on_both(
    broker: BrokerAddress, timescale_database: Database, unique_site: str
) -> None:
    second = Mosquitto()
    second.start()
    try:
        other = BrokerAddress(second.host, second.port)
        dsn = timescale_database.dsn
        register(dsn, [("aq-0001", unique_site)])
        topic = f"city/v1/{unique_site}/aq-0001/telemetry"
        config = ingest_config(broker, dsn, more_brokers=(f"{other.host}:{other.port}",))
        start = recent()
        twice = (topic, batch_payload("aq-0001", 1, start))
        async with running_ingest(config) as service:
            assert await eventually(lambda: service.metrics.broker_connected._value.get() == 2)
            await asyncio.to_thread(publish_all, broker, [twice])
            await asyncio.to_thread(
                publish_all,
                other,
                [twice, (topic, batch_payload("aq-0001", 2, start - timedelta(minutes=2), 2))],
            )
            assert await eventually(lambda: len(stored_keys(dsn)) == 3 + 2)
            assert await eventually(lambda: service.stats().duplicates == 3)
        # Both brokers were acknowledged: neither redelivers to the same worker's session (the
        # shared test broker also carries other tests' messages: count only this device's).
        async with running_ingest(config) as service:
            assert await eventually(lambda: service.metrics.broker_connected._value.get() == 2)
            await asyncio.to_thread(
                publish_all,
                other,
                [(topic, batch_payload("aq-0001", 3, start - timedelta(minutes=4)))],
            )
            assert await eventually(lambda: len(stored_keys(dsn)) == 3 + 2 + 3)
            # Redelivered earlier batches would have come first, on resuming each session.
            assert service.stats().duplicates == 0
        keys = stored_keys(dsn)
        assert len(keys) == len(set(keys))
    finally:
        second.cleanup()


class _SteadyBackoff:
    """Restarts after a fixed 0.3 s, so the test sees each time the task is down."""

    def __init__(self, **_options: float) -> None:
        pass

    def next_delay(self) -> float:
        return 0.3


async def test_a_task_that_must_last_is_restarted_and_shown_not_ready_meanwhile(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ingest.service.Backoff", _SteadyBackoff)
    service = IngestService(IngestConfig(detection=False, health_port=-1))
    runs: list[str] = []
    blocked = asyncio.Event()

    async def consumer_run() -> None:
        runs.append("run")
        if len(runs) == 1:
            raise RuntimeError("a bug in the consumer")
        if len(runs) == 2:
            return  # ends with no error at all: still not allowed while ingest runs
        if len(runs) == 3:
            raise asyncio.CancelledError  # a cancellation that was not the service's
        blocked.set()
        await service.stopping.wait()

    with caplog.at_level(logging.INFO, logger="ingest"):
        task = asyncio.create_task(service._supervised("consumer", consumer_run))
        reasons: set[str] = set()
        for _ in range(500):  # bounded: three restarts of 0.3 s
            if service.down:
                ready, why = service.readiness()
                assert not ready
                reasons.add(why)
            if blocked.is_set():
                break
            await asyncio.sleep(0.01)
        assert blocked.is_set(), runs
        service.stop()
        await asyncio.wait_for(task, 5)
    assert runs == ["run"] * 4
    assert service.down == {}
    assert service.metrics.task_restarts.labels("consumer")._value.get() == 3
    assert reasons == {
        "consumer failed: a bug in the consumer",
        "consumer stopped",
        "consumer was cancelled",
    }
    for expected in ("failed: a bug in the consumer", "consumer stopped while", "was cancelled"):
        assert expected in caplog.text


async def test_an_oversized_message_on_311_is_refused_acknowledged_and_blocks_nothing(
    broker: BrokerAddress, timescale_database: Database, unique_site: str
) -> None:
    dsn, device = timescale_database.dsn, "aq-0001"
    register(dsn, [(device, unique_site)])
    topic = f"city/v1/{unique_site}/{device}/telemetry"
    start = recent()
    config = ingest_config(
        broker, dsn, mqtt_protocol="3.1.1", max_packet_bytes=65_536, detection=False
    )
    oversized = (topic, b"{" + b" " * 100_000 + b"}")
    async with running_ingest(config):
        await asyncio.to_thread(
            publish_all, broker, [oversized, (topic, batch_payload(device, 1, start))]
        )
        assert await eventually(lambda: len(stored_keys(dsn)) == 3)
        assert await eventually(lambda: rejection_rows(dsn) == [(device, "oversized", None)])
    # Acknowledged: the next session starts with what came after it, not with it again.
    async with running_ingest(config):
        later = (topic, batch_payload(device, 2, start - timedelta(minutes=5)))
        await asyncio.to_thread(publish_all, broker, [later])
        assert await eventually(lambda: len(stored_keys(dsn)) == 6)
    assert rejection_rows(dsn) == [(device, "oversized", None)]
