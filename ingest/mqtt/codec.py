"""MQTT packet encoding and incremental decoding (pure functions, no I/O).

Only the packets ingest sends (CONNECT, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT, and PUBLISH for
alerts, load generators and tests) are encoded; every packet a broker may send a subscriber is
framed here, PUBLISH decoded and checked in place (the hot path), the rest handed to
:mod:`ingest.mqtt.packets`.

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

from ingest.mqtt.errors import MALFORMED_PACKET, PACKET_TOO_LARGE, PROTOCOL_ERROR
from ingest.mqtt.errors import MqttProtocolError as _Violation
from ingest.mqtt.packets import check_publish_properties, read_varint

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT, AUTH = 12, 13, 14, 15

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
# Far above the contract's 256 KiB payloads and the 1 MiB a retained message may hold. Declared
# to MQTT 5 brokers as the Maximum Packet Size, so they drop larger messages themselves.
MAX_PACKET_BYTES = 16 << 20
_FLAGS = {PUBREL: 0x02, SUBSCRIBE: 0x02, UNSUBSCRIBE: 0x02}  # reserved flags; 0 for the rest


@dataclass(frozen=True, slots=True)
class Message:
    """A received PUBLISH."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    dup: bool = False
    retain: bool = False
    oversize: int = 0  # MQTT 3.1.1: size of a packet too large to keep; its payload is empty


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
    maximum_packet_size: int = MAX_PACKET_BYTES,
) -> bytes:
    """CONNECT; ``clean`` is Clean Start (5) or Clean Session (3.1.1).

    Raises:
        ValueError: A password without a user name on MQTT 3.1.1 ([MQTT-3.1.2-22]).
    """
    if protocol == 4 and password is not None and username is None:
        raise ValueError("MQTT 3.1.1 allows a password only with a user name")
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    body = _string("MQTT") + bytes([protocol, flags]) + struct.pack(">H", keepalive)
    if protocol == 5:
        props = b"\x11" + struct.pack(">I", session_expiry)
        if receive_maximum != 65_535:
            props += b"\x21" + struct.pack(">H", receive_maximum)
        props += b"\x27" + struct.pack(">I", maximum_packet_size)
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
    topic: str,
    payload: bytes,
    *,
    qos: int,
    packet_id: int = 0,
    protocol: int,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    """PUBLISH (alerts, load generators and tests; ingest itself only receives)."""
    body = _string(topic)
    if qos:
        body += struct.pack(">H", packet_id)
    if protocol == 5:
        body += b"\x00"
    first = PUBLISH << 4 | int(dup) << 3 | qos << 1 | int(retain)
    return _packet(first, body + payload)


def encode_disconnect(reason_code: int, protocol: int, reason: str = "") -> bytes:
    """DISCONNECT; on MQTT 5 with a reason code and, when given, a Reason String."""
    if protocol != 5:
        return DISCONNECT_PACKET
    props = b"\x1f" + _string(reason[:200]) if reason else b""
    return _packet(DISCONNECT << 4, bytes([reason_code]) + varint(len(props)) + props)


def _violation(detail: str, code: int = MALFORMED_PACKET) -> _Violation:
    return _Violation(detail, code)


