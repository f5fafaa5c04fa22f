"""The planted city and its API, once per module and database kind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.city import City, plant, serving
from tests.services.handles import fresh_database


@pytest.fixture(scope="module", params=["timescaledb", "postgres"])
def city(request: pytest.FixtureRequest) -> Iterator[City]:
    """A planted database on TimescaleDB and on plain PostgreSQL, each behind a running API."""
    admin = request.getfixturevalue(
        "timescale_admin_dsn" if request.param == "timescaledb" else "embedded_admin_dsn"
    )
    for database in fresh_database(admin, request.param):
        plant(database.dsn)
        with serving(database.dsn) as served:
            yield served
