"""Ingest recovers from its broker connection cut at each point where the client waits.

The real service runs through a proxy to the real Mosquitto that drops the connection instead
of passing on a CONNACK, a SUBACK or a PINGRESP to the consumer, or a PUBACK to the alert
publisher. While the consumer is not consuming, /readyz says so; afterwards every reading
published is in the database exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from datetime import timedelta

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.alert_publisher import AlertPublisher, BrokerAccount
from ingest.mqtt import MqttError
from ingest.service import IngestService, open_pool
from processing.alerts import AlertStore, Opening
from tests.ingest.helpers import batch_payload, publish_all, recent, register, stored_keys
from tests.ingest.mqtt.proxy import Cut, CuttingProxy
from tests.ingest.running import eventually, ingest_config, running_ingest
from tests.services.handles import BrokerAddress, Database
from tests.services.mosquitto import Mosquitto

CONNACK, PUBACK, SUBACK, PINGRESP = 2, 4, 9, 13
NAMES = {CONNACK: "CONNACK", SUBACK: "SUBACK", PINGRESP: "PINGRESP", PUBACK: "PUBACK"}


@dataclass
class Fleet:
    """One device publishing numbered batches straight to the broker (not through the proxy)."""

    broker: BrokerAddress
    site: str
    device: str = "aq-0001"
    sent: int = 0

    def publish(self, count: int) -> None:
        start = recent()
        messages = [
            (
                f"city/v1/{self.site}/{self.device}/telemetry",
                batch_payload(self.device, seq, start - timedelta(minutes=seq), 3),
            )
            for seq in range(self.sent + 1, self.sent + count + 1)
        ]
        publish_all(self.broker, messages)
        self.sent += count


async def ready(service: IngestService) -> tuple[int, str]:
    """GET /readyz from the service's health endpoint: (status, body)."""
    assert service.health is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", service.health.port)
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: ingest\r\n\r\n")
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode().strip()


