"""The control room keeps showing the city while the database fails over: its pages read from the
standby (``read_database_url`` with ``target_session_attrs=prefer-standby``), its writes follow
the primary, and the header says how fresh the data read from a standby is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.city import plant
from tests.dashboard.serving import serving
from tests.dashboard.test_history_page import CHOICES, _call
from tests.ingest.test_faults import wait_until
from tests.services.patroni import PatroniCluster, city_cluster

pytestmark = pytest.mark.slow

OVERVIEW = "..overview-cards.children"


@pytest.fixture
def cluster() -> Iterator[PatroniCluster]:
    with city_cluster() as ha:
        plant(ha.dsn("city"))
        yield ha


def _header(client: httpx.Client) -> str:
    """The header's last-update line, as the overview's refresh sets it."""
    answer: dict[str, Any] = _call(client, OVERVIEW, {})
    return str(answer["shell-last-update"]["children"])


def test_the_control_room_answers_from_the_standby_throughout_a_failover(
    cluster: PatroniCluster,
) -> None:
    with serving(cluster.dsn("city"), reads_prefer_standby=True) as dashboard:
        operator, planner = dashboard.client("operator"), dashboard.client("planner")
        first = _header(operator)
        assert "data as of" in first, first  # read from the standby, and saying so
        chart = _call(planner, "..history-chart.figure", CHOICES)["history-chart"]["figure"]

        old = cluster.primary()
        assert old is not None
        old.kill()
        asked = leaderless = 0
        deadline = time.monotonic() + 90
        # Every page request checks its user, and the History page queries the readings: both
        # go to the standby, so each answers (``_call`` asserts a 200) from the kill on, and at
        # once: pages on the primary would wait for the promotion instead.
        while time.monotonic() < deadline:
            _header(operator)
            answer = _call(planner, "..history-chart.figure", CHOICES)
            assert answer["history-chart"]["figure"]["data"] == chart["data"]
            asked += 1
            leader = cluster.primary()
            leaderless += leader is None
            if leader not in (None, old) and asked >= 10:
                break
            time.sleep(0.2)
        assert cluster.primary() not in (None, old), "no promotion within 90 s"
        assert leaderless >= 3, f"{leaderless} of {asked} answers came while there was no primary"

        # The snapshot keeps refreshing (from the promoted node now: no standby is left).
        assert wait_until(lambda: _header(operator) != first, 30), "the overview stopped refreshing"

        # Writes follow the new primary: a sign-in is recorded there.
        dashboard.client("technician")
