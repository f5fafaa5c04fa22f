"""The MQTT side of ingest: a persistent session, manual acknowledgements, reconnection.

Ingest acknowledges a message only after the batch holding it is committed, so the broker keeps
every message that is not yet durable and redelivers it after a crash or a reconnection. paho can
hold back PUBACKs (``manual_ack``); aiomqtt does not expose it yet (empicano/aiomqtt#345), so the
two calls below reach its paho client, in this one place.

The broker's in-flight window (MQTT 5 Receive Maximum) is the backpressure: when writes stall,
unacknowledged messages pile up to the window and the broker stops sending until acks resume.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
import paho.mqtt.client as paho_mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.topics import STATUS_ALL, TELEMETRY_ALL, shared
from ingest.backoff import Backoff
from ingest.config import IngestConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message and the way to acknowledge it once it is durable."""

    topic: str
    payload: bytes
    received_at: datetime
    ack: Callable[[], None]


class Consumer:
    """Receives telemetry and status messages and hands them over in arrival order.

    Args:
        config: Broker settings.
        deliver: Awaited with each message; it blocks while the pipeline is full, which stops
            reading from the broker (backpressure).
    """

    def __init__(
        self,
        config: IngestConfig,
        deliver: Callable[[Inbound], Awaitable[None]],
        on_connection: Callable[[bool], None] | None = None,
    ) -> None:
        self._config = config
        self._deliver = deliver
        self._on_connection = on_connection or (lambda up: None)
        self._generation = 0  # bumped per connection; acks from an older one are never sent
        self._reconnect = asyncio.Event()
        self.connected = asyncio.Event()
        self.connections = 0

    def reconnect(self) -> None:
        """Drop the connection and make a new one (the watchdog's remedy for a silent session)."""
        self._reconnect.set()

    def _client(self) -> aiomqtt.Client:
        config = self._config
        v5 = config.mqtt_protocol == "5"
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = config.session_expiry_s
            properties.ReceiveMaximum = config.receive_maximum
        tls = (
            ssl.create_default_context(cafile=config.broker_ca_file)
            if config.broker_ca_file
            else None
        )
        client = aiomqtt.Client(
            config.broker_host,
            config.broker_port,
            username=config.broker_username,
            password=config.broker_password,
            identifier=config.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            # A persistent session either way: the broker queues for ingest while it is away.
            clean_session=None if v5 else False,
            clean_start=False if v5 else paho_mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            tls_context=tls,
            keepalive=30,
            timeout=10,
            # Without Receive Maximum (MQTT 3.1.1) the broker's own in-flight limit applies.
            max_queued_incoming_messages=0,
        )
        client._client.manual_ack_set(True)  # see the module docstring
        return client

    def _ack_for(self, client: aiomqtt.Client, message: aiomqtt.Message) -> Callable[[], None]:
        generation = self._generation
        mid, qos = message.mid, message.qos

        def ack() -> None:
            # A PUBACK on a newer connection could acknowledge a different message with the same
            # id; the broker redelivers this one on the new connection instead.
            if qos > 0 and generation == self._generation:
                client._client.ack(mid, qos)  # see the module docstring

        return ack

    def _filters(self) -> list[str]:
        group = self._config.shared_group
        return [shared(group, f) if group else f for f in (TELEMETRY_ALL, STATUS_ALL)]

    async def run(
        self, stopping: asyncio.Event, drained: asyncio.Event, drain_timeout_s: float = 10.0
    ) -> None:
        """Receive until ``stopping`` is set, reconnecting with backoff after any failure.

        After ``stopping``, the connection stays open until ``drained`` is set (the pipeline has
        written and acknowledged what it holds) or ``drain_timeout_s`` passes; anything still
        unacknowledged then is redelivered by the broker to the next session.
        """
        backoff = Backoff(initial=0.5, maximum=30.0)
        while not stopping.is_set():
            client = self._client()
            try:
                async with client:
                    self._generation += 1
                    self.connections += 1
                    for topic_filter in self._filters():
                        await client.subscribe(topic_filter, qos=1)
                    log.info(
                        "connected to %s:%d as %s",
                        self._config.broker_host,
                        self._config.broker_port,
                        self._config.client_id,
                    )
                    self.connected.set()
                    self._on_connection(True)
                    backoff.reset()
                    self._reconnect.clear()
                    await self._receive(client, stopping)
                    if not stopping.is_set():
                        log.warning("reconnecting to the broker on request")
                        self.connected.clear()
                        continue
                    try:
                        await asyncio.wait_for(drained.wait(), drain_timeout_s)
                    except TimeoutError:
                        log.warning(
                            "stopping before every message was written; the broker keeps them"
                        )
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self._on_connection(False)
                self._generation += 1
                if stopping.is_set():
                    break
                delay = backoff.next_delay()
                log.warning("broker connection lost (%s); retrying in %.1fs", exc, delay)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
        self.connected.clear()
        self._on_connection(False)

    async def _receive(self, client: aiomqtt.Client, stopping: asyncio.Event) -> None:
        """Deliver messages until ``stopping`` or a reconnect request; raises on a lost session."""
        stop = asyncio.ensure_future(_first(stopping, self._reconnect))
        try:
            messages = client.messages
            while True:
                nxt = asyncio.ensure_future(anext(messages))
                done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    return
                message = nxt.result()
                payload = message.payload
                if not isinstance(payload, bytes):
                    payload = bytes(str(payload), "utf-8")
                await self._deliver(
                    Inbound(
                        str(message.topic),
                        payload,
                        datetime.now(UTC),
                        self._ack_for(client, message),
                    )
                )
        finally:
            stop.cancel()


async def _first(*events: asyncio.Event) -> None:
    """Return as soon as any of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
