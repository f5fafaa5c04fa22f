"""A scripted fake broker: it accepts the client's connection and sends exact bytes.

Real brokers rarely send what a client must refuse; this one sends whatever a test says and
records what the client sends back, so each case of the conformance suite can check the
client's answer byte by byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ingest.mqtt.codec import varint

CONNECT, PUBLISH, PUBACK, SUBSCRIBE, PINGREQ, DISCONNECT = 1, 3, 4, 8, 12, 14


def packet(first: int, body: bytes) -> bytes:
    """A packet from its first byte and body (the remaining length is computed)."""
    return bytes([first]) + varint(len(body)) + body


def string(text: str | bytes) -> bytes:
    """An MQTT length-prefixed string (bytes are sent as they are, valid or not)."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(raw)) + raw


def connack(protocol: int, properties: bytes = b"", *, flags: int = 0, code: int = 0) -> bytes:
    """A CONNACK; on MQTT 5 with ``properties`` (already encoded, without their length)."""
    if protocol == 4:
        return packet(0x20, bytes([flags, code]))
    return packet(0x20, bytes([flags, code]) + varint(len(properties)) + properties)


def suback(protocol: int, packet_id: int, *codes: int) -> bytes:
    """A SUBACK answering ``packet_id``."""
    props = b"\x00" if protocol == 5 else b""
    return packet(0x90, struct.pack(">H", packet_id) + props + bytes(codes))


def publish(
    protocol: int,
    topic: str | bytes,
    payload: bytes,
    *,
    packet_id: int = 1,
    qos: int = 1,
    first: int | None = None,
    properties: bytes = b"",
) -> bytes:
    """A PUBLISH, with ``first`` overriding the first byte (flags) when a test breaks it."""
    body = string(topic) + (struct.pack(">H", packet_id) if qos else b"")
    if protocol == 5:
        body += varint(len(properties)) + properties
    return packet(0x30 | qos << 1 if first is None else first, body + payload)


@dataclass
class Received:
    """A packet the client sent."""

    kind: int
    flags: int
    body: bytes


class Session:
    """One client connection, as the scripted broker sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received: list[Received] = []

    async def read(self, timeout: float = 5.0) -> Received | None:
        """The client's next packet, or None when it closed the connection."""
        try:
            first = (await asyncio.wait_for(self.reader.readexactly(1), timeout))[0]
            length, shift = 0, 0
            while True:
                byte = (await self.reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            body = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        got = Received(first >> 4, first & 0x0F, body)
        self.received.append(got)
        return got

    async def expect(self, kind: int, timeout: float = 5.0) -> Received:
        """The client's next packet, which must be of ``kind``; PINGREQs are answered."""
        while True:
            got = await self.read(timeout)
            assert got is not None, f"the client closed instead of sending packet type {kind}"
            if got.kind == PINGREQ and kind != PINGREQ:
                self.send(b"\xd0\x00")
                continue
            assert got.kind == kind, f"expected packet type {kind}, got {got.kind}"
            return got

    async def quiet(self, seconds: float) -> bool:
        """Whether the client sends nothing (and keeps the connection) for ``seconds``."""
        try:
            first = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        return not first and False

    def send(self, data: bytes) -> None:
        """Write bytes to the client."""
        self.writer.write(data)

    async def ending(self, timeout: float = 5.0) -> list[Received]:
        """Everything the client sends until it closes; fails if it does not close in time."""
        sent: list[Received] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, "the client did not close the connection"
            got = await self.read(left)
            if got is None:
                return sent
            sent.append(got)

    def close(self) -> None:
        """Drop the connection from the broker's side."""
        with contextlib.suppress(Exception):
            self.writer.close()


class ScriptedBroker:
    """A listening socket on loopback; each accepted connection is queued as a :class:`Session`."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._sessions: asyncio.Queue[Session] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._all: list[Session] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(reader, writer)
        self._all.append(session)
        await self._sessions.put(session)

    async def session(self, timeout: float = 5.0) -> Session:
        """The next connection the client makes."""
        return await asyncio.wait_for(self._sessions.get(), timeout)

    async def __aenter__(self) -> ScriptedBroker:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in self._all:
            session.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@contextlib.asynccontextmanager
async def scripted_broker() -> AsyncIterator[ScriptedBroker]:
    """A :class:`ScriptedBroker` for the length of a ``with`` block."""
    async with ScriptedBroker() as broker:
        yield broker
