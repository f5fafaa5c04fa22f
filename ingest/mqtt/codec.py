"""MQTT packet encoding and incremental decoding (pure functions, no I/O).

Only the packets ingest sends (CONNECT, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT, and PUBLISH for
load generators and tests) are encoded; every packet a broker may send a subscriber is decoded.

Examples:
    >>> reader = PacketReader(protocol=5)
    >>> packet = encode_publish("city/v1/a/b/telemetry", b"{}", qos=1, packet_id=7, protocol=5)
    >>> received = reader.feed(packet[:5]) + reader.feed(packet[5:])
    >>> [(m.topic, m.payload, m.packet_id) for m in received]
    [('city/v1/a/b/telemetry', b'{}', 7)]
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
MAX_PACKET_BYTES = 16 << 20  # far above the contract's 256 KiB payloads; refuses garbage lengths

_CONNACK_V3 = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}
_REASONS_V5 = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA2: "wildcard subscriptions not supported",
}


class MqttError(Exception):
    """The connection failed or was lost; the message says why (with the broker's reason)."""


class MqttProtocolError(MqttError):
    """The broker sent something this client cannot accept."""


def reason_text(code: int, protocol: int) -> str:
    """A readable name for a CONNACK/SUBACK/DISCONNECT reason code."""
    table = _REASONS_V5 if protocol == 5 else _CONNACK_V3
    return f"{table.get(code, 'reason')} (0x{code:02x})"


@dataclass(frozen=True, slots=True)
class Message:
    """A received PUBLISH."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    dup: bool = False
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Control:
    """Any received packet that is not a PUBLISH: its type and variable header plus payload."""

    kind: int
    body: bytes


def varint(value: int) -> bytes:
    r"""MQTT's variable byte integer.

    Examples:
        >>> varint(0), varint(127), varint(128), varint(16_383)
        (b'\x00', b'\x7f', b'\x80\x01', b'\xff\x7f')
    """
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def _binary(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    protocol: int,
    keepalive: int,
    clean: bool,
    username: str | None = None,
    password: str | None = None,
    session_expiry: int = 0,
    receive_maximum: int = 65_535,
) -> bytes:
    """CONNECT; ``clean`` is Clean Start (5) or Clean Session (3.1.1)."""
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    body = _string("MQTT") + bytes([protocol, flags]) + struct.pack(">H", keepalive)
    if protocol == 5:
        props = b"\x11" + struct.pack(">I", session_expiry)
        if receive_maximum != 65_535:
            props += b"\x21" + struct.pack(">H", receive_maximum)
        body += varint(len(props)) + props
    body += _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _binary(password.encode())
    return _packet(CONNECT << 4, body)


def encode_subscribe(packet_id: int, filters: Iterable[str], *, qos: int, protocol: int) -> bytes:
    """SUBSCRIBE to ``filters`` at ``qos``."""
    body = struct.pack(">H", packet_id) + (b"\x00" if protocol == 5 else b"")
    for topic_filter in filters:
        body += _string(topic_filter) + bytes([qos])
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def encode_pubacks(packet_ids: Iterable[int]) -> bytes:
    """Several PUBACKs in one buffer (success, so MQTT 5 needs no reason code)."""
    return b"".join(b"\x40\x02" + pid.to_bytes(2, "big") for pid in packet_ids)


def encode_publish(
    topic: str, payload: bytes, *, qos: int, packet_id: int = 0, protocol: int, retain: bool = False
) -> bytes:
    """PUBLISH (used by load generators and tests; ingest itself only receives)."""
    body = _string(topic)
    if qos:
        body += struct.pack(">H", packet_id)
    if protocol == 5:
        body += b"\x00"
    return _packet(PUBLISH << 4 | qos << 1 | int(retain), body + payload)


def _read_varint(buffer: bytes | bytearray | memoryview, offset: int) -> tuple[int, int]:
    """Decode a variable byte integer at ``offset``: (value, offset after), value -1 if cut."""
    value, shift, end = 0, 0, len(buffer)
    for _ in range(4):
        if offset >= end:
            return -1, offset
        byte = buffer[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
    raise MqttProtocolError("malformed remaining length")


class PacketReader:
    """Incremental decoder: feed it socket data, get back complete packets in order."""

    def __init__(self, protocol: int) -> None:
        self._protocol = protocol
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message | Control]:
        """Add received bytes; return every packet now complete."""
        buffer = self._buffer
        buffer += data
        packets: list[Message | Control] = []
        offset, end = 0, len(buffer)
        view = memoryview(buffer)
        v5 = self._protocol == 5
        try:
            while end - offset >= 2:
                first = buffer[offset]
                length, start = _read_varint(buffer, offset + 1)
                if length < 0 or start + length > end:
                    if length > MAX_PACKET_BYTES:
                        raise MqttProtocolError(f"packet of {length} bytes is too large")
                    break
                stop = start + length
                if first >> 4 == PUBLISH:
                    qos = (first >> 1) & 0x03
                    topic_end = start + 2 + (buffer[start] << 8 | buffer[start + 1])
                    topic = str(view[start + 2 : topic_end], "utf-8")
                    packet_id = 0
                    cursor = topic_end
                    if qos:
                        packet_id = buffer[cursor] << 8 | buffer[cursor + 1]
                        cursor += 2
                    if v5:
                        properties, cursor = _read_varint(buffer, cursor)
                        cursor += properties
                    packets.append(
                        Message(
                            topic,
                            bytes(view[cursor:stop]),
                            qos,
                            packet_id,
                            bool(first & 0x08),
                            bool(first & 0x01),
                        )
                    )
                else:
                    packets.append(Control(first >> 4, bytes(view[start:stop])))
                offset = stop
        finally:
            view.release()
            del buffer[:offset]
        return packets


def parse_connack(body: bytes, protocol: int) -> bool:
    """Check a CONNACK; returns whether the broker kept a session for us.

    Raises:
        MqttError: The broker refused the connection.
    """
    if len(body) < 2:
        raise MqttProtocolError("truncated CONNACK")
    if body[1] != 0:
        raise MqttError(f"connection refused: {reason_text(body[1], protocol)}")
    return bool(body[0] & 0x01)


def parse_suback(body: bytes, protocol: int) -> tuple[int, list[int]]:
    """Packet id and granted QoS / reason codes of a SUBACK."""
    packet_id = body[0] << 8 | body[1]
    offset = 2
    if protocol == 5:
        properties, offset = _read_varint(body, offset)
        offset += properties
    return packet_id, list(body[offset:])


def parse_disconnect(body: bytes, protocol: int) -> str:
    """Why a (MQTT 5) broker disconnected us."""
    if protocol != 5 or not body:
        return "normal disconnection"
    return reason_text(body[0], protocol)
