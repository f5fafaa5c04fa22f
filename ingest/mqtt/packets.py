"""Strict decoding of the packets a broker sends a subscriber, other than PUBLISH.

Every check names the specification's section; a violation raises :class:`MqttProtocolError`
with the MQTT 5 reason code the client then sends in its DISCONNECT (3.1.1 just closes).
PUBLISH is decoded on the hot path in :mod:`ingest.mqtt.codec`, which calls
:func:`check_publish_properties` only when a PUBLISH carries properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.mqtt.errors import (
    PROTOCOL_ERROR,
    TOPIC_ALIAS_INVALID,
    MqttError,
    MqttProtocolError,
    reason_text,
)

# MQTT 5 §2.2.2.2: property identifiers by data type.
_BYTE = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
_TWO = frozenset({0x13, 0x21, 0x22, 0x23})
_FOUR = frozenset({0x02, 0x11, 0x18, 0x27})
_VARINT = frozenset({0x0B})
_STRING = frozenset({0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F})
_BINARY = frozenset({0x09, 0x16})
_PAIR = frozenset({0x26})
_BOOLEAN = frozenset({0x01, 0x24, 0x25, 0x28, 0x29, 0x2A})  # 0 or 1, else a protocol error
_NONZERO = frozenset({0x21, 0x27, 0x0B})  # Receive Maximum, Maximum Packet Size, Sub. Id.

# Which properties a broker may put in each packet it sends (MQTT 5 §3.x.2.2).
CONNACK_PROPERTIES = frozenset(
    {0x11, 0x21, 0x24, 0x25, 0x27, 0x12, 0x22, 0x1F, 0x26, 0x28, 0x29, 0x2A, 0x13, 0x1A, 0x1C}
    | {0x15, 0x16}
)
PUBLISH_PROPERTIES = frozenset({0x01, 0x02, 0x23, 0x08, 0x09, 0x26, 0x0B, 0x03})
ACK_PROPERTIES = frozenset({0x1F, 0x26})
DISCONNECT_PROPERTIES = frozenset({0x11, 0x1F, 0x26, 0x1C})
_REPEATABLE = frozenset({0x26, 0x0B})

REASON_STRING, SERVER_REFERENCE, TOPIC_ALIAS = 0x1F, 0x1C, 0x23

_SUBACK_CODES = {
    4: frozenset({0x00, 0x01, 0x02, 0x80}),
    5: frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}),
}
_PUBACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})

Properties = dict[int, object]


def read_varint(buffer: bytes | bytearray | memoryview, offset: int) -> tuple[int, int]:
    """A variable byte integer at ``offset``: (value, offset after), or -1 when cut short.

    Raises:
        MqttProtocolError: More than four bytes (MQTT 5 §1.5.5, 3.1.1 §2.2.3).
    """
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
    raise MqttProtocolError("malformed variable byte integer (more than four bytes)")


def utf8(raw: bytes | memoryview, what: str) -> str:
    """Decode an MQTT UTF-8 string: well-formed, no U+0000 (MQTT 5 §1.5.4, 3.1.1 §1.5.3).

    Raises:
        MqttProtocolError: Not well-formed UTF-8, or containing U+0000.
    """
    try:
        text = str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        raise MqttProtocolError(f"{what} is not well-formed UTF-8") from exc
    if "\x00" in text:
        raise MqttProtocolError(f"{what} contains U+0000")
    return text


def _two(body: bytes, offset: int, what: str) -> int:
    if offset + 2 > len(body):
        raise MqttProtocolError(f"{what} overruns")
    return int(body[offset] << 8 | body[offset + 1])


def parse_properties(
    body: bytes, offset: int, allowed: frozenset[int], packet: str
) -> tuple[Properties, int]:
    """Read a property block at ``offset``: (properties, offset after it).

    User properties (and subscription identifiers) are collected in lists; everything else may
    appear once.

    Raises:
        MqttProtocolError: Cut short or overrunning, an identifier not valid for ``packet``, a
            value of the wrong type or range, or a property repeated (MQTT 5 §2.2.2.2).
    """
    length, offset = read_varint(body, offset)
    if length < 0:
        raise MqttProtocolError(f"{packet} property length runs past the end of the packet")
    end = offset + length
    if end > len(body):
        raise MqttProtocolError(f"{packet} properties run past the end of the packet")
    found: Properties = {}
    block = body[:end]  # no value may run past the property length
    while offset < end:
        ident, offset = read_varint(block, offset)
        if ident < 0:
            raise MqttProtocolError(f"{packet} property identifier overruns")
        if ident not in allowed:
            raise MqttProtocolError(f"property 0x{ident:02x} is not valid in {packet}")
        what = f"{packet} property 0x{ident:02x}"
        value, offset = _property_value(block, offset, ident, what)
        if ident in _BOOLEAN and value not in (0, 1):
            raise MqttProtocolError(f"{what} must be 0 or 1", PROTOCOL_ERROR)
        if ident in _NONZERO and value == 0:
            raise MqttProtocolError(f"{what} must not be 0", PROTOCOL_ERROR)
        if ident in _REPEATABLE:
            listed = found.setdefault(ident, [])
            assert isinstance(listed, list)
            listed.append(value)
        elif ident in found:
            raise MqttProtocolError(f"{what} repeated", PROTOCOL_ERROR)
        else:
            found[ident] = value
    return found, end


def _property_value(block: bytes, offset: int, ident: int, what: str) -> tuple[object, int]:
    """One property's value at ``offset`` by its data type; ``block`` ends with the properties."""
    end = len(block)
    width = 1 if ident in _BYTE else 2 if ident in _TWO else 4 if ident in _FOUR else 0
    if width:
        if offset + width > end:
            raise MqttProtocolError(f"{what} overruns")
        return int.from_bytes(block[offset : offset + width], "big"), offset + width
    if ident in _VARINT:
        value, offset = read_varint(block, offset)
        if value < 0:
            raise MqttProtocolError(f"{what} overruns")
        return value, offset
    parts: list[str | bytes] = []
    for _ in range(2 if ident in _PAIR else 1):
        size = _two(block, offset, what)
        if offset + 2 + size > end:
            raise MqttProtocolError(f"{what} overruns")
        raw = block[offset + 2 : offset + 2 + size]
        offset += 2 + size
        parts.append(raw if ident in _BINARY else utf8(raw, what))
    return (tuple(parts) if ident in _PAIR else parts[0]), offset


