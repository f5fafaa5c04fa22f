"""The lean MQTT client: packet decoding, and its behaviour against a real Mosquitto."""

from __future__ import annotations

import asyncio
import secrets

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.mqtt import Message, MqttClient, MqttError, MqttProtocolError
from ingest.mqtt.codec import (
    PUBACK,
    Control,
    PacketReader,
    encode_pubacks,
    encode_publish,
    varint,
)
from tests.conftest import BrokerAddress
from tests.services.mosquitto import Mosquitto


@pytest.mark.parametrize("protocol", [4, 5])
def test_packets_split_anywhere_decode_the_same(protocol: int) -> None:
    stream = b"".join(
        encode_publish(
            f"city/v1/s/d{i}/telemetry",
            bytes([i]) * i,
            qos=i % 2,
            packet_id=i,
            protocol=protocol,
            retain=i == 3,
        )
        for i in range(1, 6)
    ) + encode_pubacks([9])
    whole = PacketReader(protocol).feed(stream)
    reader = PacketReader(protocol)
    bytewise = [packet for byte in stream for packet in reader.feed(bytes([byte]))]
    assert whole == bytewise
    messages = [p for p in whole if isinstance(p, Message)]
    assert [(m.topic, m.payload, m.qos, m.packet_id, m.retain) for m in messages] == [
        (f"city/v1/s/d{i}/telemetry", bytes([i]) * i, i % 2, i if i % 2 else 0, i == 3)
        for i in range(1, 6)
    ]
    assert whole[-1] == Control(PUBACK, b"\x00\x09")


def test_mqtt5_publish_properties_are_skipped() -> None:
    properties = b"\x01\x01" + b"\x23\x00\x05"  # payload format indicator, topic alias 5
    body = b"\x00\x01t" + b"\x00\x07" + varint(len(properties)) + properties + b"payload"
    packet = bytes([0x32]) + varint(len(body)) + body
    (message,) = PacketReader(5).feed(packet)
    assert message == Message("t", b"payload", 1, 7)


def test_garbage_lengths_are_refused() -> None:
    with pytest.raises(MqttProtocolError):
        PacketReader(5).feed(b"\x30\xff\xff\xff\xff\x01")  # a length of five bytes
    with pytest.raises(MqttProtocolError, match="too large"):
        PacketReader(5).feed(b"\x30\xff\xff\xff\x7f")  # 256 MB


async def collect(
    client_id: str, broker: BrokerAddress, **options: object
) -> tuple[MqttClient, list[Message]]:
    received: list[Message] = []
    client = MqttClient(
        host=broker.host,
        port=broker.port,
        client_id=client_id,
        on_messages=received.extend,
        **options,  # type: ignore[arg-type]
    )
    await client.connect()
    return client, received


def publish(broker: BrokerAddress, topic: str, count: int) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    for info in [client.publish(topic, f"m{i}".encode(), qos=1) for i in range(count)]:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


async def wait_for(check: object, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return bool(check())  # type: ignore[operator]


@pytest.mark.parametrize("protocol", [4, 5])
async def test_unacknowledged_messages_come_back_on_the_next_connection(
    broker: BrokerAddress, protocol: int
) -> None:
    name, topic = f"t-{secrets.token_hex(4)}", f"test/{secrets.token_hex(4)}"
    client, received = await collect(name, broker, protocol=protocol, session_expiry=60)
    await client.subscribe([topic])
    await asyncio.to_thread(publish, broker, topic, 5)
    assert await wait_for(lambda: len(received) == 5)
    client.ack([m.packet_id for m in received[:2]])  # only the first two are durable
    await asyncio.sleep(0.2)
    await client.disconnect()

    again, redelivered = await collect(name, broker, protocol=protocol, session_expiry=60)
    assert again.session_present
    assert await wait_for(lambda: len(redelivered) == 3)
    assert [m.payload for m in redelivered] == [b"m2", b"m3", b"m4"]
    assert all(m.dup for m in redelivered)
    again.ack([m.packet_id for m in redelivered])
    await asyncio.sleep(0.2)
    await again.disconnect()


async def test_receive_maximum_bounds_what_the_broker_sends_unacknowledged(
    broker: BrokerAddress,
) -> None:
    topic = f"test/{secrets.token_hex(4)}"
    client, received = await collect(f"t-{secrets.token_hex(4)}", broker, receive_maximum=5)
    await client.subscribe([topic])
    await asyncio.to_thread(publish, broker, topic, 20)
    await asyncio.sleep(0.5)
    assert len(received) == 5  # the broker waits for acknowledgements
    client.ack([m.packet_id for m in received])
    # Mosquitto 2.0 refills beyond the window once acknowledgements flow, which is why the
    # pipeline also pauses reading when its own queue is long (tested in test_pipeline).
    assert await wait_for(lambda: len(received) > 5)
    client.ack([m.packet_id for m in received[5:]])
    await client.disconnect()


async def test_a_refused_connection_says_why(broker: BrokerAddress) -> None:
    client = MqttClient(
        host=broker.host, port=broker.port, client_id="", on_messages=lambda m: None, protocol=4
    )
    with pytest.raises(MqttError, match="identifier rejected"):
        await client.connect()  # 3.1.1 refuses an empty id for a persistent session


async def test_an_unreachable_broker_is_a_clear_error() -> None:
    client = MqttClient(host="127.0.0.1", port=1, client_id="x", on_messages=lambda m: None)
    with pytest.raises(MqttError, match=r"cannot reach 127\.0\.0\.1:1"):
        await client.connect(timeout=2)


async def test_losing_the_broker_ends_the_connection_with_a_reason() -> None:
    own = Mosquitto()
    own.start()
    try:
        client, _ = await collect("lost", BrokerAddress(own.host, own.port))
        await client.subscribe(["#"])
        own.stop(kill=True)
        with pytest.raises(MqttError, match="connection lost"):
            await asyncio.wait_for(client.closed(), 10)
        assert not client.connected
    finally:
        own.cleanup()
