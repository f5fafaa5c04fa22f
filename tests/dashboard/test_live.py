"""The shared city snapshot: per-district forecasts from the detectors' own checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from dashboard.app import open_pool
from dashboard.live import CityState
from processing import layout as k
from processing.hook import ReadingColumns
from processing.stage import DetectionStage
from processing.state import saved_core_value
from processing.streams import StreamInfo
from tests.ingest.helpers import register
from tests.services.handles import Database


@pytest.fixture
def pool(timescale_database: Database) -> Iterator[ConnectionPool]:
    with open_pool(timescale_database.dsn) as opened:
        opened.wait(10)
        yield opened


def _filling_bin_checkpoint(stream_id: int) -> tuple[bytes, float]:
    """What ingest would save for a bin filling at about 10 %/h, now 70 % full."""
    stage = DetectionStage()
    stage.describe([StreamInfo(stream_id, "wb-1", "bin", "fill_level", "%", "waste", "north")])
    minutes = np.arange(240)
    ts = (1_790_000_000 + minutes * 60) * 1_000_000
    values = 30 + minutes / 6.0  # +10 % an hour
    stage.process(ReadingColumns(np.full(240, stream_id, np.int32), ts.astype(np.int64), values))
    ((_, blob),) = stage.take_dirty()
    hours = saved_core_value(blob, k.C_TTF_H)
    assert hours is not None
    return blob, hours


def test_districts_show_the_detectors_time_to_full(
    timescale_database: Database, pool: ConnectionPool
) -> None:
    register(timescale_database.dsn, [("wb-1", "north"), ("wb-2", "north")], family="waste")
    with psycopg.connect(timescale_database.dsn) as conn:
        for device in ("wb-1", "wb-2"):
            conn.execute(
                "INSERT INTO streams (device_id, sensor, metric, unit)"
                " VALUES (%s, 'bin', 'fill_level', '%%')", (device,),
            )  # fmt: skip
        conn.execute("INSERT INTO latest SELECT stream_id, now(), 70 FROM streams")
        blob, hours = _filling_bin_checkpoint(1)
        conn.execute("INSERT INTO detector_state (stream_id, state) VALUES (1, %s)", (blob,))
        conn.execute(  # a checkpoint from an older layout is ignored, not misread
            "INSERT INTO detector_state (stream_id, state) VALUES (2, %s)", (b"\x01" + blob[1:],)
        )
    assert 2 < hours < 4  # 30 % left at about 10 %/h
    snapshot = CityState(pool, timedelta(minutes=5), 5.0).current()
    north = snapshot.districts.set_index("site").loc["north"]
    assert north["next_bin"] == "wb-1"
    assert north["next_h"] == pytest.approx(hours)


def test_a_city_without_devices_or_filling_bins_still_has_a_snapshot(
    timescale_database: Database, pool: ConnectionPool
) -> None:
    """A fresh install (no devices yet), then a city with no bin near full: neither has a
    forecast to join to its districts, and the snapshot is taken all the same."""
    empty = CityState(pool, timedelta(minutes=5), 5.0).current()
    assert empty.districts.empty
    register(timescale_database.dsn, [("aq-1", "north")], family="air")
    snapshot = CityState(pool, timedelta(minutes=5), 5.0).current()
    north = snapshot.districts.set_index("site").loc["north"]
    assert pd.isna(north["next_bin"])
