"""Schema migrations: idempotent, recorded, guarded against edits, TimescaleDB on demand."""

from __future__ import annotations

import psycopg
import pytest

from ingest.schema import MigrationError, available, migrate
from tests.conftest import Database


def test_running_migrations_again_does_nothing(database: Database) -> None:
    assert migrate(database.dsn, timescaledb="auto") == []
    with psycopg.connect(database.dsn) as conn:
        rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    assert [(v, n) for v, n, _ in rows] == [(m.version, m.name) for m in available()]
    assert [c for _, _, c in rows] == [m.checksum for m in available()]


def test_an_edited_migration_is_refused(database: Database) -> None:
    with psycopg.connect(database.dsn) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="was edited after it was applied"):
        migrate(database.dsn)


def test_requiring_timescaledb_on_plain_postgres_fails_clearly(embedded_admin_dsn: str) -> None:
    with pytest.raises(MigrationError, match="TimescaleDB is required"):
        migrate(embedded_admin_dsn, timescaledb="require")
