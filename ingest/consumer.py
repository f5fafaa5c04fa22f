"""The MQTT side of ingest: a persistent session, acknowledgements after commit, reconnection.

Ingest acknowledges a message only after the batch holding it is committed, so the broker keeps
every message that is not yet durable and redelivers it after a crash or a reconnection. The
broker's in-flight window (MQTT 5 Receive Maximum, or the broker's own limit on MQTT 3.1.1) is
the backpressure: when writes stall, unacknowledged messages fill it and the broker stops
sending until acknowledgements resume.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Callable, Iterator
from contextlib import suppress

from edge.backoff import Backoff
from edge.topics import STATUS_ALL, TELEMETRY_ALL, shared
from ingest.config import IngestConfig
from ingest.mqtt import Message, MqttClient, MqttError

log = logging.getLogger(__name__)

Deliver = Callable[[list[Message], int], bool]  # messages, connection generation -> keep reading?


class Consumer:
    """Receives telemetry and status messages and hands them over in arrival order.

    Args:
        config: Broker settings.
        deliver: Called with each run of messages read from the socket and the connection's
            generation; returning False pauses reading until :meth:`resume` is called.
        on_connection: Told True on each connection, False when it ends.
        address: The broker, ``(host, port)``; ``config``'s first by default.
        generations: Where connection generations come from. Consumers of several brokers
            share one source, so a generation names one connection of one of them, and each
            acknowledges only its own.
    """

    def __init__(
        self,
        config: IngestConfig,
        deliver: Deliver,
        on_connection: Callable[[bool], None] | None = None,
        *,
        address: tuple[str, int] | None = None,
        generations: Iterator[int] | None = None,
    ) -> None:
        self._config = config
        self._deliver = deliver
        self._on_connection = on_connection or (lambda up: None)
        self.address = address or (config.broker_host, config.broker_port)
        self._generations = generations or itertools.count(1)
        self._client: MqttClient | None = None
        self._generation = 0  # new per connection; acks from an older one are never sent
        self._reconnect = asyncio.Event()
        self.connected = asyncio.Event()
        self.connections = 0

    def reconnect(self) -> None:
        """Drop the connection and make a new one (the watchdog's remedy for a silent session)."""
        self._reconnect.set()

    def ack(self, tokens: list[tuple[int, int, int]]) -> None:
        """Acknowledge committed messages: (generation, packet id, QoS) of each.

        A PUBACK on a newer connection could acknowledge a different message with the same
        packet id, so acknowledgements for an older connection are dropped: the broker
        redelivers those messages on the new one, and the database's key makes that harmless.
        """
        client, current = self._client, self._generation
        if client is None or not client.connected:
            return
        ids = [pid for generation, pid, qos in tokens if qos and generation == current]
        if ids:
            with suppress(MqttError):
                client.ack(ids)

    def resume(self) -> None:
        """Read from the broker again after ``deliver`` asked for a pause."""
        if self._client is not None:
            self._client.resume_reading()

    def _filters(self) -> list[str]:
        group = self._config.shared_group
        return [shared(group, f) if group else f for f in (TELEMETRY_ALL, STATUS_ALL)]

    def _new_client(self) -> MqttClient:
        config = self._config
        generation = self._generation

        def on_messages(messages: list[Message]) -> None:
            if not self._deliver(messages, generation) and self._client is not None:
                self._client.pause_reading()

        tls = None
        if config.broker_ca_file:
            tls = ssl.create_default_context(cafile=config.broker_ca_file)
        return MqttClient(
            host=self.address[0],
            port=self.address[1],
            client_id=config.client_id,
            on_messages=on_messages,
            protocol=5 if config.mqtt_protocol == "5" else 4,
            username=config.broker_username,
            password=config.broker_password,
            tls=tls,
            keepalive=config.keepalive_s,
            session_expiry=config.session_expiry_s,
            receive_maximum=config.receive_maximum,
            max_packet_size=config.max_packet_bytes,
        )

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
            self._generation = next(self._generations)
            client = self._client = self._new_client()
            try:
                await client.connect()
                await client.subscribe(self._filters(), qos=1)
                self.connections += 1
                log.info(
                    "connected to %s:%d as %s (session %s)",
                    *self.address,
                    self._config.client_id,
                    "resumed" if client.session_present else "new",
                )
                self.connected.set()
                self._on_connection(True)
                backoff.reset()
                self._reconnect.clear()
                await _first(stopping, self._reconnect, client)
                if stopping.is_set():
                    with suppress(TimeoutError):
                        await asyncio.wait_for(drained.wait(), drain_timeout_s)
                    if not drained.is_set():
                        log.warning(
                            "stopping before every message was written; the broker keeps them"
                        )
                elif not self._reconnect.is_set():
                    await client.closed()  # raises the reason it ended
                else:
                    log.warning("reconnecting to the broker on request")
            except MqttError as exc:
                await client.disconnect()  # now, not after the backoff below
                if stopping.is_set():
                    break
                delay = backoff.next_delay()
                log.warning(
                    "connection to %s:%d lost (%s); retrying in %.1fs", *self.address, exc, delay
                )
                with suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
            finally:
                await client.disconnect()  # whatever ended the connection: no stray socket
                self.connected.clear()
                self._on_connection(False)
        self._client = None


async def _first(stopping: asyncio.Event, reconnect: asyncio.Event, client: MqttClient) -> None:
    """Return when the service stops, a reconnect is asked for, or the connection ends."""
    waits = [
        asyncio.ensure_future(stopping.wait()),
        asyncio.ensure_future(reconnect.wait()),
        asyncio.ensure_future(client.closed()),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            if wait.done() and not wait.cancelled():
                wait.exception()  # seen here; closed() is awaited again for its reason
            wait.cancel()
