"""The database survives losing a server: Patroni with a synchronous standby, ingest following the
primary through a multi-host URL. Each test runs a fleet through it and counts every reading the
devices had acknowledged in the database, key by key."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.fleet import Fleet
from tests.ingest.process import IngestProcess
from tests.ingest.running import ingest_config
from tests.ingest.test_faults import finish, start_fleet, stored, wait_until
from tests.services.handles import BrokerAddress
from tests.services.patroni import PatroniCluster, city_cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[PatroniCluster]:
    """Two database servers of this test's own, the first leading, the second in sync."""
    with city_cluster() as ha:
        yield ha


@pytest.fixture
def worker(
    cluster: PatroniCluster, broker: BrokerAddress, tmp_path: Path
) -> Iterator[IngestProcess]:
    process = IngestProcess(
        ingest_config(broker, cluster.dsn("city"), batch_max_age_s=0.2), tmp_path / "ingest.log"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def fleet(
    cluster: PatroniCluster, worker: IngestProcess, broker: BrokerAddress, unique_site: str
) -> Iterator[Fleet]:
    """Simulated devices publishing through ``worker``, readings already flowing."""
    devices = start_fleet(cluster.dsn("city"), broker, unique_site)
    try:
        _flowing(cluster.dsn("city"), 200)
        yield devices
    finally:
        devices.stop(drain_timeout=0)


def _flowing(dsn: str, more_than: int, timeout_s: float = 60) -> None:
    assert wait_until(lambda: len(stored(dsn)) > more_than, timeout_s), (
        f"readings stopped at {len(stored(dsn))}"
    )


def _still_flowing(dsn: str) -> None:
    """Another 200 readings stored from now on."""
    _flowing(dsn, len(stored(dsn)) + 200)


def _all_stored_once(fleet: Fleet, dsn: str, worker: IngestProcess) -> None:
    finish(fleet, dsn)
    assert worker.alive()


def test_the_primary_killed_under_load_loses_and_doubles_nothing(
    cluster: PatroniCluster, worker: IngestProcess, fleet: Fleet
) -> None:
    dsn = cluster.dsn("city")
    old = cluster.primary()
    assert old is not None
    old.kill()
    cluster.wait(lambda: cluster.primary() not in (None, old), 60, "promotion")
    _still_flowing(dsn)  # ingest found the new primary by itself
    _all_stored_once(fleet, dsn, worker)


def test_a_planned_switchover_under_load_loses_and_doubles_nothing(
    cluster: PatroniCluster, worker: IngestProcess, fleet: Fleet
) -> None:
    dsn = cluster.dsn("city")
    old, new = cluster.primary(), cluster.sync_standby()
    assert old is not None
    assert new is not None
    request = urllib.request.Request(
        f"http://127.0.0.1:{old.rest_port}/switchover",
        data=json.dumps({"leader": old.name, "candidate": new.name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
    cluster.wait(lambda: cluster.primary() is new, 60, "the switchover")
    # The old primary comes back as the new one's synchronous standby.
    cluster.wait(lambda: cluster.sync_standby() is old, 120, "the old primary in sync")
    _still_flowing(dsn)
    _all_stored_once(fleet, dsn, worker)


def test_the_standby_lost_and_back_keeps_writing_and_loses_nothing(
    cluster: PatroniCluster, worker: IngestProcess, fleet: Fleet
) -> None:
    """Not strict (deploy/patroni): without its standby the primary commits alone, and the
    standby catches up and is synchronous again when it returns."""
    dsn = cluster.dsn("city")
    standby = cluster.sync_standby()
    assert standby is not None
    standby.kill()
    _still_flowing(dsn)  # writes go on with one copy
    standby.start()
    cluster.wait(lambda: cluster.sync_standby() is standby, 120, "the standby back in sync")
    _all_stored_once(fleet, dsn, worker)
    # Everything is on the standby too: read it there.
    on_standby = cluster.node_dsn(standby, "city")
    assert wait_until(lambda: len(stored(on_standby)) == len(fleet.published), 30)
