"""The service fixtures themselves: real processes, reachable, with the right extensions."""

from __future__ import annotations

import psycopg

from ingest.schema import available
from tests.services.handles import Database


def test_timescaledb_database_has_a_hypertable(timescale_database: Database) -> None:
    with psycopg.connect(timescale_database.dsn) as conn:
        row = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables"
        ).fetchone()
    assert row == ("readings",)


def test_both_databases_migrate(database: Database) -> None:
    with psycopg.connect(database.dsn) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        has_tsdb = conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
    assert versions == [(m.version,) for m in available()]
    assert has_tsdb == ((1,) if database.kind == "timescaledb" else (0,))
