"""Edge -> Mosquitto -> ingest -> database, with simulated devices, counted reading by reading."""

from __future__ import annotations

import asyncio
from datetime import datetime

import psycopg
import pytest

from edge.fleet import District, Fleet, plan_fleet
from edge.publisher import BrokerSettings
from ingest.registry import DeviceRecord, register_devices
from tests.ingest.running import eventually, ingest_config, running_ingest
from tests.services.handles import BrokerAddress, Database

DEVICES = 20


def stored(dsn: str) -> list[tuple[str, str, str, datetime]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT s.device_id, s.sensor, s.metric, r.ts"
            " FROM readings r JOIN streams s USING (stream_id)"
        ).fetchall()
    return [(str(d), str(s), str(m), ts) for d, s, m, ts in rows]


@pytest.mark.slow
async def test_every_published_reading_is_stored_exactly_once(
    broker: BrokerAddress, database: Database, unique_site: str
) -> None:
    specs = plan_fleet(DEVICES, seed=11, districts=[District(unique_site, "Test", 53.8, -1.55)])
    register_devices(
        database.dsn,
        [DeviceRecord(s.device, s.site, s.family, s.name, s.lat, s.lon) for s in specs],
    )
    fleet = Fleet(
        specs,
        BrokerSettings(host=broker.host, port=broker.port),
        sample_interval_s=0.2,
        batch_interval_s=0.5,
        record=True,
    )
    async with running_ingest(ingest_config(broker, database.dsn)) as service:
        fleet.start()
        try:
            assert await asyncio.to_thread(fleet.wait_connected, 20)
            # Until every device has published several batches (bounded; slower when busy).
            for _ in range(600):
                if len(list(fleet.published)) > DEVICES * 12:
                    break
                await asyncio.sleep(0.1)
        finally:
            await asyncio.to_thread(fleet.stop_sampling)
        assert await asyncio.to_thread(fleet.drain, 30), "devices kept a backlog"
        expected = len(fleet.published)
        assert await eventually(lambda: len(stored(database.dsn)) >= expected, timeout_s=30)
        await asyncio.to_thread(fleet.stop)
        stats = service.stats()

    rows = stored(database.dsn)
    keys = {(d, s, m, ts.isoformat()) for d, s, m, ts in rows}
    assert len(rows) == len(keys)  # no reading twice
    assert keys == fleet.published  # every reading, nothing else
    assert {d for d, _, _, _ in rows} == {s.device for s in specs}
    assert expected > DEVICES * 10
    assert stats.rejected_messages == stats.rejected_readings == 0
