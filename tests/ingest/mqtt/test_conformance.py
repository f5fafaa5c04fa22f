"""The client against a scripted broker: every case in cases.py, and the limits a CONNACK sets.

For each forbidden packet the client must close the connection (MQTT 5: after a DISCONNECT with
the case's reason code), say why, and acknowledge nothing, so the broker redelivers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from pathlib import Path

import pytest

from ingest.alert_publisher import AlertPublisher, BrokerAccount
from ingest.mqtt import Message, MqttClient, MqttError, MqttProtocolError
from tests.ingest.mqtt.cases import CASES, Case, cases_for
from tests.ingest.mqtt.scripted import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBLISH,
    SUBSCRIBE,
    Received,
    ScriptedBroker,
    Session,
    connack,
    packet,
    publish,
    string,
    suback,
)

ROOT = Path(__file__).resolve().parents[3]


def _id(value: object) -> str:
    return value.name if isinstance(value, Case) else {4: "v3.1.1", 5: "v5"}.get(value, "?")  # type: ignore[call-overload]


class Connection:
    """A client connecting to the scripted broker, and the broker's side of it."""

    def __init__(self, broker: ScriptedBroker, protocol: int, **options: object) -> None:
        self.received: list[Message] = []
        self.client = MqttClient(
            host=broker.host,
            port=broker.port,
            client_id="conformance",
            on_messages=self.received.extend,
            protocol=protocol,
            max_packet_size=options.pop("max_packet_size", 1024),  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
        )
        self.broker = broker
        self.protocol = protocol
        self.session: Session

    async def start(self) -> asyncio.Task[bool]:
        """Begin connecting; returns the pending connect() once the CONNECT has arrived."""
        connecting = asyncio.create_task(self.client.connect(timeout=5))
        self.session = await self.broker.session()
        await self.session.expect(CONNECT)
        return connecting

    async def connected(self, properties: bytes = b"") -> None:
        connecting = await self.start()
        self.session.send(connack(self.protocol, properties))
        await connecting

    async def subscribed(self) -> None:
        await self.connected()
        subscribing = asyncio.create_task(self.client.subscribe(["t/#"], qos=1))
        got = await self.session.expect(SUBSCRIBE)
        self.session.send(suback(self.protocol, struct.unpack(">H", got.body[:2])[0], 1))
        await subscribing


def closing_packets(sent: list[Received], protocol: int) -> int | None:
    """The reason code of the client's DISCONNECT (None on 3.1.1, which must send none)."""
    assert not [p for p in sent if p.kind == PUBACK], "the client acknowledged something"
    disconnects = [p for p in sent if p.kind == DISCONNECT]
    if protocol == 4:
        assert not disconnects, "a 3.1.1 client closes without DISCONNECT on a violation"
        return None
    assert disconnects, "an MQTT 5 client says why it closes"
    return disconnects[0].body[0]


async def _expect_violation(conn: Connection, case: Case, waiting: asyncio.Task[object]) -> None:
    with pytest.raises(MqttError, match=case.match) as caught:
        await asyncio.wait_for(waiting, 10)
    assert isinstance(caught.value, MqttProtocolError) or isinstance(
        caught.value.__cause__, MqttProtocolError
    )
    code = closing_packets(await conn.session.ending(), conn.protocol)
    if conn.protocol == 5:
        assert code == case.code, f"reason code 0x{code:02x}, expected 0x{case.code:02x}"
    with pytest.raises(MqttProtocolError):
        await conn.client.closed()
    assert not conn.client.connected
    assert conn.received == [], "nothing from a broken stream is handed on"


@pytest.mark.parametrize(("case", "protocol"), cases_for("message"), ids=_id)
async def test_a_forbidden_packet_closes_the_connection(case: Case, protocol: int) -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, protocol)
        await conn.subscribed()
        conn.session.send(case.build(protocol, 1))
        await _expect_violation(conn, case, asyncio.create_task(conn.client.closed()))


@pytest.mark.parametrize(("case", "protocol"), cases_for("connack"), ids=_id)
async def test_a_forbidden_connack_fails_the_connect(case: Case, protocol: int) -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, protocol)
        connecting = await conn.start()
        conn.session.send(case.build(protocol, 0))
        await _expect_violation(conn, case, connecting)


@pytest.mark.parametrize(("case", "protocol"), cases_for("suback"), ids=_id)
async def test_a_forbidden_suback_fails_the_subscription(case: Case, protocol: int) -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, protocol)
        await conn.connected()
        subscribing = asyncio.create_task(conn.client.subscribe(["t/#"]))
        got = await conn.session.expect(SUBSCRIBE)
        conn.session.send(case.build(protocol, struct.unpack(">H", got.body[:2])[0]))
        await _expect_violation(conn, case, subscribing)


@pytest.mark.parametrize(("case", "protocol"), cases_for("puback"), ids=_id)
async def test_a_forbidden_puback_fails_the_publish(case: Case, protocol: int) -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, protocol)
        await conn.connected()
        publishing = asyncio.create_task(conn.client.publish("alerts/a", b"{}"))
        got = await conn.session.expect(PUBLISH)
        conn.session.send(case.build(protocol, struct.unpack(">H", got.body[10:12])[0]))
        await _expect_violation(conn, case, publishing)