class PacketReader:
    """Incremental decoder: feed it socket data, get back complete packets in order.

    Args:
        protocol: 5 or 4 (3.1.1).
        max_packet: The largest packet kept. On MQTT 5 the client declared it, so a larger one
            breaks the protocol; on 3.1.1 (where it cannot be declared) a larger PUBLISH is
            read past and returned as a :class:`Message` with ``oversize`` set and no payload,
            so it can be refused and acknowledged instead of redelivered for ever.

    Raises:
        MqttProtocolError: From :meth:`feed`, for anything the specification forbids a broker
            to send; packets before it in the same call are not returned.
    """

    def __init__(self, protocol: int, max_packet: int = MAX_PACKET_BYTES) -> None:
        self._protocol = protocol
        self._max_packet = max_packet
        self._buffer = bytearray()
        self._skip = 0  # bytes still to discard of an oversized 3.1.1 PUBLISH

    def feed(self, data: bytes) -> list[Message | Control]:
        """Add received bytes; return every packet now complete."""
        if self._skip:
            taken = min(self._skip, len(data))
            self._skip -= taken
            data = data[taken:]
        buffer = self._buffer
        buffer += data
        packets: list[Message | Control] = []
        offset, end = 0, len(buffer)
        view = memoryview(buffer)
        v5 = self._protocol == 5
        try:
            while end - offset >= 2:
                first = buffer[offset]
                length, start = read_varint(buffer, offset + 1)
                if length < 0:
                    break
                if start - offset + length > self._max_packet:
                    size = start - offset + length
                    if v5:  # [MQTT-3.1.2-24]
                        raise _violation(
                            f"packet of {size} bytes exceeds the declared maximum "
                            f"of {self._max_packet}",
                            PACKET_TOO_LARGE,
                        )
                    kept = self._oversized(view, offset, start, end, length)
                    if kept is None:
                        break
                    packets.append(kept)
                    stop = start + length
                    self._skip = max(0, stop - end)
                    offset = min(stop, end)
                    continue
                stop = start + length
                if stop > end:
                    break
                if first >> 4 == PUBLISH:
                    packets.append(self._publish(view, first, start, stop, v5))
                else:
                    packets.append(_control(first, bytes(view[start:stop]), v5))
                offset = stop
        finally:
            view.release()
            del buffer[:offset]
        return packets

    def _publish(self, view: memoryview, first: int, start: int, stop: int, v5: bool) -> Message:
        """Decode one PUBLISH occupying ``view[start:stop]``."""
        buffer = view.obj  # the bytearray, indexed directly: faster than the view
        qos = (first >> 1) & 0x03
        if qos == 3:  # [MQTT-3.3.1-4]
            raise _violation("PUBLISH with QoS 3")
        dup = bool(first & 0x08)
        if dup and not qos:  # [MQTT-3.3.1-2]
            raise _violation("PUBLISH at QoS 0 with the DUP flag")
        if stop - start < 2:
            raise _violation("PUBLISH without a topic length")
        topic_end = start + 2 + (buffer[start] << 8 | buffer[start + 1])  # type: ignore[index]
        cursor = topic_end + (2 if qos else 0)
        if cursor > stop:
            raise _violation("PUBLISH topic runs past the end of the packet")
        topic = _topic(view[start + 2 : topic_end])
        packet_id = 0
        if qos:
            packet_id = buffer[topic_end] << 8 | buffer[topic_end + 1]  # type: ignore[index]
            if not packet_id:  # [MQTT-2.2.1-4] (3.1.1: [MQTT-2.3.1-1])
                raise _violation("PUBLISH at QoS 1 with packet identifier 0")
            if qos == 2:  # subscribed at QoS 1 at most: [MQTT-3.8.4-8]
                raise _violation("PUBLISH at QoS 2 on a QoS 1 subscription", PROTOCOL_ERROR)
        if v5:
            if cursor >= stop:
                raise _violation("PUBLISH without its property length")
            if buffer[cursor]:  # type: ignore[index]  # rare: most brokers send none
                body = bytes(view[start:stop])
                cursor = start + check_publish_properties(body, cursor - start)
            else:
                cursor += 1
        return Message(topic, bytes(view[cursor:stop]), qos, packet_id, dup, bool(first & 0x01))

    def _oversized(
        self, view: memoryview, offset: int, start: int, end: int, length: int
    ) -> Message | None:
        """The header of a 3.1.1 PUBLISH too large to keep, or None until it has arrived."""
        first = view[offset]
        if first >> 4 != PUBLISH:
            raise _violation(f"packet of type {first >> 4} and {length} bytes")
        if end - start < 2:
            return None
        topic_end = start + 2 + (view[start] << 8 | view[start + 1])
        qos = (first >> 1) & 0x03
        if end < topic_end + 2:
            return None
        header = self._publish(view, first, start, topic_end + (2 if qos else 0), v5=False)
        return Message(
            header.topic,
            b"",
            header.qos,
            header.packet_id,
            header.dup,
            header.retain,
            oversize=start - offset + length,
        )


def _control(first: int, body: bytes, v5: bool) -> Control:
    """A packet other than PUBLISH, its fixed header checked ([MQTT-2.1.3-1], 3.1.1 §2.2)."""
    kind = first >> 4
    if kind == 0 or (kind == AUTH and not v5):
        raise _violation(f"reserved packet type {kind}")
    if first & 0x0F != _FLAGS.get(kind, 0):
        raise _violation(f"packet type {kind} with reserved flags 0x{first & 15:x}")
    return Control(kind, body)


def _topic(raw: memoryview) -> str:
    """A PUBLISH topic name: UTF-8, no U+0000, no wildcards, not empty."""
    try:
        topic = str(raw, "utf-8")
    except UnicodeDecodeError as exc:  # [MQTT-1.5.4-1]
        raise _violation("PUBLISH topic is not well-formed UTF-8") from exc
    if not topic:  # [MQTT-4.7.3-1]; MQTT 5: no topic alias was allowed either
        raise _violation("PUBLISH with an empty topic", PROTOCOL_ERROR)
    if "\x00" in topic or "+" in topic or "#" in topic:  # [MQTT-1.5.4-2], [MQTT-3.3.2-2]
        raise _violation(f"PUBLISH topic {topic!r} has U+0000 or a wildcard")
    return topic
