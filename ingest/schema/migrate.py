"""Apply the numbered ``NNN_name.sql`` files in this folder once each, in order; then the others.

Each numbered file runs in its own transaction and is recorded in ``schema_migrations`` with a
checksum, so an edited migration is caught instead of silently diverging. Repeatable files (today
``grants.sql``: the roles and their grants) are written to be run any number of times; each runs
again whenever its checksum differs from the one recorded in ``schema_repeatable``. An advisory
lock makes concurrent runners (several ingest workers starting at once) take turns. TimescaleDB
is enabled first when the server has it preloaded; migrations check ``pg_extension`` to use it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import psycopg

from ingest.errors import IngestError
from ingest.schema.zone import set_city_zone

log = logging.getLogger(__name__)

TimescaleMode = Literal["auto", "require", "off"]
_FILE = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")
REPEATABLE = ("grants",)  # run in this order after the numbered migrations
_LOCK_KEY = 0x5C17_0001  # an arbitrary constant that names "smartcity schema migrations"


class MigrationError(IngestError, RuntimeError):
    """The schema cannot be brought up to date (edited migration, missing extension...)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """Every migration shipped with this version, in order."""
    found: list[Migration] = []
    for entry in resources.files(__package__).iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {versions}")
    return found


def repeatable() -> list[Migration]:
    """The repeatable files, each as a :class:`Migration` numbered by its place in the order."""
    folder = resources.files(__package__)
    return [
        Migration(place, name, folder.joinpath(f"{name}.sql").read_text(encoding="utf-8"))
        for place, name in enumerate(REPEATABLE, 1)
    ]


def applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, str]:
    """Versions recorded as applied, with their checksums."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {int(str(version)): str(checksum) for version, checksum in rows}


def _enable_timescaledb(conn: psycopg.Connection[tuple[object, ...]], mode: TimescaleMode) -> bool:
    if mode == "off":
        return False
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " current_setting('shared_preload_libraries')"
    ).fetchone()
    installed, preload = (bool(row[0]), str(row[1])) if row else (False, "")
    if installed and "timescaledb" in preload:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return True
    if mode == "require":
        raise MigrationError(
            "TimescaleDB is required but the server does not have it "
            f"(extension installed: {installed}; shared_preload_libraries: {preload!r})"
        )
    log.info("TimescaleDB not available: readings stay a plain table")
    return False


def migrate(
    conninfo: str, *, timescaledb: TimescaleMode = "auto", city_zone: str | None = None
) -> list[int]:
    """Bring the schema up to date.

    Args:
        conninfo: libpq connection string of a role allowed to run DDL.
        timescaledb: ``auto`` uses it when the server has it, ``require`` fails without it.
        city_zone: The city's IANA time zone; when it differs from the recorded one, the day
            rollups are moved to its local days (``ingest/schema/zone.py``).

    Returns:
        The versions applied by this call (empty when already up to date).

    Raises:
        MigrationError: An applied migration was edited, or TimescaleDB is required and missing.
    """
    done: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            _enable_timescaledb(conn, timescaledb)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            recorded = applied(conn)
            for migration in available():
                if migration.version in recorded:
                    if recorded[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:03d}_{migration.name} was edited after "
                            "it was applied; add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())  # our own file: several statements
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info("applied migration %03d_%s", migration.version, migration.name)
                done.append(migration.version)
            _apply_repeatable(conn)
            if city_zone is not None:
                set_city_zone(conn, city_zone)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done


def _apply_repeatable(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_repeatable ("
        " name text PRIMARY KEY, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    rows = conn.execute("SELECT name, checksum FROM schema_repeatable").fetchall()
    recorded = {str(name): str(checksum) for name, checksum in rows}
    for script in repeatable():
        if recorded.get(script.name) == script.checksum:
            continue
        with conn.transaction():
            conn.execute(script.sql.encode())  # our own file: several statements
            conn.execute(
                "INSERT INTO schema_repeatable (name, checksum) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE"
                " SET checksum = excluded.checksum, applied_at = now()",
                (script.name, script.checksum),
            )
        log.info("applied %s.sql", script.name)
