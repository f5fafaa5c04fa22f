"""The planner API keeps answering while the database fails over: its reads go to the standby
(``read_database_url`` with ``target_session_attrs=prefer-standby``), its few writes follow the
primary, and every answer read from a standby says how fresh it is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest

from api.auth import DATA_AS_OF
from tests.api.city import DAYS, T0, City, plant, serving
from tests.services.patroni import PatroniCluster, city_cluster

pytestmark = pytest.mark.slow

SERIES = {
    "start": T0.isoformat(),
    "end": (T0 + timedelta(days=DAYS)).isoformat(),
    "bucket": "1d",
    "group_by": "site",
}


@pytest.fixture
def cluster() -> Iterator[PatroniCluster]:
    with city_cluster() as ha:
        plant(ha.dsn("city"))
        yield ha


def _series(city: City) -> httpx.Response:
    return httpx.get(
        city.url + "/v1/timeseries", params=SERIES, headers=city.auth("operator"), timeout=30
    )


def test_the_api_answers_from_the_standby_throughout_a_failover(cluster: PatroniCluster) -> None:
    with serving(cluster.dsn("city"), reads_prefer_standby=True) as city:
        first = _series(city)
        assert first.status_code == 200, first.text
        assert first.json()["series"], "the planted city has sites"
        # Read from the standby, and saying so.
        assert datetime.fromisoformat(first.headers[DATA_AS_OF]) > T0

        old = cluster.primary()
        assert old is not None
        old.kill()
        answers: list[httpx.Response] = []
        leaderless = 0
        deadline = time.monotonic() + 90
        # Ask every 0.2 s from the kill until the standby leads, and a little after. Answers
        # come at once: reads on the primary would wait for the promotion instead.
        while time.monotonic() < deadline:
            answers.append(_series(city))
            leader = cluster.primary()
            leaderless += leader is None
            if leader not in (None, old) and len(answers) >= 10:
                break
            time.sleep(0.2)
        assert cluster.primary() not in (None, old), "no promotion within 90 s"
        assert leaderless >= 3, f"{leaderless} of {len(answers)} answers came with no primary"
        failed = [(r.status_code, r.text[:200]) for r in answers if r.status_code != 200]
        assert not failed, f"{len(failed)} of {len(answers)} answers failed: {failed[:3]}"
        changed = [r.json() for r in answers if _rounded(r.json()) != _rounded(first.json())]
        assert not changed, f"the same question, another answer: {first.json()} then {changed[0]}"

        # Writes follow the new primary: an export is audited there.
        exported = _exported_after_failover(city)
        assert exported.status_code == 200, exported.text


def _rounded(body: object) -> object:
    """The body with floats to 9 digits: a server may sum a day's readings in another order."""
    if isinstance(body, float):
        return float(f"{body:.9g}")
    if isinstance(body, dict):
        return {key: _rounded(value) for key, value in body.items()}
    if isinstance(body, list):
        return [_rounded(item) for item in body]
    return body


def _exported_after_failover(city: City) -> httpx.Response:
    """An export (the API's audited write) once the write pool has found the new primary;
    refused with 503 meanwhile, never with another error."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(
            city.url + "/v1/export",
            params={"start": SERIES["start"], "end": SERIES["end"], "resolution": "1h"},
            headers=city.auth("planner"),
            timeout=30,
        )
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)