def test_every_case_is_in_the_conformance_page() -> None:
    page = (ROOT / "docs" / "mqtt-conformance.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9.-]+)` \|", page, re.MULTILINE))
    assert listed >= {case.name for case in CASES}, sorted({c.name for c in CASES} - listed)


# --- the connection ending while something waits (fault 1) --------------------------------


@pytest.mark.parametrize("protocol", [4, 5])
async def test_a_connection_closed_before_the_connack_is_an_mqtt_error(protocol: int) -> None:
    # Mosquitto itself does this for a 3.1.1 password without a user name.
    async with ScriptedBroker() as broker:
        conn = Connection(broker, protocol)
        connecting = await conn.start()
        conn.session.close()
        with pytest.raises(MqttError, match="waiting for CONNACK"):
            await asyncio.wait_for(connecting, 10)


@pytest.mark.parametrize("protocol", [4, 5])
async def test_a_connection_closed_before_the_suback_is_an_mqtt_error(protocol: int) -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, protocol)
        await conn.connected()
        subscribing = asyncio.create_task(conn.client.subscribe(["t/#"]))
        await conn.session.expect(SUBSCRIBE)
        conn.session.close()
        with pytest.raises(MqttError, match="waiting for SUBACK"):
            await asyncio.wait_for(subscribing, 10)


async def test_a_disconnect_while_a_puback_is_awaited_is_an_mqtt_error_with_the_reason() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5)
        await conn.connected()
        publishing = asyncio.create_task(conn.client.publish("alerts/a", b"{}"))
        await conn.session.expect(PUBLISH)
        props = b"\x1f" + string("message too big for this broker")
        conn.session.send(packet(0xE0, b"\x95" + bytes([len(props)]) + props))
        with pytest.raises(MqttError, match=r"packet too large.*message too big"):
            await asyncio.wait_for(publishing, 10)


async def test_a_broker_that_sends_no_answer_is_reported_as_such(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5)
        await conn.connected()
        with pytest.raises(MqttError, match="no PUBACK from the broker within 1s"):
            await conn.client.publish("alerts/a", b"{}", timeout=1)
        with pytest.raises(MqttError, match="no PUBACK") as ended:
            await conn.client.closed()
        assert "closed by the broker" not in str(ended.value)


async def test_server_reference_and_reason_string_are_reported() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5)
        await conn.connected()
        props = b"\x1c" + string("mqtt-2.example:8883") + b"\x1f" + string("draining")
        conn.session.send(packet(0xE0, b"\x9c" + bytes([len(props)]) + props))
        with pytest.raises(MqttError, match=r"use another server.*draining.*mqtt-2\.example:8883"):
            await asyncio.wait_for(conn.client.closed(), 10)


async def test_a_refusal_carries_the_brokers_reason_string() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5)
        connecting = await conn.start()
        conn.session.send(connack(5, b"\x1f" + string("account disabled"), code=0x87))
        with pytest.raises(MqttError, match=r"not authorized.*account disabled"):
            await connecting


# --- what the CONNACK grants (fault 4) ----------------------------------------------------


async def test_server_keep_alive_replaces_the_clients() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5, keepalive=60)
        await conn.connected(b"\x13\x00\x01")  # Server Keep Alive 1 s [MQTT-3.2.2-21]
        assert conn.client.keepalive == 1
        # A PINGREQ comes within the second, not after half a minute.
        assert (await conn.session.read(timeout=3)).kind == PINGREQ  # type: ignore[union-attr]


async def test_a_publish_larger_than_the_brokers_maximum_is_refused_before_sending() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5)
        await conn.connected(b"\x27\x00\x00\x00\x40")  # Maximum Packet Size 64
        with pytest.raises(MqttError, match="exceeds the broker's maximum packet size of 64"):
            await conn.client.publish("alerts/a", b"x" * 100)
        assert conn.client.connected
        assert await conn.session.quiet(0.5), "nothing was sent"


async def test_maximum_qos_0_and_no_retain_are_honoured() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5)
        await conn.connected(b"\x25\x00")  # Retain Available 0
        with pytest.raises(MqttError, match="retained"):
            await conn.client.publish("alerts/a", b"{}", retain=True)
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5)
        await conn.connected(b"\x24\x00")  # Maximum QoS 0
        with pytest.raises(MqttError, match="QoS 0 only"):
            await conn.client.publish("alerts/a", b"{}")


async def test_the_brokers_receive_maximum_bounds_publishes_in_flight() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5)
        await conn.connected(b"\x21\x00\x01")  # Receive Maximum 1 [MQTT-3.3.4-7]
        first = asyncio.create_task(conn.client.publish("alerts/a", b"1"))
        second = asyncio.create_task(conn.client.publish("alerts/a", b"2"))
        got = await conn.session.expect(PUBLISH)
        assert await conn.session.quiet(0.5), "the second waits for the first's PUBACK"
        conn.session.send(b"\x40\x02" + got.body[10:12])
        await first
        got = await conn.session.expect(PUBLISH)
        conn.session.send(b"\x40\x02" + got.body[10:12])
        await second