async def ready_becomes(service: IngestService, status: int, timeout_s: float = 20.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        got, body = await ready(service)
        if got == status:
            return body
        assert loop.time() < deadline, f"/readyz stayed {got} ({body}), never {status}"
        await asyncio.sleep(0.02)


def alert_observer(broker: BrokerAddress, site: str, seen: list[dict[str, object]]) -> paho.Client:
    """A running subscriber appending every alert event of ``site`` to ``seen``."""
    observer = paho.Client(CallbackAPIVersion.VERSION2)
    observer.on_message = lambda _c, _u, m: seen.append(json.loads(m.payload))
    observer.connect(broker.host, broker.port)
    observer.subscribe(f"city/alerts/v1/{site}/#", qos=1)
    observer.loop_start()
    return observer


def exactly_once(dsn: str, fleet: Fleet) -> bool:
    keys = stored_keys(dsn)
    return len(keys) == fleet.sent * 3 == len(set(keys))


@pytest.mark.parametrize("point", [CONNACK, SUBACK, PINGRESP], ids=NAMES.get)
async def test_the_consumer_recovers_from_a_cut_at_each_wait(
    broker: BrokerAddress, timescale_database: Database, unique_site: str, point: int
) -> None:
    dsn = timescale_database.dsn
    register(dsn, [("aq-0001", unique_site)])
    fleet = Fleet(broker, unique_site)
    async with CuttingProxy(broker.host, broker.port) as proxy:
        config = ingest_config(
            BrokerAddress("127.0.0.1", proxy.port), dsn, keepalive_s=2, detection=False
        )
        async with running_ingest(config) as service:
            assert service.consumer is not None
            await asyncio.to_thread(fleet.publish, 5)
            assert await eventually(lambda: exactly_once(dsn, fleet))
            assert (await ready(service))[0] == 200

            proxy.cuts.append(Cut(config.client_id, point, then_refuse=True))
            if point != PINGRESP:  # CONNACK and SUBACK come on a new connection
                service.consumer.reconnect()
            assert await eventually(lambda: bool(proxy.done), 15), "the cut never happened"
            assert proxy.done == [(config.client_id, point)]

            # While the broker is out of reach the worker says it is not consuming...
            why = await ready_becomes(service, 503)
            assert "broker" in why
            await asyncio.to_thread(fleet.publish, 5)  # kept for ingest's session meanwhile
            # ...and once it is back, it carries on from where it was.
            proxy.refusing = False
            await ready_becomes(service, 200, timeout_s=45)
            assert await eventually(lambda: exactly_once(dsn, fleet), 30), (
                f"{len(stored_keys(dsn))} readings stored of {fleet.sent * 3}"
            )
            await asyncio.to_thread(fleet.publish, 2)
            assert await eventually(lambda: exactly_once(dsn, fleet), 30)
            assert service.consumer.connections >= 2


async def test_the_alert_publisher_recovers_from_a_cut_before_its_puback(
    broker: BrokerAddress, timescale_database: Database, unique_site: str
) -> None:
    dsn = timescale_database.dsn
    register(dsn, [("aq-0001", unique_site)])
    fleet = Fleet(broker, unique_site)
    seen: list[dict[str, object]] = []
    observer = alert_observer(broker, unique_site, seen)
    try:
        async with CuttingProxy(broker.host, broker.port) as proxy:
            config = ingest_config(BrokerAddress("127.0.0.1", proxy.port), dsn)
            proxy.cuts.append(Cut(f"{config.client_id}-alerts", PUBACK))
            async with running_ingest(config) as service:
                await asyncio.to_thread(fleet.publish, 3)
                assert await eventually(lambda: exactly_once(dsn, fleet))
                with psycopg.connect(dsn) as conn:
                    row = conn.execute("SELECT stream_id FROM streams LIMIT 1").fetchone()
                assert row is not None
                async with open_pool(dsn) as pool:
                    outcome, alert_id = await AlertStore(pool).open(
                        Opening(
                            row[0],
                            "aq-0001",
                            unique_site,
                            "spike",
                            "warning",
                            "test",
                            0.99,
                            80.0,
                            recent(),
                        )
                    )
                assert outcome == "opened"
                assert await eventually(lambda: bool(proxy.done), 20), "no PUBACK was cut"

                # The publisher reconnects and sends the event again; the outbox marks it sent.
                def published() -> bool:
                    with psycopg.connect(dsn) as conn:
                        left = conn.execute(
                            "SELECT count(*) FROM alert_events WHERE published_at IS NULL"
                        ).fetchone()
                    return left == (0,) and any(e["alert_id"] == alert_id for e in seen)

                assert await eventually(published, 30)
                assert service.down == {}
                assert (await ready(service))[0] == 200
    finally:
        observer.loop_stop()
        observer.disconnect()


async def test_alerts_go_out_through_the_next_broker_when_the_first_is_lost(
    broker: BrokerAddress, timescale_database: Database, unique_site: str
) -> None:
    """The publisher's broker is gone: the event goes out through the city's other broker, and
    the outbox marks it sent once."""
    dsn = timescale_database.dsn
    register(dsn, [("aq-0001", unique_site)])
    fleet = Fleet(broker, unique_site)
    async with running_ingest(ingest_config(broker, dsn, detection=False)):
        await asyncio.to_thread(fleet.publish, 1)  # the device's streams, to raise alerts on
        assert await eventually(lambda: exactly_once(dsn, fleet))
    lost = Mosquitto()
    lost.start()
    seen: list[dict[str, object]] = []
    observer = alert_observer(broker, unique_site, seen)
    publisher = AlertPublisher(
        BrokerAccount(lost.host, lost.port, "alerts-test", fallbacks=((broker.host, broker.port),)),
        "city/alerts/v1",
    )
    try:
        async with open_pool(dsn) as pool:
            with psycopg.connect(dsn) as conn:
                row = conn.execute("SELECT stream_id FROM streams LIMIT 1").fetchone()
            assert row is not None
            opening = Opening(
                row[0], "aq-0001", unique_site, "spike", "warning", "test", 0.99, 80.0, recent()
            )
            outcome, alert_id = await AlertStore(pool).open(opening)
            assert outcome == "opened"
            assert await publisher.publish_pending(pool) == 1  # through the first broker
            lost.stop(kill=True)
            assert await AlertStore(pool).resolve_condition(row[0], "spike", "calm") == alert_id
            # A round that finds the broker gone may fail; the next uses the other broker.
            sent = 0
            for _ in range(3):
                with contextlib.suppress(MqttError):
                    sent = await publisher.publish_pending(pool)
                    break
            assert sent == 1
            assert await eventually(lambda: any(e["alert_id"] == alert_id for e in seen), 10)
            with psycopg.connect(dsn) as conn:
                left = conn.execute(
                    "SELECT count(*) FROM alert_events WHERE published_at IS NULL"
                ).fetchone()
            assert left == (0,)
    finally:
        await publisher.close()
        observer.loop_stop()
        observer.disconnect()
        lost.cleanup()
