"""Each database role can do its job and nothing it must not."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from edge.topics import telemetry_topic
from tests.ingest.helpers import (
    batch_payload,
    member_of,
    publish_all,
    recent,
    register,
    stored_keys,
)
from tests.ingest.running import eventually, ingest_config, running_ingest
from tests.services.handles import BrokerAddress, Database


def _member_of(database: Database, role: str) -> str:
    return member_of(database.dsn, role)


@pytest.fixture
def planted(database: Database) -> Database:
    """A database with a device, a stream, a reading and an alert in it."""
    register(database.dsn, [("aq-0001", "centre")])
    with psycopg.connect(database.dsn) as conn:
        conn.execute(
            "INSERT INTO streams (device_id, sensor, metric, unit)"
            " VALUES ('aq-0001', 'aq', 'pm2_5', 'ug/m3')"
        )
        conn.execute("INSERT INTO readings VALUES (now(), 1, 5.0)")
        conn.execute(
            "INSERT INTO alerts (stream_id, device_id, site, kind, severity, message, score,"
            " started_at) VALUES (1, 'aq-0001', 'centre', 'spike', 'info', 'x', 0.5, now())"
        )
    return database


def _refused(dsn: str, statement: str) -> bool:
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
    return False


@pytest.mark.parametrize(
    ("role", "forbidden"),
    [
        ("smartcity_planner", "SELECT * FROM readings"),  # views only
        ("smartcity_planner", "SELECT * FROM devices"),
        ("smartcity_planner", "INSERT INTO readings VALUES (now(), 1, 1)"),
        ("smartcity_planner", "UPDATE alerts SET state = 'resolved'"),
        ("smartcity_dashboard", "INSERT INTO readings VALUES (now() - interval '1 h', 1, 1)"),
        ("smartcity_dashboard", "DELETE FROM alerts"),
        ("smartcity_dashboard", "UPDATE alerts SET message = 'rewritten'"),
        ("smartcity_dashboard", "DELETE FROM readings"),
        ("smartcity_ingest", "UPDATE readings SET value = 0"),  # history is not rewritten
        ("smartcity_ingest", "DELETE FROM alerts"),
        ("smartcity_ingest", "DELETE FROM alert_events"),
        ("smartcity_ingest", "TRUNCATE readings"),
        ("smartcity_ingest", "DROP TABLE rejections"),
        ("smartcity_ingest", "SELECT * FROM users"),
        ("smartcity_ingest", "UPDATE detection_feed SET vals = ''"),  # what was committed stays
        ("smartcity_dashboard", "SELECT * FROM detection_feed"),
        ("smartcity_dashboard", "DELETE FROM users"),
        ("smartcity_dashboard", "UPDATE users SET name = 'someone-else'"),
        ("smartcity_dashboard", "DELETE FROM audit_log"),
        ("smartcity_dashboard", "UPDATE audit_log SET actor = 'nobody'"),
        ("smartcity_dashboard", "UPDATE api_tokens SET role = 'admin'"),
        ("smartcity_dashboard", "DELETE FROM detector_state"),
        ("smartcity_api", "DELETE FROM audit_log"),
        ("smartcity_api", "UPDATE api_tokens SET role = 'admin'"),
        ("smartcity_api", "SELECT * FROM users"),
        ("smartcity_api", "INSERT INTO readings VALUES (now(), 1, 1)"),
        ("smartcity_planner", "SELECT * FROM api_tokens"),
    ],
)
def test_a_role_cannot_do_what_it_must_not(planted: Database, role: str, forbidden: str) -> None:
    assert _refused(_member_of(planted, role), forbidden)


def test_planners_read_the_documented_views(planted: Database) -> None:
    dsn = _member_of(planted, "smartcity_planner")
    with psycopg.connect(dsn) as conn:
        for view in ("devices", "streams", "readings", "hourly", "daily", "minutely", "alerts"):
            conn.execute(f"SELECT * FROM planner_{view} LIMIT 1").fetchall()
        assert conn.execute("SELECT count(*) FROM planner_readings").fetchone() == (1,)


def test_the_dashboard_reads_and_acknowledges(planted: Database) -> None:
    dsn = _member_of(planted, "smartcity_dashboard")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (1,)
        conn.execute(
            "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(),"
            " acknowledged_by = 'ops' WHERE alert_id = 1"
        )
        conn.execute(
            "INSERT INTO alert_events (alert_id, action, actor) VALUES (1, 'acknowledged', 'ops')"
        )


async def test_ingest_runs_on_its_role_alone(
    broker: BrokerAddress, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Migrations and retention stay with the schema's owner; everything else works."""
    caplog.set_level(logging.WARNING)
    register(database.dsn, [("aq-0401", "east")])
    dsn = _member_of(database, "smartcity_ingest")
    config = ingest_config(broker, dsn, rollup_every_s=0.2, rollup_settle_s=0, retention_every_s=0)
    async with running_ingest(config):
        message = (telemetry_topic("east", "aq-0401"), batch_payload("aq-0401", 1, recent()))
        await asyncio.to_thread(publish_all, broker, [message])

        def stored_and_rolled_up() -> bool:
            with psycopg.connect(database.dsn) as conn:
                rolled = conn.execute("SELECT coalesce(sum(n), 0) FROM rollup_1d").fetchone()
            return len(stored_keys(database.dsn)) == 3 and rolled == (3,)

        assert await eventually(stored_and_rolled_up)
    assert "permission denied" not in caplog.text  # detector checkpoints at stop included
    with psycopg.connect(database.dsn) as conn:
        fed = conn.execute(
            "SELECT count(*) FILTER (WHERE read_to <> '0'), count(*) FILTER (WHERE owner IS NULL)"
            " FROM detection_partitions"
        ).fetchone()
        left = conn.execute("SELECT count(*) FROM detection_feed").fetchone()
    # Detection read the feed, checkpointed, pruned what it had read and released everything.
    assert fed == (1, 16)
    assert left == (0,)
