"""Health, readiness, metrics and the watchdog of a running ingest service."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime

import psycopg
import pytest

from smartcity.cli import main
from tests.ingest.helpers import batch_payload, publish_all, recent, register
from tests.ingest.running import eventually, ingest_config, running_ingest
from tests.services.handles import BrokerAddress, Database


def http(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_health_readiness_and_metrics(
    broker: BrokerAddress, timescale_database: Database, unique_site: str
) -> None:
    dsn = timescale_database.dsn
    register(dsn, [("aq-0001", unique_site)])
    topic = f"city/v1/{unique_site}/aq-0001/telemetry"
    async with running_ingest(ingest_config(broker, dsn)) as service:
        assert service.health is not None
        port = service.health.port
        assert await asyncio.to_thread(http, port, "/healthz") == (200, "alive\n")
        assert await asyncio.to_thread(http, port, "/readyz") == (200, "ready\n")
        await asyncio.to_thread(
            publish_all, broker, [(topic, batch_payload("aq-0001", 1, recent())), (topic, b"{")]
        )
        assert await eventually(lambda: service.stats().readings_stored >= 3)
        assert await eventually(lambda: service.stats().rejected_messages >= 1)
        status, body = await asyncio.to_thread(http, port, "/metrics")
        assert status == 200
        assert "ingest_readings_stored_total 3.0" in body
        assert 'ingest_rejected_total{reason="malformed_json",scope="message"} 1.0' in body
        assert "ingest_broker_connected 1.0" in body
        # Retained status messages of other tests' devices arrive too: at least our two.
        assert "ingest_receive_to_commit_seconds_count" in body
        assert (await asyncio.to_thread(http, port, "/nope"))[0] == 404
        assert (await asyncio.to_thread(http, port, "/metrics", "POST"))[0] == 405


async def test_watchdog_reports_and_reconnects_when_online_devices_fall_silent(
    broker: BrokerAddress,
    timescale_database: Database,
    unique_site: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ingest")
    dsn = timescale_database.dsn
    register(dsn, [("aq-0001", unique_site)])
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE devices SET state = 'online', state_at = %s", (datetime.now(UTC),))
    async with running_ingest(ingest_config(broker, dsn, stall_after_s=1.0)) as service:
        consumer = service.consumer
        assert consumer is not None
        assert await eventually(lambda: service.stalled, timeout_s=10)
        # The stall is the reason, also while the watchdog's reconnection is under way.
        ready, why = service.readiness()
        assert not ready
        assert why.startswith("no telemetry although devices report themselves online")
        assert "no telemetry for" in caplog.text
        assert await eventually(lambda: consumer.connections >= 2, timeout_s=10)


def test_technicians_list_rejections_with_reasons(
    timescale_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = timescale_database.dsn
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO rejections (topic, device_id, reason, detail, reading_index, payload)"
            " VALUES ('t', 'aq-0001', 'non_finite', 'value of pm2_5 is nan', 2, '{}'),"
            " ('t', 'tr-0001', 'malformed_json', 'payload is not JSON', NULL, '{')"
        )
    env = {"CITY_INGEST_DATABASE_URL": dsn}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert main(["rejections", "--device", "aq-0001"]) == 0
    out = capsys.readouterr().out
    assert "aq-0001" in out
    assert "non_finite" in out
    assert "reading 2" in out
    assert "tr-0001" not in out
