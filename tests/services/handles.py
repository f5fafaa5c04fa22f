"""What tests are handed for the session's services, and fresh databases on them.

The fixtures themselves are in ``tests/conftest.py``; test modules import these names from here,
never from a conftest.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.schema import migrate
from tests.services.postgres import create_database, drop_database, replace_dbname


@dataclass(frozen=True)
class BrokerAddress:
    """Where the test broker listens."""

    host: str
    port: int


@dataclass(frozen=True)
class Database:
    """A fresh, migrated database for one test."""

    dsn: str
    kind: str  # "timescaledb" or "postgres"


def fresh_database(admin_dsn: str, kind: str) -> Iterator[Database]:
    """A new migrated database on the server of ``admin_dsn``, dropped when the caller is done.

    ``kind`` is ``timescaledb`` (the extension required) or ``postgres`` (plain tables).
    """
    name = f"test_{secrets.token_hex(6)}"
    create_database(admin_dsn, name)
    dsn = replace_dbname(admin_dsn, name)
    migrate(dsn, timescaledb="require" if kind == "timescaledb" else "off")
    try:
        yield Database(dsn, kind)
    finally:
        drop_database(admin_dsn, name)
