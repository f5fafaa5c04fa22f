"""An asyncio MQTT connection for a subscriber that acknowledges after processing.

One :class:`MqttClient` is one network connection: :meth:`connect`, :meth:`subscribe`, then
messages arrive through the ``on_messages`` callback in bulk, straight from the socket's
buffer, and :meth:`ack` writes their PUBACKs in bulk. :meth:`closed` completes when the
connection ends, with the reason. Reconnecting is the caller's loop, with a new client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterable

from ingest.mqtt.codec import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    PINGRESP,
    PUBACK,
    SUBACK,
    Control,
    Message,
    MqttError,
    MqttProtocolError,
    PacketReader,
    encode_connect,
    encode_pubacks,
    encode_publish,
    encode_subscribe,
    parse_connack,
    parse_disconnect,
    parse_suback,
    reason_text,
)

log = logging.getLogger(__name__)

OnMessages = Callable[[list[Message]], None]


class _Protocol(asyncio.Protocol):
    def __init__(self, client: MqttClient) -> None:
        self._client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._client._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._client._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._lost(exc)

    def pause_writing(self) -> None:
        self._client._writable.clear()

    def resume_writing(self) -> None:
        self._client._writable.set()


class MqttClient:
    """One MQTT connection (MQTT 5 or 3.1.1) for a persistent-session subscriber.

    Args:
        host: Broker host.
        port: Broker port.
        client_id: Stable client id: the broker keeps the session under it.
        on_messages: Called (on the event loop, synchronously) with each run of PUBLISH
            packets decoded from one read of the socket. Must not block.
        protocol: 5 or 4 (MQTT 3.1.1).
        username: Broker account.
        password: Its password; never logged.
        tls: A TLS context; None for plain TCP.
        keepalive: Seconds; a PINGREQ goes out at half of it, and a broker silent for 1.5 times
            it is declared lost.
        session_expiry: MQTT 5: how long the broker keeps the session after a disconnect.
        receive_maximum: MQTT 5: unacknowledged QoS 1 messages the broker may send at once.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        on_messages: OnMessages,
        protocol: int = 5,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        keepalive: int = 30,
        session_expiry: int = 0,
        receive_maximum: int = 65_535,
    ) -> None:
        if protocol not in (4, 5):
            raise ValueError("protocol must be 5 or 4 (3.1.1)")
        self.host, self.port, self.client_id = host, port, client_id
        self.protocol = protocol
        self._on_messages = on_messages
        self._username, self._password = username, password
        self._tls = tls
        self._keepalive = keepalive
        self._session_expiry = session_expiry
        self._receive_maximum = receive_maximum
        self._reader = PacketReader(protocol)
        self._transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting: dict[int, asyncio.Future[Control]] = {}  # CONNACK is 0, SUBACKs by id
        self._next_id = 0
        self._heard = 0.0
        self._pinger: asyncio.Task[None] | None = None
        self.session_present = False

    @property
    def connected(self) -> bool:
        """Whether the connection is up."""
        return self._transport is not None and not self._closed.done()

    async def connect(self, timeout: float = 10.0) -> bool:
        """Open the connection and wait for the CONNACK; returns whether a session was kept.

        Raises:
            MqttError: Refused, unreachable, or no answer within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self),
                    self.host,
                    self.port,
                    ssl=self._tls,
                    server_hostname=self.host if self._tls else None,
                ),
                timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise MqttError(f"cannot reach {self.host}:{self.port}: {exc or 'timeout'}") from exc
        self._heard = loop.time()
        acknowledged = self._expect(0)
        self._write(
            encode_connect(
                self.client_id,
                protocol=self.protocol,
                keepalive=self._keepalive,
                clean=False,
                username=self._username,
                password=self._password,
                session_expiry=self._session_expiry,
                receive_maximum=self._receive_maximum,
            )
        )
        connack = await self._answer(acknowledged, timeout, "CONNACK")
        try:
            self.session_present = parse_connack(connack.body, self.protocol)
        except MqttError:
            self._abort()
            raise
        if self._keepalive:
            self._pinger = asyncio.create_task(self._keep_alive(), name="mqtt-keepalive")
        return self.session_present

    async def subscribe(self, filters: Iterable[str], qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK.

        Raises:
            MqttError: A filter was refused, or no answer within ``timeout``.
        """
        wanted = list(filters)
        self._next_id = self._next_id % 65_535 + 1
        packet_id = self._next_id
        answered = self._expect(packet_id)
        self._write(encode_subscribe(packet_id, wanted, qos=qos, protocol=self.protocol))
        suback = await self._answer(answered, timeout, "SUBACK")
        _, codes = parse_suback(suback.body, self.protocol)
        refused = [f for f, code in zip(wanted, codes, strict=False) if code >= 0x80]
        if refused or len(codes) != len(wanted):
            raise MqttError(f"subscription refused for {refused or wanted}: codes {codes}")

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK.

        Raises:
            MqttError: Refused (for instance by an ACL, on MQTT 5), or no PUBACK within ``timeout``.
        """
        self._next_id = self._next_id % 65_535 + 1
        packet_id = self._next_id
        answered = self._expect(packet_id)
        self._write(
            encode_publish(
                topic, payload, qos=1, packet_id=packet_id, protocol=self.protocol, retain=retain
            )
        )
        puback = await self._answer(answered, timeout, "PUBACK")
        if self.protocol == 5 and len(puback.body) > 2 and puback.body[2] >= 0x80:
            raise MqttError(f"publish to {topic} refused: {reason_text(puback.body[2], 5)}")

    def ack(self, packet_ids: Iterable[int]) -> None:
        """Acknowledge received QoS 1 messages (one write for all of them)."""
        data = encode_pubacks(packet_ids)
        if data and self.connected:
            self._write(data)

    async def closed(self) -> None:
        """Wait until the connection ends.

        Raises:
            MqttError: Why it ended, unless it was :meth:`disconnect`.
        """
        await asyncio.shield(self._closed)

    async def disconnect(self) -> None:
        """Close cleanly (DISCONNECT, then close); the session stays with the broker."""
        if self.connected:
            self._write(DISCONNECT_PACKET)
            assert self._transport is not None
            self._transport.close()
        self._finish(None)

    def pause_reading(self) -> None:
        """Stop reading from the socket (the broker then holds what it has)."""
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # internals ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise MqttError("not connected")
        self._transport.write(data)

    def _expect(self, key: int) -> asyncio.Future[Control]:
        future: asyncio.Future[Control] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        return future

    async def _answer(self, future: asyncio.Future[Control], timeout: float, what: str) -> Control:
        waits: set[asyncio.Future[Control] | asyncio.Future[None]] = {future, self._closed}
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            return future.result()
        self._abort()
        if self._closed.done() and self._closed.exception() is not None:
            raise MqttError(f"connection lost waiting for {what}") from self._closed.exception()
        raise MqttError(f"no {what} within {timeout:.0f}s")

    def _received(self, data: bytes) -> None:
        self._heard = asyncio.get_running_loop().time()
        try:
            packets = self._reader.feed(data)
        except (MqttProtocolError, IndexError, UnicodeDecodeError) as exc:
            self._fail(MqttProtocolError(f"undecodable packet from the broker: {exc}"))
            return
        messages: list[Message] = []
        for packet in packets:
            if type(packet) is Message:
                messages.append(packet)
            else:
                self._control(packet)  # type: ignore[arg-type]
        if messages:
            self._on_messages(messages)

    def _control(self, packet: Control) -> None:
        kind = packet.kind
        if kind == CONNACK:
            future = self._waiting.pop(0, None)
        elif kind in (SUBACK, PUBACK):
            future = self._waiting.pop(packet.body[0] << 8 | packet.body[1], None)
        elif kind == PINGRESP:
            return
        elif kind == DISCONNECT:
            self._fail(
                MqttError(f"broker disconnected: {parse_disconnect(packet.body, self.protocol)}")
            )
            return
        else:  # PUBREC... answer QoS 2, which this client never uses
            log.debug("ignoring MQTT packet type %d", kind)
            return
        if future is not None and not future.done():
            future.set_result(packet)

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed.done():
            await asyncio.sleep(self._keepalive / 2)
            if loop.time() - self._heard > self._keepalive * 1.5:
                self._fail(MqttError(f"broker silent for {self._keepalive * 1.5:.0f}s"))
                return
            with contextlib.suppress(MqttError):
                self._write(PINGREQ_PACKET)

    def _lost(self, exc: Exception | None) -> None:
        self._finish(MqttError(f"connection lost: {exc or 'closed by the broker'}"))

    def _fail(self, error: MqttError) -> None:
        self._abort()
        self._finish(error)

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _finish(self, error: MqttError | None) -> None:
        if self._closed.done():
            return
        if error is None:
            self._closed.set_result(None)
        else:
            self._closed.set_exception(error)
            # Nobody may be awaiting closed(); mark the exception as seen to keep logs clean.
            self._closed.exception()
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        self._waiting.clear()
        if self._pinger is not None and self._pinger is not asyncio.current_task():
            self._pinger.cancel()
