"""Session services as fixtures: real Mosquitto, PostgreSQL + TimescaleDB, embedded PostgreSQL.

``CITY_TEST_BROKER=host:port`` and ``CITY_TEST_DSN=<admin conninfo>`` point the suite at running
services instead of starting its own.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from tests.services._process import ServiceUnavailableError
from tests.services.embedded import EmbeddedServer
from tests.services.handles import BrokerAddress, Database, fresh_database
from tests.services.mosquitto import Mosquitto
from tests.services.postgres import PostgresServer


def _started(service: object) -> None:
    try:
        service.start()  # type: ignore[attr-defined]
    except ServiceUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto | None]:
    """The session's broker process (None when CITY_TEST_BROKER names an existing one)."""
    if os.environ.get("CITY_TEST_BROKER"):
        yield None
        return
    try:
        broker = Mosquitto()
    except ServiceUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    _started(broker)
    yield broker
    broker.cleanup()


@pytest.fixture(scope="session")
def broker(mosquitto: Mosquitto | None) -> BrokerAddress:
    """Address of a real Mosquitto."""
    if mosquitto is None:
        host, _, port = os.environ["CITY_TEST_BROKER"].rpartition(":")
        return BrokerAddress(host or "127.0.0.1", int(port))
    return BrokerAddress(mosquitto.host, mosquitto.port)


@pytest.fixture(scope="session")
def timescale_admin_dsn() -> Iterator[str]:
    """Admin connection string of a real PostgreSQL with TimescaleDB preloaded."""
    if os.environ.get("CITY_TEST_DSN"):
        yield os.environ["CITY_TEST_DSN"]
        return
    try:
        server = PostgresServer()
    except ServiceUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    _started(server)
    yield server.dsn()
    server.cleanup()


@pytest.fixture(scope="session")
def embedded_admin_dsn() -> Iterator[str]:
    """Admin connection string of the embedded plain PostgreSQL the demo uses."""
    server = EmbeddedServer()
    server.start()
    yield server.dsn()
    server.cleanup()


@pytest.fixture(params=["timescaledb", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """A fresh migrated database, once on TimescaleDB and once on the embedded plain PostgreSQL."""
    if request.param == "timescaledb":
        admin = request.getfixturevalue("timescale_admin_dsn")
    else:
        admin = request.getfixturevalue("embedded_admin_dsn")
    yield from fresh_database(admin, request.param)


@pytest.fixture
def timescale_database(timescale_admin_dsn: str) -> Iterator[Database]:
    """A fresh migrated database on TimescaleDB only."""
    yield from fresh_database(timescale_admin_dsn, "timescaledb")


@pytest.fixture
def unique_site(request: pytest.FixtureRequest) -> str:
    """A site name no other test uses, so tests sharing the broker never see each other's topics."""
    stem = "".join(ch for ch in request.node.name if ch.isalnum())[:20] or "t"
    return f"{stem}-{secrets.token_hex(3)}"
