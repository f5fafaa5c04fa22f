"""The demo's week of history: written through ingest's writer, once, with the detection feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from edge.fleet import plan_fleet
from ingest.registry import DeviceRecord, register_devices
from smartcity.demo_history import backfill
from tests.services.handles import Database


def test_a_day_of_the_fleet_is_written_once_with_feed_and_rollup_marks(
    database: Database, tmp_path: Path
) -> None:
    specs = plan_fleet(6, seed=3)
    register_devices(
        database.dsn,
        [DeviceRecord(s.device, s.site, s.family, s.name, s.lat, s.lon) for s in specs],
    )
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    shares: list[float] = []
    labels = tmp_path / "labels.jsonl"
    done = backfill(database.dsn, specs, end=end, days=1, seed=3, labels=labels,
                    progress=shares.append)  # fmt: skip
    with psycopg.connect(database.dsn) as conn:
        stored, first, last = conn.execute(
            "SELECT count(*), min(ts), max(ts) FROM readings"
        ).fetchone() or (0, None, None)
        fed = conn.execute(
            "SELECT coalesce(sum(length(stream_ids) / 4), 0) FROM detection_feed"
        ).fetchone()
        marked = conn.execute("SELECT count(*) >= 1400 FROM rollup_dirty").fetchone()
        latest = conn.execute("SELECT count(*) > 0 FROM latest").fetchone()
    assert done.readings == stored > 6 * 2 * 1400  # at least two metrics a device, each minute
    assert first >= end - timedelta(days=1)
    assert last == end
    assert fed == (stored,)  # every reading reaches detection's feed
    assert marked == (True,)  # and the rollups, a day of minutes
    assert latest == (True,)
    assert shares[-1] == 1.0
    assert shares == sorted(shares)
    assert len(labels.read_text().splitlines()) == done.faults

    again = backfill(database.dsn, specs, end=end, days=1, seed=3)  # interrupted and rerun
    assert again.readings == 0
    with psycopg.connect(database.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (stored,)
