"""The client's errors and the protocol's reason codes, named for people."""

from __future__ import annotations

from ingest.errors import IngestError

# MQTT 5 reason codes the client sends in its own DISCONNECT when the broker breaks the protocol.
MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
TOPIC_ALIAS_INVALID = 0x94
PACKET_TOO_LARGE = 0x95

_CONNACK_V3 = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}
_REASONS_V5 = {
    0x00: "success",
    0x01: "granted QoS 1",
    0x02: "granted QoS 2",
    0x04: "disconnect with will message",
    0x10: "no matching subscribers",
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
    0x91: "packet identifier in use",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def reason_text(code: int, protocol: int) -> str:
    """A readable name for a reason code (MQTT 5) or CONNACK return code (3.1.1).

    Examples:
        >>> reason_text(0x95, 5), reason_text(4, 4)
        ('packet too large (0x95)', 'bad user name or password (0x04)')
    """
    table = _REASONS_V5 if protocol == 5 else _CONNACK_V3
    return f"{table.get(code, 'reason')} (0x{code:02x})"


class MqttError(IngestError):
    """The connection failed, was refused or was lost; the message says why."""


class MqttProtocolError(MqttError):
    """The broker sent something the protocol forbids; the client closes the connection.

    Attributes:
        reason_code: The MQTT 5 reason code the client's DISCONNECT carries (0x81 malformed
            packet, 0x82 protocol error, 0x94 topic alias invalid, 0x95 packet too large).
    """

    def __init__(self, detail: str, reason_code: int = MALFORMED_PACKET) -> None:
        super().__init__(detail)
        self.reason_code = reason_code
