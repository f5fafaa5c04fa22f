"""Schema migrations: idempotent, recorded, guarded against edits, TimescaleDB on demand."""

from __future__ import annotations

import importlib

import psycopg
import pytest

from ingest.schema import Migration, MigrationError, available, migrate
from tests.services.handles import Database

runner = importlib.import_module("ingest.schema.migrate")  # the module; `migrate` is its function


def test_running_migrations_again_does_nothing(database: Database) -> None:
    assert migrate(database.dsn, timescaledb="auto") == []
    with psycopg.connect(database.dsn) as conn:
        rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    assert [(v, n) for v, n, _ in rows] == [(m.version, m.name) for m in available()]
    assert [c for _, _, c in rows] == [m.checksum for m in available()]


def test_a_changed_grants_file_is_applied_again_and_only_then(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grants live in one repeatable file: a new grant is one line, applied on the next start."""
    [grants] = runner.repeatable()
    with psycopg.connect(database.dsn) as conn:
        conn.execute(
            "DO $$ BEGIN CREATE ROLE grants_probe NOLOGIN;"
            " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
    more = grants.sql + "\nGRANT SELECT ON city_settings TO grants_probe;\n"
    changed = Migration(grants.version, grants.name, more)
    monkeypatch.setattr(runner, "repeatable", lambda: [changed])

    def may_read() -> bool:
        with psycopg.connect(database.dsn) as conn:
            row = conn.execute(
                "SELECT has_table_privilege('grants_probe', 'city_settings', 'SELECT')"
            ).fetchone()
        return bool(row and row[0])

    assert not may_read()
    assert migrate(database.dsn) == []  # no numbered migration; the grants file ran again
    assert may_read()
    with psycopg.connect(database.dsn) as conn:
        recorded = conn.execute(
            "SELECT name, checksum, applied_at FROM schema_repeatable"
        ).fetchall()
        assert [(n, c) for n, c, _ in recorded] == [("grants", changed.checksum)]
        conn.execute("REVOKE SELECT ON city_settings FROM grants_probe")
    migrate(database.dsn)  # unchanged since: not run again
    assert not may_read()
    with psycopg.connect(database.dsn) as conn:
        conn.execute("DROP OWNED BY grants_probe")


def test_an_edited_migration_is_refused(database: Database) -> None:
    with psycopg.connect(database.dsn) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="was edited after it was applied"):
        migrate(database.dsn)


def test_requiring_timescaledb_on_plain_postgres_fails_clearly(embedded_admin_dsn: str) -> None:
    with pytest.raises(MigrationError, match="TimescaleDB is required"):
        migrate(embedded_admin_dsn, timescaledb="require")