def check_publish_properties(body: bytes, offset: int) -> int:
    """Validate a PUBLISH's properties; returns where the payload starts.

    This client declares no Topic Alias Maximum, so any topic alias is invalid
    (MQTT 5 §3.3.2.3.4, [MQTT-3.1.2-26]).
    """
    found, end = parse_properties(body, offset, PUBLISH_PROPERTIES, "PUBLISH")
    if TOPIC_ALIAS in found:
        raise MqttProtocolError(
            f"topic alias {found[TOPIC_ALIAS]} was never allowed (Topic Alias Maximum is 0)",
            TOPIC_ALIAS_INVALID,
        )
    return end


@dataclass(frozen=True, slots=True)
class ConnAck:
    """What the broker granted (MQTT 5 §3.2.2.3; defaults are the specification's)."""

    session_present: bool
    server_keepalive: int | None = None
    maximum_qos: int = 2
    retain_available: bool = True
    maximum_packet_size: int | None = None
    receive_maximum: int = 65_535
    shared_available: bool = True
    wildcard_available: bool = True
    reason_string: str | None = None
    server_reference: str | None = None
    user_properties: list[tuple[str, str]] = field(default_factory=list)


def _explained(text: str, found: Properties) -> str:
    """``text`` with the broker's Reason String and Server Reference, when it sent them."""
    if REASON_STRING in found:
        text += f": {found[REASON_STRING]}"
    if SERVER_REFERENCE in found:
        text += f" (use server {found[SERVER_REFERENCE]})"
    return text


