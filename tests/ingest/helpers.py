"""Shared helpers for ingest tests: registering devices, counting rows, building payloads."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from psycopg.conninfo import make_conninfo

from edge.contract import Batch, Reading, encode_batch
from ingest.registry import DeviceRecord, register_devices
from tests.services.handles import BrokerAddress


def register(dsn: str, devices: Iterable[tuple[str, str]], family: str = "air") -> None:
    """Register (device, site) pairs."""
    register_devices(
        dsn,
        [DeviceRecord(device, site, family, f"test {device}") for device, site in devices],  # type: ignore[arg-type]
    )


def stored_keys(dsn: str) -> list[tuple[str, str, str, datetime, float]]:
    """Every stored reading as (device, sensor, metric, ts, value), sorted."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT s.device_id, s.sensor, s.metric, r.ts, r.value FROM readings r"
            " JOIN streams s USING (stream_id) ORDER BY 1, 2, 3, 4"
        ).fetchall()
    return [(str(a), str(b), str(c), d, float(e)) for a, b, c, d, e in rows]


def rejection_rows(dsn: str) -> list[tuple[str | None, str, int | None]]:
    """Stored rejections as (device, reason, reading index), in arrival order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT device_id, reason, reading_index FROM rejections ORDER BY id"
        ).fetchall()
    return [(a, str(b), c) for a, b, c in rows]


def batch_payload(device: str, seq: int, start: datetime, count: int = 3) -> bytes:
    """A valid telemetry payload with ``count`` PM2.5 readings one second apart."""
    readings = tuple(
        Reading("aq", "pm2_5", 10.0 + i, "ug/m3", start + timedelta(seconds=i))
        for i in range(count)
    )
    return encode_batch(Batch(device, seq, readings, start + timedelta(seconds=count)))


def non_numeric_payload(device: str, seq: int, start: datetime) -> bytes:
    """A payload whose second reading has a string value."""
    body = json.loads(batch_payload(device, seq, start))
    body["readings"][1]["value"] = "twelve"
    return json.dumps(body).encode()


def recent() -> datetime:
    """A timestamp a minute ago, truncated to the second."""
    return (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)


def publish_all(
    broker: BrokerAddress, messages: list[tuple[str, bytes]], retain: bool = False
) -> None:
    """Publish at QoS 1 and wait for every PUBACK (bounded)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [
            client.publish(topic, payload, qos=1, retain=retain) for topic, payload in messages
        ]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def member_of(dsn: str, role: str) -> str:
    """A new login user in the group ``role`` (made by the admin at ``dsn``); its DSN."""
    user = f"{role.removeprefix('smartcity_')}_{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(user), sql.Literal(password), sql.Identifier(role)
            )
        )
    return make_conninfo(dsn, user=user, password=password)
