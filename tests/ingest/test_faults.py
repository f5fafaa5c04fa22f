"""Nothing acknowledged is lost: ingest killed, the database stopped, the broker restarted,
two workers sharing the load. Every test counts every published reading in the database."""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from edge.fleet import District, Fleet, plan_fleet
from edge.publisher import BrokerSettings
from ingest.registry import DeviceRecord, register_devices
from ingest.schema import migrate
from tests.ingest.process import IngestProcess
from tests.ingest.running import ingest_config
from tests.services.handles import BrokerAddress, Database
from tests.services.mosquitto import Mosquitto
from tests.services.postgres import PostgresServer

log = logging.getLogger(__name__)

pytestmark = pytest.mark.slow


def stored(dsn: str) -> list[tuple[str, str, str, datetime]]:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT s.device_id, s.sensor, s.metric, r.ts"
            " FROM readings r JOIN streams s USING (stream_id)"
        ).fetchall()
    return [(str(d), str(s), str(m), ts) for d, s, m, ts in rows]


def wait_until(check: object, timeout_s: float, every_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return True
        except psycopg.OperationalError:
            pass
        time.sleep(every_s)
    return bool(check())  # type: ignore[operator]


def start_fleet(
    dsn: str,
    broker: BrokerAddress,
    site: str,
    devices: int = 24,
    fallbacks: tuple[tuple[str, int], ...] = (),
) -> Fleet:
    specs = plan_fleet(devices, seed=7, districts=[District(site, "Test", 53.8, -1.55)])
    register_devices(dsn, [DeviceRecord(s.device, s.site, s.family, s.name) for s in specs])
    fleet = Fleet(
        specs,
        BrokerSettings(
            host=broker.host,
            port=broker.port,
            keepalive_s=2,
            reconnect_min_s=1,
            reconnect_max_s=2,
            fallbacks=fallbacks,
        ),
        sample_interval_s=0.1,
        batch_interval_s=0.3,
        record=True,
    )
    fleet.start()
    assert fleet.wait_connected(20)
    return fleet


def finish(fleet: Fleet, dsn: str) -> None:
    """Stop sampling, let every device drain, then check the database reading by reading."""
    fleet.stop_sampling()
    assert fleet.drain(60), "devices kept a backlog"
    expected = fleet.published
    assert wait_until(lambda: len(stored(dsn)) >= len(expected), 60), (
        f"{len(stored(dsn))} of {len(expected)} readings stored"
    )
    fleet.stop(drain_timeout=1)
    rows = stored(dsn)
    keys = {(d, s, m, ts.isoformat()) for d, s, m, ts in rows}
    assert len(rows) == len(keys), "a reading was stored twice"
    assert keys == expected, f"missing {len(expected - keys)}, unexpected {len(keys - expected)}"


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    return tmp_path / "ingest.log"


def test_sigkill_at_five_random_moments_loses_nothing(
    broker: BrokerAddress, timescale_database: Database, unique_site: str, worker_log: Path
) -> None:
    seed = secrets.randbelow(10**6)
    rng = random.Random(seed)
    log.info("kill moments seeded with %d", seed)
    dsn = timescale_database.dsn
    worker = IngestProcess(ingest_config(broker, dsn, batch_max_age_s=0.2), worker_log)
    worker.start()
    fleet = start_fleet(dsn, broker, unique_site)
    try:
        for _ in range(5):
            time.sleep(rng.uniform(0.3, 1.5))
            worker.kill()
            time.sleep(rng.uniform(0.0, 0.5))
            worker.start()
        time.sleep(1.0)
        finish(fleet, dsn)
    finally:
        fleet.stop(drain_timeout=0)
        worker.stop()
    assert worker.starts == 6


@pytest.fixture
def own_database() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, so stopping it disturbs no other test."""
    server = PostgresServer()
    server.start()
    migrate(server.dsn(), timescaledb="require")
    yield server
    server.cleanup()


def test_database_down_for_30_seconds_loses_nothing_and_ingest_survives(
    broker: BrokerAddress, own_database: PostgresServer, unique_site: str, worker_log: Path
) -> None:
    dsn = own_database.dsn()
    worker = IngestProcess(ingest_config(broker, dsn), worker_log)
    worker.start()
    fleet = start_fleet(dsn, broker, unique_site)
    try:
        time.sleep(2)
        own_database.stop("fast")
        assert wait_until(lambda: worker.get("/readyz")[0] == 503, 20), "outage not reported"
        time.sleep(28)
        assert worker.alive()
        own_database.start()
        assert worker.wait_ready(60)
        time.sleep(1)
        finish(fleet, dsn)
        assert worker.metric("ingest_write_retries_total") > 0
    finally:
        fleet.stop(drain_timeout=0)
        assert worker.stop() == 0


@pytest.fixture
def own_broker() -> Iterator[Mosquitto]:
    """A broker of this test's own, so restarting it disturbs no other test."""
    server = Mosquitto()
    server.start()
    yield server
    server.cleanup()


def test_broker_restart_under_load_loses_nothing(
    own_broker: Mosquitto, timescale_database: Database, unique_site: str, worker_log: Path
) -> None:
    dsn = timescale_database.dsn
    address = BrokerAddress(own_broker.host, own_broker.port)
    worker = IngestProcess(ingest_config(address, dsn), worker_log)
    worker.start()
    fleet = start_fleet(dsn, address, unique_site)
    try:
        time.sleep(2)
        own_broker.restart()
        assert worker.wait_ready(60), "ingest did not reconnect"
        time.sleep(2)
        finish(fleet, dsn)
        assert worker.alive()
    finally:
        fleet.stop(drain_timeout=0)
        assert worker.stop() == 0


def test_a_broker_killed_under_load_loses_nothing(
    own_broker: Mosquitto, timescale_database: Database, unique_site: str, worker_log: Path
) -> None:
    """Two brokers, ingest consuming from both, devices on the first: the first is killed
    (no goodbye, its unsent queue lost with it). Devices move to the second, ingest stays ready
    on it, and every reading sampled is stored once."""
    second = Mosquitto()
    second.start()
    dsn = timescale_database.dsn
    address = BrokerAddress(own_broker.host, own_broker.port)
    config = ingest_config(address, dsn, more_brokers=(f"{second.host}:{second.port}",))
    worker = IngestProcess(config, worker_log)
    worker.start()
    assert wait_until(lambda: worker.metric("ingest_broker_connected") == 2, 30)
    fleet = start_fleet(dsn, address, unique_site, fallbacks=((second.host, second.port),))
    try:
        assert wait_until(lambda: len(stored(dsn)) > 200, 30)
        own_broker.stop(kill=True)
        before = len(stored(dsn))
        assert wait_until(lambda: len(stored(dsn)) > before + 200, 30), "devices did not move"
        assert worker.get("/readyz")[0] == 200  # one broker left is enough
        # The lost connection is noticed when its socket reports the close: a busy machine later.
        assert wait_until(lambda: worker.metric("ingest_broker_connected") == 1, 30)
        finish(fleet, dsn)
        assert worker.alive()
    finally:
        fleet.stop(drain_timeout=0)
        assert worker.stop() == 0
        second.cleanup()


def test_two_workers_share_the_load_without_loss_or_duplicates(
    broker: BrokerAddress, timescale_database: Database, unique_site: str, tmp_path: Path
) -> None:
    dsn = timescale_database.dsn
    group = f"ingest-{secrets.token_hex(3)}"
    workers = [
        IngestProcess(ingest_config(broker, dsn, shared_group=group), tmp_path / f"worker{n}.log")
        for n in (1, 2)
    ]
    for worker in workers:
        worker.start()
    fleet = start_fleet(dsn, broker, unique_site)
    try:
        time.sleep(3)
        finish(fleet, dsn)
        shares = [worker.metric("ingest_readings_stored_total") for worker in workers]
        assert all(share > 0 for share in shares), f"a worker did nothing: {shares}"
    finally:
        fleet.stop(drain_timeout=0)
        for worker in workers:
            assert worker.stop() == 0
