"""Alert changes out on MQTT, from the ``alert_events`` outbox.

Each event is published at QoS 1 under ``{prefix}/{site}/{device}/{kind}`` and marked published
only after the broker's PUBACK, inside the transaction that claimed it (``FOR UPDATE SKIP LOCKED``,
so two workers never send the same event). A broker outage delays publication; it loses nothing.
"""

from __future__ import annotations

import json
import logging
import ssl
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

from ingest.mqtt import MqttClient, MqttError
from processing.alerts import Pool

log = logging.getLogger(__name__)

_CLAIM = (
    "SELECT e.event_id, e.action, e.actor, e.comment, e.at, a.alert_id, a.stream_id,"
    " a.device_id, a.site, a.kind, a.severity, a.state, a.message, a.score, a.value,"
    " a.started_at, a.opened_at FROM alert_events e JOIN alerts a USING (alert_id)"
    " WHERE e.published_at IS NULL ORDER BY e.event_id LIMIT %s FOR UPDATE OF e SKIP LOCKED"
)
_MARK = "UPDATE alert_events SET published_at = now() WHERE event_id = ANY(%s)"
_FIELDS = [
    "event_id",
    "action",
    "actor",
    "comment",
    "at",
    "alert_id",
    "stream_id",
    "device",
    "site",
    "kind",
    "severity",
    "state",
    "message",
    "score",
    "value",
    "started_at",
    "opened_at",
]


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """Where and as whom alerts are published."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    protocol: int = 5
    fallbacks: tuple[tuple[str, int], ...] = ()  # the city's other brokers, same account


def alert_payload(row: tuple[object, ...]) -> tuple[str, bytes]:
    """(topic suffix, JSON payload) for one claimed outbox row."""
    record = dict(zip(_FIELDS, row, strict=True))
    for key, value in record.items():
        if isinstance(value, datetime):
            record[key] = value.isoformat(timespec="milliseconds")
    topic = f"{record['site']}/{record['device']}/{record['kind']}"
    return topic, json.dumps(record, separators=(",", ":")).encode()


class AlertPublisher:
    """Publishes the outbox; one connection, reopened when it drops.

    With several brokers in the city a lost connection is reopened to the next one, so alerts
    do not wait for a lost broker to return.

    Args:
        account: Broker and credentials.
        prefix: Topic prefix, e.g. ``city/alerts/v1``.
    """

    def __init__(self, account: BrokerAccount, prefix: str) -> None:
        self.account = account
        self.prefix = prefix
        self._client: MqttClient | None = None
        self._addresses = ((account.host, account.port), *account.fallbacks)
        self._current = 0
        self.published = 0

    async def publish_pending(self, pool: Pool, *, limit: int = 500) -> int:
        """Publish up to ``limit`` unpublished events; returns how many went out.

        Raises:
            MqttError: The broker is unreachable or refused; the events stay in the outbox.
        """
        failure: MqttError | None = None
        async with pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(_CLAIM, (limit,))
            rows = await cursor.fetchall()
            if not rows:
                return 0
            sent: list[int] = []
            try:
                client = await self._connected()
                for row in rows:
                    suffix, payload = alert_payload(row)
                    await client.publish(f"{self.prefix}/{suffix}", payload)
                    sent.append(int(str(row[0])))
            except MqttError as exc:  # mark what went out, keep the rest for the next attempt
                failure = exc
                self._move_on()
            if sent:
                await conn.execute(_MARK, (sent,))
        self.published += len(sent)
        if failure is not None:
            raise failure
        return len(sent)

    def _move_on(self) -> None:
        """Forget the connection; the next attempt goes to the next broker of the list."""
        self._client = None
        self._current = (self._current + 1) % len(self._addresses)

    async def _connected(self) -> MqttClient:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is not None:  # it dropped since the last round
            self._move_on()
        account = self.account
        host, port = self._addresses[self._current]
        client = MqttClient(
            host=host,
            port=port,
            client_id=account.client_id,
            on_messages=lambda _messages: None,
            protocol=account.protocol,
            username=account.username,
            password=account.password,
            tls=account.tls,
            clean=True,  # the outbox is the session: nothing is left on the broker between runs
        )
        try:
            await client.connect()
        except MqttError:
            self._move_on()
            raise
        self._client = client
        log.info("publishing alerts to %s:%d under %s", host, port, self.prefix)
        return client

    async def close(self) -> None:
        """Disconnect cleanly."""
        if self._client is not None:
            client, self._client = self._client, None
            with suppress(MqttError):
                await client.disconnect()
