"""The conformance cases: what a broker may send that the client must refuse, clause by clause.

Each case is the exact bytes a scripted broker sends at one point of the conversation, the
specification clause that forbids them, and the MQTT 5 reason code the client's DISCONNECT must
carry (an MQTT 3.1.1 client just closes the connection, [MQTT-4.8.0-1]). docs/mqtt-conformance.md
lists them; a test checks the two agree.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from ingest.mqtt.codec import varint
from tests.ingest.mqtt.scripted import connack, packet, publish, string, suback

Build = Callable[[int, int], bytes]  # (protocol, packet id being answered) -> bytes

BOTH = (4, 5)
V5 = (5,)
V4 = (4,)


@dataclass(frozen=True)
class Case:
    """One thing a broker must not send.

    Attributes:
        name: Short id, used as the test id and in the docs table.
        clause: The specification text that forbids it.
        phase: When it is sent: instead of the CONNACK, the SUBACK or the PUBACK, or as a
            packet after a good subscription (``message``).
        build: The bytes.
        code: The reason code of the client's MQTT 5 DISCONNECT.
        protocols: The protocol versions the case applies to.
        match: A regex the client's error message must match.
    """

    name: str
    clause: str
    phase: str
    build: Build
    code: int
    protocols: tuple[int, ...]
    match: str


def _pub(topic: str | bytes = "t/1", **kw: object) -> Build:
    return lambda p, _id: publish(p, topic, b"x", **kw)  # type: ignore[arg-type]


def _props(properties: bytes) -> Build:
    return lambda p, _id: publish(p, "t/1", b"x", properties=properties)


def _connack_props(properties: bytes) -> Build:
    return lambda p, _id: connack(p, properties)


def _overrun(p: int, _id: int) -> bytes:
    # The topic length says 200 bytes; the packet ends first. A lenient reader would take the
    # next packet's bytes as the topic and packet id and acknowledge a made-up message.
    bad = packet(0x32, struct.pack(">H", 200) + b"t/1" + b"\x00\x07")
    return bad + publish(p, "t/2", b"next", packet_id=9)


CASES = [
    # --- PUBLISH --------------------------------------------------------------------------
    Case(
        "publish-qos-3",
        "MQTT-3.3.1-4 (5 and 3.1.1): both QoS bits set is a malformed packet",
        "message",
        _pub(first=0x36),
        0x81,
        BOTH,
        "QoS 3",
    ),
    Case(
        "publish-qos-2",
        "MQTT-3.8.4-8: no QoS above the granted QoS 1",
        "message",
        lambda p, _id: publish(p, "t/1", b"x", qos=2),
        0x82,
        BOTH,
        "QoS 2",
    ),
    Case(
        "publish-dup-qos-0",
        "MQTT-3.3.1-2: DUP must be 0 at QoS 0",
        "message",
        lambda p, _id: publish(p, "t/1", b"x", qos=0, first=0x38),
        0x81,
        BOTH,
        "DUP",
    ),
    Case(
        "publish-topic-overrun",
        "5 §3.3.2.1 / 3.1.1 §3.3.2.1: the topic lies inside the packet",
        "message",
        _overrun,
        0x81,
        BOTH,
        "topic runs past",
    ),
    Case(
        "publish-packet-id-0",
        "MQTT-2.2.1-4 (3.1.1: MQTT-2.3.1-1): QoS 1 needs a non-zero id",
        "message",
        _pub(packet_id=0),
        0x81,
        BOTH,
        "identifier 0",
    ),
    Case(
        "publish-topic-not-utf8",
        "MQTT-1.5.4-1: strings are well-formed UTF-8",
        "message",
        _pub(b"t/\xff"),
        0x81,
        BOTH,
        "UTF-8",
    ),
    Case(
        "publish-topic-nul",
        "MQTT-1.5.4-2: strings do not contain U+0000",
        "message",
        _pub("t/\x00"),
        0x81,
        BOTH,
        "U\\+0000",
    ),
    Case(
        "publish-topic-wildcard",
        "MQTT-3.3.2-2: a topic name has no wildcards",
        "message",
        _pub("t/+"),
        0x81,
        BOTH,
        "wildcard",
    ),
    Case(
        "publish-topic-empty",
        "MQTT-4.7.3-1; 5 §3.3.2.3.4: empty topic without an alias",
        "message",
        _pub(""),
        0x82,
        BOTH,
        "empty topic",
    ),
    Case(
        "publish-topic-alias",
        "MQTT-3.1.2-26/27: no topic alias above the declared maximum 0",
        "message",
        _props(b"\x23\x00\x01"),
        0x94,
        V5,
        "topic alias",
    ),
    Case(
        "publish-unknown-property",
        "5 §2.2.2.2: an identifier not valid for the packet",
        "message",
        _props(b"\x11\x00\x00\x00\x01"),
        0x81,
        V5,
        "not valid in PUBLISH",
    ),
    Case(
        "publish-repeated-property",
        "5 §3.3.2.3.2: Payload Format Indicator at most once",
        "message",
        _props(b"\x01\x01\x01\x01"),
        0x82,
        V5,
        "repeated",
    ),
    Case(
        "publish-property-value-range",
        "5 §3.3.2.3.2: Payload Format Indicator is 0 or 1",
        "message",
        _props(b"\x01\x07"),
        0x82,
        V5,
        "0 or 1",
    ),
    Case(
        "publish-property-overrun",
        "5 §2.2.2.2: a value runs past the property length",
        "message",
        _props(b"\x02\x00\x01"),
        0x81,
        V5,
        "overruns",
    ),
    Case(
        "publish-property-length-overrun",
        "5 §2.2.2.1: property length past the packet",
        "message",
        lambda p, _id: packet(0x32, string("t/1") + b"\x00\x01" + varint(50)),
        0x81,
        V5,
        "run past",
    ),
    Case(
        "publish-too-large",
        "MQTT-3.1.2-24: nothing above the declared Maximum Packet Size",
        "message",
        lambda p, _id: publish(p, "t/1", b"x" * 5000),
        0x95,
        V5,
        "exceeds",
    ),
    # --- acknowledgements nobody asked for -----------------------------------------------
    Case(
        "puback-unknown-id",
        "5 §4.3.2 / 3.1.1 §4.3.2: a PUBACK answers a PUBLISH sent",
        "message",
        lambda p, _id: b"\x40\x02\x00\x05",
        0x82,
        BOTH,
        "not in use",
    ),
    Case(
        "suback-unknown-id",
        "5 §3.9.2: a SUBACK answers a SUBSCRIBE sent",
        "message",
        lambda p, _id: suback(p, 77, 1),
        0x82,
        BOTH,
        "not in use",
    ),
    Case(
        "pubrel-unsolicited",
        "5 §4.3.3: PUBREL only in a QoS 2 exchange this client never starts",
        "message",
        lambda p, _id: b"\x62\x02\x00\x01",
        0x82,
        BOTH,
        "PUBREL",
    ),
    Case(
        "pubrec-unsolicited",
        "5 §4.3.3: PUBREC answers only a QoS 2 PUBLISH",
        "message",
        lambda p, _id: b"\x50\x02\x00\x01",
        0x82,
        BOTH,
        "PUBREC",
    ),
    Case(
        "pubcomp-unsolicited",
        "5 §4.3.3: PUBCOMP answers only a PUBREL",
        "message",
        lambda p, _id: b"\x70\x02\x00\x01",
        0x82,
        BOTH,
        "PUBCOMP",
    ),
    Case(
        "unsuback-unsolicited",
        "5 §3.11: UNSUBACK answers an UNSUBSCRIBE never sent",
        "message",
        lambda p, _id: b"\xb0\x02\x00\x01",
        0x82,
        BOTH,
        "UNSUBACK",
    ),
    Case(
        "auth-unsolicited",
        "5 §4.12: no AUTH without an Authentication Method in CONNECT",
        "message",
        lambda p, _id: b"\xf0\x00",
        0x82,
        V5,
        "AUTH",
    ),
    Case(
        "auth-on-3.1.1",
        "3.1.1 §2.2.1: packet type 15 is reserved",
        "message",
        lambda p, _id: b"\xf0\x00",
        0x81,
        V4,
        "reserved packet type 15",
    ),
    Case(
        "client-only-packet",
        "5 §2.1.2: SUBSCRIBE flows client to server only",
        "message",
        lambda p, _id: b"\x82\x05\x00\x01\x00\x01#",
        0x82,
        BOTH,
        "SUBSCRIBE",
    ),
    Case(
        "pingreq-from-broker",
        "5 §3.12: PINGREQ flows client to server only",
        "message",
        lambda p, _id: b"\xc0\x00",
        0x82,
        BOTH,
        "PINGREQ",
    ),
    Case(
        "reserved-type-0",
        "5 §2.1.2 / 3.1.1 §2.2.1: packet type 0 is reserved",
        "message",
        lambda p, _id: b"\x00\x00",
        0x81,
        BOTH,
        "reserved packet type 0",
    ),
    Case(
        "reserved-flags",
        "MQTT-2.1.3-1 (3.1.1: MQTT-2.2.2-2): reserved flags as specified",
        "message",
        lambda p, _id: b"\xd1\x00",
        0x81,
        BOTH,
        "reserved flags",
    ),
    Case(
        "remaining-length-5-bytes",
        "5 §1.5.5 / 3.1.1 §2.2.3: at most four length bytes",
        "message",
        lambda p, _id: b"\x30\xff\xff\xff\xff\x01",
        0x81,
        BOTH,
        "four bytes",
    ),
    Case(
        "pingresp-with-body",
        "5 §3.13.2: PINGRESP has no variable header or payload",
        "message",
        lambda p, _id: b"\xd0\x01\x00",
        0x81,
        BOTH,
        "PINGRESP of 1",
    ),
    Case(
        "second-connack",
        "MQTT-3.2.0-2: one CONNACK per connection",
        "message",
        lambda p, _id: connack(p),
        0x82,
        BOTH,
        "second CONNACK",
    ),
    Case(
        "disconnect-on-3.1.1",
        "3.1.1 §3.14: DISCONNECT flows client to server only",
        "message",
        lambda p, _id: b"\xe0\x00",
        0x82,
        V4,
        "DISCONNECT",
    ),
    Case(
        "disconnect-session-expiry",
        "MQTT-3.14.2-2: a server sends no Session Expiry Interval",
        "message",
        lambda p, _id: packet(0xE0, b"\x8b\x05\x11\x00\x00\x00\x01"),
        0x82,
        V5,
        "Session Expiry",
    ),
    # --- CONNACK --------------------------------------------------------------------------
    Case(
        "connack-short",
        "5 §3.2.2 / 3.1.1 §3.2.2: flags and a reason code",
        "connack",
        lambda p, _id: b"\x20\x01\x00",
        0x81,
        BOTH,
        "CONNACK of 1",
    ),
    Case(
        "connack-reserved-flags",
        "MQTT-3.2.2-1: acknowledge flags bits 7-1 are 0",
        "connack",
        lambda p, _id: connack(p, flags=0x02),
        0x81,
        BOTH,
        "reserved bits",
    ),
    Case(
        "connack-long-3.1.1",
        "3.1.1 §3.2: the remaining length is 2",
        "connack",
        lambda p, _id: b"\x20\x03\x00\x00\x00",
        0x81,
        V4,
        "CONNACK of 3",
    ),
    Case(
        "connack-unknown-property",
        "5 §2.2.2.2: Payload Format Indicator is not a CONNACK's",
        "connack",
        _connack_props(b"\x01\x00"),
        0x81,
        V5,
        "not valid in CONNACK",
    ),
    Case(
        "connack-repeated-property",
        "5 §3.2.2.3.5: Maximum QoS at most once",
        "connack",
        _connack_props(b"\x24\x00\x24\x00"),
        0x82,
        V5,
        "repeated",
    ),
    Case(
        "connack-maximum-qos-2",
        "5 §3.2.2.3.4: Maximum QoS is 0 or 1 when present",
        "connack",
        _connack_props(b"\x24\x02"),
        0x82,
        V5,
        "0 or 1",
    ),
    Case(
        "connack-receive-maximum-0",
        "5 §3.2.2.3.3: Receive Maximum 0 is a protocol error",
        "connack",
        _connack_props(b"\x21\x00\x00"),
        0x82,
        V5,
        "must not be 0",
    ),
    Case(
        "connack-auth-method",
        "5 §4.12: no Authentication Method unless the client sent one",
        "connack",
        _connack_props(b"\x15" + string("SCRAM")),
        0x82,
        V5,
        "authentication",
    ),
    Case(
        "publish-before-connack",
        "MQTT-3.2.0-1: the first packet from the server is CONNACK",
        "connack",
        _pub(),
        0x82,
        BOTH,
        "before CONNACK",
    ),
    # --- SUBACK and PUBACK ----------------------------------------------------------------
    Case(
        "suback-short",
        "5 §3.9.2 / 3.1.1 §3.9.2: a SUBACK starts with the packet id",
        "suback",
        lambda p, _id: b"\x90\x01\x00",
        0x81,
        BOTH,
        "no packet identifier",
    ),
    Case(
        "suback-code-count",
        "MQTT-3.8.4-6: one reason code per topic filter",
        "suback",
        lambda p, pid: suback(p, pid, 1, 1),
        0x82,
        BOTH,
        "2 reason codes for 1",
    ),
    Case(
        "suback-undefined-code",
        "5 §3.9.3 / 3.1.1 §3.9.3: defined return codes only",
        "suback",
        lambda p, pid: suback(p, pid, 3),
        0x81,
        BOTH,
        "not defined",
    ),
    Case(
        "puback-short",
        "5 §3.4.2 / 3.1.1 §3.4.2: a PUBACK carries the packet id",
        "puback",
        lambda p, _id: b"\x40\x01\x00",
        0x81,
        BOTH,
        "no packet identifier",
    ),
    Case(
        "puback-undefined-code",
        "5 §3.4.2.1: defined PUBACK reason codes only",
        "puback",
        lambda p, pid: b"\x40\x03" + struct.pack(">H", pid) + b"\x05",
        0x81,
        V5,
        "not defined",
    ),
]


def cases_for(phase: str | None = None) -> list[tuple[Case, int]]:
    """(case, protocol) pairs, optionally of one phase."""
    return [(c, p) for c in CASES if phase in (None, c.phase) for p in c.protocols]
