"""Packet framing and PUBLISH decoding, byte by byte."""

from __future__ import annotations

import pytest

from ingest.mqtt import Message, MqttProtocolError
from ingest.mqtt.codec import (
    PUBACK,
    Control,
    PacketReader,
    encode_connect,
    encode_pubacks,
    encode_publish,
    varint,
)


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


def test_mqtt5_publish_properties_are_checked_and_skipped() -> None:
    # Payload Format Indicator, Message Expiry Interval, a user property, a subscription id.
    properties = b"\x01\x01" + b"\x02\x00\x00\x00\x3c" + b"\x26\x00\x01k\x00\x01v" + b"\x0b\x07"
    body = b"\x00\x01t" + b"\x00\x07" + varint(len(properties)) + properties + b"payload"
    packet = bytes([0x32]) + varint(len(body)) + body
    (message,) = PacketReader(5).feed(packet)
    assert message == Message("t", b"payload", 1, 7)


def test_garbage_lengths_are_refused() -> None:
    with pytest.raises(MqttProtocolError, match="four bytes"):
        PacketReader(5).feed(b"\x30\xff\xff\xff\xff\x01")  # a length of five bytes
    with pytest.raises(MqttProtocolError, match="exceeds the declared maximum") as caught:
        PacketReader(5).feed(b"\x30\xff\xff\xff\x7f")  # 256 MB
    assert caught.value.reason_code == 0x95


def test_an_oversized_311_publish_split_anywhere_is_skipped_the_same() -> None:
    big = encode_publish("a/b", b"z" * 3000, qos=1, packet_id=3, protocol=4)
    small = encode_publish("a/c", b"ok", qos=1, packet_id=4, protocol=4)
    stream = big + small
    for cut in (1, 3, 6, 7, 100, len(big) - 1, len(big), len(big) + 1):
        reader = PacketReader(4, max_packet=1024)
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert got == [
            Message("a/b", b"", 1, 3, oversize=len(big)),
            Message("a/c", b"ok", 1, 4),
        ], cut


def test_connect_carries_the_maximum_packet_size_and_refuses_a_311_password_alone() -> None:
    packet = encode_connect("c", protocol=5, keepalive=30, clean=False, maximum_packet_size=4096)
    assert b"\x27\x00\x00\x10\x00" in packet
    with pytest.raises(ValueError, match="user name"):
        encode_connect("c", protocol=4, keepalive=30, clean=False, password="secret")