def parse_connack(body: bytes, protocol: int, *, clean: bool = False) -> ConnAck:
    """Check a CONNACK and read what the broker granted.

    Raises:
        MqttProtocolError: Malformed (MQTT 5 §3.2, 3.1.1 §3.2).
        MqttError: The broker refused the connection (with its reason and reason string).
    """
    if len(body) < 2 or (protocol == 4 and len(body) != 2):
        raise MqttProtocolError(f"CONNACK of {len(body)} bytes")
    if body[0] & 0xFE:
        raise MqttProtocolError("CONNACK acknowledge flags has reserved bits set")  # MQTT-3.2.2-1
    session_present, code = bool(body[0] & 0x01), body[1]
    found: Properties = {}
    if protocol == 5:
        if len(body) > 2:
            found, end = parse_properties(body, 2, CONNACK_PROPERTIES, "CONNACK")
            if end != len(body):
                raise MqttProtocolError("CONNACK has bytes after its properties")
        if 0x15 in found or 0x16 in found:
            raise MqttProtocolError(  # §4.12: no Authentication Method was asked for
                "CONNACK carries an authentication method this client never asked for",
                PROTOCOL_ERROR,
            )
    if code != 0:
        raise MqttError(_explained(f"connection refused: {reason_text(code, protocol)}", found))
    if session_present and clean:
        raise MqttProtocolError("session present after a clean start", PROTOCOL_ERROR)
    users = found.get(0x26, [])
    return ConnAck(
        session_present=session_present,
        server_keepalive=found.get(0x13),  # type: ignore[arg-type]
        maximum_qos=int(found.get(0x24, 2)),  # type: ignore[call-overload]
        retain_available=bool(found.get(0x25, 1)),
        maximum_packet_size=found.get(0x27),  # type: ignore[arg-type]
        receive_maximum=int(found.get(0x21, 65_535)),  # type: ignore[call-overload]
        shared_available=bool(found.get(0x2A, 1)),
        wildcard_available=bool(found.get(0x28, 1)),
        reason_string=found.get(REASON_STRING),  # type: ignore[arg-type]
        server_reference=found.get(SERVER_REFERENCE),  # type: ignore[arg-type]
        user_properties=list(users),  # type: ignore[call-overload]
    )


def ack_packet_id(body: bytes, what: str) -> int:
    """The packet identifier a PUBACK or SUBACK answers.

    Raises:
        MqttProtocolError: Shorter than two bytes, or identifier 0 (MQTT 5 §2.2.1).
    """
    if len(body) < 2:
        raise MqttProtocolError(f"{what} of {len(body)} bytes has no packet identifier")
    packet_id = body[0] << 8 | body[1]
    if packet_id == 0:
        raise MqttProtocolError(f"{what} for packet identifier 0")
    return packet_id


def parse_suback(body: bytes, protocol: int) -> list[int]:
    """The reason codes (granted QoS or refusal) of a SUBACK, one per filter.

    Raises:
        MqttProtocolError: Malformed, or a reason code the specification does not allow.
    """
    ack_packet_id(body, "SUBACK")
    offset = 2
    if protocol == 5:
        _, offset = parse_properties(body, offset, ACK_PROPERTIES, "SUBACK")
    codes = list(body[offset:])
    if not codes:
        raise MqttProtocolError("SUBACK without reason codes")
    unknown = [c for c in codes if c not in _SUBACK_CODES[protocol]]
    if unknown:
        raise MqttProtocolError(f"SUBACK reason code 0x{unknown[0]:02x} is not defined")
    return codes


def parse_puback(body: bytes, protocol: int) -> str | None:
    """Why a PUBACK refused the message, or None when it was accepted.

    Raises:
        MqttProtocolError: Malformed, or a reason code the specification does not allow.
    """
    ack_packet_id(body, "PUBACK")
    if protocol == 4 or len(body) == 2:
        if len(body) != 2:
            raise MqttProtocolError(f"PUBACK of {len(body)} bytes")
        return None
    code = body[2]
    found: Properties = {}
    if len(body) > 3:
        found, end = parse_properties(body, 3, ACK_PROPERTIES, "PUBACK")
        if end != len(body):
            raise MqttProtocolError("PUBACK has bytes after its properties")
    if code not in _PUBACK_CODES:
        raise MqttProtocolError(f"PUBACK reason code 0x{code:02x} is not defined")
    return _explained(reason_text(code, 5), found) if code >= 0x80 else None


def parse_disconnect(body: bytes) -> str:
    """Why an MQTT 5 broker disconnected us, with its Reason String and Server Reference.

    Raises:
        MqttProtocolError: Malformed, or a Session Expiry Interval from the server
            ([MQTT-3.14.2-2]).
    """
    if not body:
        return "normal disconnection"
    found: Properties = {}
    if len(body) > 1:
        found, end = parse_properties(body, 1, DISCONNECT_PROPERTIES, "DISCONNECT")
        if end != len(body):
            raise MqttProtocolError("DISCONNECT has bytes after its properties")
        if 0x11 in found:
            raise MqttProtocolError("the server sent a Session Expiry Interval", PROTOCOL_ERROR)
    return _explained(reason_text(body[0], 5), found)