async def test_a_shared_subscription_is_refused_when_the_broker_has_none() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5)
        await conn.connected(b"\x2a\x00")
        with pytest.raises(MqttError, match="shared subscriptions"):
            await conn.client.subscribe(["$share/ingest/city/#"])


@pytest.mark.parametrize("protocol", [4, 5])
async def test_a_suback_granting_qos_0_is_an_error_naming_the_subscription(protocol: int) -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, protocol)
        await conn.connected()
        subscribing = asyncio.create_task(conn.client.subscribe(["city/v1/+/+/telemetry"]))
        got = await conn.session.expect(SUBSCRIBE)
        conn.session.send(suback(protocol, struct.unpack(">H", got.body[:2])[0], 0))
        with pytest.raises(MqttError, match=r"city/v1/\+/\+/telemetry granted QoS 0"):
            await subscribing


# --- backpressure and the keepalive (fault 3) ---------------------------------------------


async def test_paused_reading_is_not_taken_for_a_dead_broker() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5, keepalive=1)
        await conn.subscribed()
        conn.client.pause_reading()
        # The broker answers every PINGREQ, but the client is not reading: 2.5 keepalives pass.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.5
        while loop.time() < deadline:
            try:
                got = await conn.session.read(timeout=max(0.1, deadline - loop.time()))
            except TimeoutError:
                continue
            assert got is not None, "the client dropped the connection while paused"
            if got.kind == PINGREQ:
                conn.session.send(b"\xd0\x00")
        assert conn.client.connected
        conn.client.resume_reading()
        conn.session.send(publish(5, "t/1", b"after", packet_id=3))
        for _ in range(100):
            if conn.received:
                break
            await asyncio.sleep(0.02)
        assert [m.payload for m in conn.received] == [b"after"]


async def test_a_broker_silent_while_the_client_reads_is_declared_lost() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5, keepalive=1)
        await conn.connected()
        with pytest.raises(MqttError, match="no packet from the broker"):
            await asyncio.wait_for(conn.client.closed(), 10)


# --- oversized messages (fault 2) --------------------------------------------------------


async def test_mqtt5_declares_its_maximum_packet_size() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 5, max_packet_size=65_536)
        connecting = asyncio.create_task(conn.client.connect(timeout=5))
        conn.session = await broker.session()
        got = await conn.session.expect(CONNECT)
        assert b"\x27" + struct.pack(">I", 65_536) in got.body
        conn.session.send(connack(5))
        await connecting


async def test_an_oversized_311_message_is_read_past_and_handed_on_to_be_refused() -> None:
    async with ScriptedBroker() as broker:
        conn = Connection(broker, 4, max_packet_size=1024)
        await conn.subscribed()
        big = publish(4, "city/v1/s/d/telemetry", b"x" * 5000, packet_id=4)
        data = big + publish(4, "city/v1/s/d/telemetry", b"small", packet_id=5)
        for start in range(0, len(data), 700):  # arriving in pieces, as from a socket
            conn.session.send(data[start : start + 700])
            await asyncio.sleep(0)
        for _ in range(200):
            if len(conn.received) == 2:
                break
            await asyncio.sleep(0.02)
        oversized, small = conn.received
        assert (oversized.packet_id, oversized.payload, oversized.oversize) == (4, b"", len(big))
        assert (small.packet_id, small.payload, small.oversize) == (5, b"small", 0)
        assert conn.client.connected
        conn.client.ack([4, 5])  # the caller records the rejection and acknowledges it
        assert (await conn.session.expect(PUBACK)).body == b"\x00\x04"


def test_a_311_password_needs_a_user_name() -> None:
    async def build() -> None:
        MqttClient(host="h", port=1, client_id="c", on_messages=print, protocol=4, password="p")

    with pytest.raises(ValueError, match="user name"):
        asyncio.run(build())


def test_failures_are_logged_once_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        async with ScriptedBroker() as broker:
            conn = Connection(broker, 5)
            await conn.subscribed()
            conn.session.send(publish(5, "t/+", b"x"))
            with pytest.raises(MqttProtocolError):
                await asyncio.wait_for(conn.client.closed(), 10)

    with caplog.at_level(logging.WARNING, logger="ingest.mqtt.client"):
        asyncio.run(run())
    assert any("wildcard" in r.getMessage() and "0x81" in r.getMessage() for r in caplog.records)


async def test_the_alert_publisher_leaves_no_session_behind() -> None:
    # Its outbox is its session: on 3.1.1 a persistent session would linger on the broker for
    # ever, and after a reconnect republishing under new ids is right only without one.
    async with ScriptedBroker() as broker:
        publisher = AlertPublisher(
            BrokerAccount(broker.host, broker.port, "i-alerts", protocol=4), "a"
        )
        connecting = asyncio.create_task(publisher._connected())
        session = await broker.session()
        got = await session.expect(CONNECT)
        flags = got.body[7]  # after the protocol name and level
        assert flags & 0x02, "Clean Session is set"
        session.send(connack(4))
        await connecting
        await publisher.close()
