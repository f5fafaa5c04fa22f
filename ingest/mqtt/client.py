"""An asyncio MQTT connection for a subscriber that acknowledges after processing.

One :class:`MqttClient` is one network connection: :meth:`connect`, :meth:`subscribe`, then
messages arrive through the ``on_messages`` callback in bulk, straight from the socket's
buffer, and :meth:`ack` writes their PUBACKs in bulk. :meth:`closed` completes when the
connection ends, with the reason. Reconnecting is the caller's loop, with a new client.

Every way a connection can end (lost, refused, timed out, closed by the broker, or closed by
this client because the broker broke the protocol) surfaces as :class:`MqttError` from whatever
was waiting, never as a cancellation: a caller catching ``MqttError`` sees every failure.
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
    MAX_PACKET_BYTES,
    PINGREQ_PACKET,
    PINGRESP,
    PUBACK,
    SUBACK,
    Control,
    Message,
    PacketReader,
    encode_connect,
    encode_disconnect,
    encode_pubacks,
    encode_publish,
    encode_subscribe,
)
from ingest.mqtt.errors import (
    MALFORMED_PACKET,
    PROTOCOL_ERROR,
    MqttError,
    MqttProtocolError,
    reason_text,
)
from ingest.mqtt.packets import (
    ConnAck,
    ack_packet_id,
    parse_connack,
    parse_disconnect,
    parse_puback,
    parse_suback,
)

log = logging.getLogger(__name__)

OnMessages = Callable[[list[Message]], None]

_NAMES = {
    1: "CONNECT",
    2: "CONNACK",
    4: "PUBACK",
    5: "PUBREC",
    6: "PUBREL",
    7: "PUBCOMP",
    8: "SUBSCRIBE",
    9: "SUBACK",
    10: "UNSUBSCRIBE",
    11: "UNSUBACK",
    12: "PINGREQ",
    13: "PINGRESP",
    14: "DISCONNECT",
    15: "AUTH",
}


class _Protocol(asyncio.Protocol):
    def __init__(self, client: MqttClient) -> None:
        self._client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._client._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._client._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._lost(exc)


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
        password: Its password; never logged. MQTT 3.1.1 needs a user name with it.
        tls: A TLS context; None for plain TCP.
        keepalive: Seconds; a PINGREQ goes out at half of it, and a broker silent for 1.5 times
            it (while this client is reading) is declared lost. An MQTT 5 broker's Server Keep
            Alive replaces it.
        session_expiry: MQTT 5: how long the broker keeps the session after a disconnect.
        receive_maximum: MQTT 5: unacknowledged QoS 1 messages the broker may send at once.
        clean: Start without a session (and, on 3.1.1, leave none behind): for publishers.
        max_packet_size: The largest packet accepted; declared to MQTT 5 brokers.

    Raises:
        ValueError: An unknown protocol, or a 3.1.1 password without a user name.
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
        clean: bool = False,
        max_packet_size: int = MAX_PACKET_BYTES,
    ) -> None:
        if protocol not in (4, 5):
            raise ValueError("protocol must be 5 or 4 (3.1.1)")
        if protocol == 4 and password is not None and username is None:
            raise ValueError("MQTT 3.1.1 allows a password only with a user name")
        self.host, self.port, self.client_id = host, port, client_id
        self.protocol = protocol
        self._on_messages = on_messages
        self._username, self._password = username, password
        self._tls = tls
        self.keepalive = keepalive
        self._session_expiry = session_expiry
        self._receive_maximum = receive_maximum
        self._clean = clean
        self._max_packet = max_packet_size
        self._reader = PacketReader(protocol, max_packet_size)
        self._transport: asyncio.Transport | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting: dict[tuple[int, int], asyncio.Future[Control]] = {}
        self._next_id = 0
        self._heard = 0.0
        self._paused = False
        self._pinger: asyncio.Task[None] | None = None
        self._quota = asyncio.Semaphore(65_535)
        self.granted: ConnAck | None = None
        self.session_present = False

    @property
    def connected(self) -> bool:
        """Whether the connection is up."""
        return self._transport is not None and not self._closed.done()

    async def connect(self, timeout: float = 10.0) -> bool:
        """Open the connection and wait for the CONNACK; returns whether a session was kept.

        Raises:
            MqttError: Refused (with the broker's reason), unreachable, lost, or no answer
                within ``timeout``.
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
        acknowledged = self._expect(CONNACK, 0)
        self._send_or_lose(
            "CONNECT",
            encode_connect(
                self.client_id,
                protocol=self.protocol,
                keepalive=self.keepalive,
                clean=self._clean,
                username=self._username,
                password=self._password,
                session_expiry=self._session_expiry,
                receive_maximum=self._receive_maximum,
                maximum_packet_size=self._max_packet,
            ),
        )
        await self._answer(acknowledged, timeout, "CONNACK")
        granted = self.granted
        assert granted is not None  # set with the CONNACK
        if granted.server_keepalive is not None:  # [MQTT-3.2.2-21]
            self.keepalive = granted.server_keepalive
        self._quota = asyncio.Semaphore(granted.receive_maximum)  # [MQTT-3.3.4-7]
        if granted.reason_string:
            log.info("broker says on connecting: %s", granted.reason_string)
        if self.keepalive:
            self._pinger = asyncio.create_task(self._keep_alive(), name="mqtt-keepalive")
        self.session_present = granted.session_present
        return self.session_present

    async def subscribe(self, filters: Iterable[str], qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK.

        Raises:
            MqttError: A filter was refused or granted a lower QoS than asked (QoS 0 for a
                QoS 1 request would silently lose messages), shared subscriptions are not
                available, the connection ended, or no answer within ``timeout``.
        """
        wanted = list(filters)
        granted = self.granted
        shared = [f for f in wanted if f.startswith("$share/")]
        if shared and granted is not None and not granted.shared_available:
            raise MqttError(f"the broker does not support shared subscriptions ({shared[0]})")
        packet_id = self._new_id()
        answered = self._expect(SUBACK, packet_id)
        self._send_or_lose(
            "SUBSCRIBE", encode_subscribe(packet_id, wanted, qos=qos, protocol=self.protocol)
        )
        suback = await self._answer(answered, timeout, "SUBACK")
        try:
            codes = parse_suback(suback.body, self.protocol)
            if len(codes) != len(wanted):  # [MQTT-3.8.4-6]
                raise MqttProtocolError(
                    f"SUBACK with {len(codes)} reason codes for {len(wanted)} filters",
                    PROTOCOL_ERROR,
                )
        except MqttProtocolError as exc:
            self._violated(exc)
            raise
        for topic_filter, code in zip(wanted, codes, strict=True):
            if code >= 0x80:
                raise MqttError(
                    f"subscription to {topic_filter} refused: {reason_text(code, self.protocol)}"
                )
            if code < qos:
                raise MqttError(
                    f"subscription to {topic_filter} granted QoS {code} for QoS {qos}: its "
                    "messages would be delivered at most once and never acknowledged"
                )

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK.

        Raises:
            MqttError: Not allowed by what the broker granted (Maximum QoS, Retain Available,
                Maximum Packet Size), refused (for instance by an ACL, on MQTT 5), the
                connection ended, or no PUBACK within ``timeout``.
        """
        granted = self.granted
        if granted is not None:
            if granted.maximum_qos < 1:  # [MQTT-3.2.2-11]
                raise MqttError(f"the broker accepts QoS {granted.maximum_qos} only")
            if retain and not granted.retain_available:  # [MQTT-3.2.2-14]
                raise MqttError("the broker does not accept retained messages")
        async with self._quota:
            packet_id = self._new_id()
            packet = encode_publish(
                topic, payload, qos=1, packet_id=packet_id, protocol=self.protocol, retain=retain
            )
            limit = granted.maximum_packet_size if granted is not None else None
            if limit is not None and len(packet) > limit:  # [MQTT-3.2.2-15]
                raise MqttError(
                    f"a message of {len(packet)} bytes exceeds the broker's maximum "
                    f"packet size of {limit}"
                )
            answered = self._expect(PUBACK, packet_id)
            self._send_or_lose("PUBLISH", packet)
            puback = await self._answer(answered, timeout, "PUBACK")
        try:
            refused = parse_puback(puback.body, self.protocol)
        except MqttProtocolError as exc:
            self._violated(exc)
            raise
        if refused:
            raise MqttError(f"publish to {topic} refused: {refused}")

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
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again."""
        if self._paused:
            # Silence while paused was ours, not the broker's: the keepalive starts afresh.
            self._heard = asyncio.get_running_loop().time()
        self._paused = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # internals ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise MqttError("not connected")
        self._transport.write(data)

    def _send_or_lose(self, what: str, data: bytes) -> None:
        """Write a request whose answer is awaited; if the connection is already gone, say so."""
        try:
            self._write(data)
        except MqttError as exc:
            error = MqttError(f"connection ended before {what} was sent")
            self._finish(error)
            raise error from exc

    def _new_id(self) -> int:
        for _ in range(65_535):
            self._next_id = self._next_id % 65_535 + 1
            key = self._next_id
            if (PUBACK, key) not in self._waiting and (SUBACK, key) not in self._waiting:
                return key
        raise MqttError("every packet identifier is in use")

    def _expect(self, kind: int, key: int) -> asyncio.Future[Control]:
        future: asyncio.Future[Control] = asyncio.get_running_loop().create_future()
        self._waiting[(kind, key)] = future
        return future

    async def _answer(self, future: asyncio.Future[Control], timeout: float, what: str) -> Control:
        await asyncio.wait({future}, timeout=timeout)
        if not future.done():
            error = MqttError(f"no {what} from the broker within {timeout:.0f}s")
            self._fail(error)
            raise error
        try:
            return future.result()
        except MqttError as exc:
            raise MqttError(f"connection ended waiting for {what}: {exc}") from exc

    def _received(self, data: bytes) -> None:
        self._heard = asyncio.get_running_loop().time()
        messages: list[Message] = []
        try:
            for packet in self._reader.feed(data):
                if type(packet) is Message:
                    if self.granted is None:
                        raise MqttProtocolError("PUBLISH before CONNACK", PROTOCOL_ERROR)
                    messages.append(packet)
                else:
                    self._control(packet)  # type: ignore[arg-type]
        except MqttProtocolError as exc:
            self._violated(exc)
            return
        if messages and not self._closed.done():
            self._on_messages(messages)

    def _control(self, packet: Control) -> None:
        kind = packet.kind
        if self.granted is None and kind != CONNACK:  # [MQTT-3.2.0-1]
            raise MqttProtocolError(f"{_NAMES[kind]} before CONNACK", PROTOCOL_ERROR)
        if kind == CONNACK:
            self._connack(packet)
        elif kind in (PUBACK, SUBACK):
            packet_id = ack_packet_id(packet.body, _NAMES[kind])
            future = self._waiting.pop((kind, packet_id), None)
            if future is None:
                raise MqttProtocolError(
                    f"{_NAMES[kind]} for packet identifier {packet_id}, which is not in use",
                    PROTOCOL_ERROR,
                )
            if not future.done():
                future.set_result(packet)
        elif kind == PINGRESP:
            if packet.body:
                raise MqttProtocolError(f"PINGRESP of {len(packet.body)} bytes", MALFORMED_PACKET)
        elif kind == DISCONNECT and self.protocol == 5:
            self._fail(MqttError(f"broker disconnected: {parse_disconnect(packet.body)}"))
        else:  # QoS 2 flow, AUTH never asked for, or a packet only clients send
            raise MqttProtocolError(f"unexpected {_NAMES[kind]} from the broker", PROTOCOL_ERROR)

    def _connack(self, packet: Control) -> None:
        if self.granted is not None:
            raise MqttProtocolError("a second CONNACK", PROTOCOL_ERROR)  # [MQTT-3.2.0-2]
        try:
            self.granted = parse_connack(packet.body, self.protocol, clean=self._clean)
        except MqttProtocolError:
            raise
        except MqttError as refused:
            log.warning("%s:%d refused the connection: %s", self.host, self.port, refused)
            self._fail(refused)
            return
        future = self._waiting.pop((CONNACK, 0), None)
        if future is not None and not future.done():
            future.set_result(packet)

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed.done():
            await asyncio.sleep(self.keepalive / 2)
            silent = loop.time() - self._heard
            if not self._paused and silent > self.keepalive * 1.5:
                self._fail(MqttError(f"no packet from the broker for {silent:.0f}s"))
                return
            with contextlib.suppress(MqttError):
                self._write(PINGREQ_PACKET)

    def _violated(self, error: MqttProtocolError) -> None:
        """The broker broke the protocol: say why (MQTT 5), close, leave the rest unacked."""
        if self._closed.done():
            return
        log.warning(
            "closing the connection to %s:%d: %s (%s)",
            self.host,
            self.port,
            error,
            reason_text(error.reason_code, 5),
        )
        transport = self._transport
        self._finish(error)
        if transport is not None and not transport.is_closing():
            if self.protocol == 5:  # MQTT 5 §4.13: say why; 3.1.1 just closes ([MQTT-4.8.0-1])
                transport.write(encode_disconnect(error.reason_code, 5, str(error)))
            transport.close()

    def _lost(self, exc: Exception | None) -> None:
        self._finish(MqttError(f"connection lost: {exc}" if exc else "closed by the broker"))

    def _fail(self, error: MqttError) -> None:
        self._finish(error)
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
        # Whoever waits for an answer learns why it will not come, as an MqttError.
        reason = error or MqttError("closed by this client")
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(reason)
                future.exception()
        self._waiting.clear()
        if self._pinger is not None and self._pinger is not asyncio.current_task():
            self._pinger.cancel()
