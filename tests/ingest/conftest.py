"""Fixtures the ingest tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ingest.service import Pool, open_pool
from tests.ingest.helpers import register
from tests.services.handles import Database


@pytest.fixture
async def pool(database: Database) -> AsyncIterator[Pool]:
    """A connection pool on a fresh database with devices aq-0001 (centre) and aq-0002 (north)."""
    register(database.dsn, [("aq-0001", "centre"), ("aq-0002", "north")])
    async with open_pool(database.dsn) as pool:
        await pool.wait(timeout=10)
        yield pool
