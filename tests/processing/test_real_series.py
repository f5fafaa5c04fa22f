"""Detection on real-shaped series: every cadence, messy input, and the city's clocks changing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from processing import score_series
from processing.kinds import Kind
from processing.offline import replay
from processing.stage import DetectionStage
from processing.streams import StreamInfo
from processing.zones import offset_at, offset_table
from smartcity import datasets

FAULTS = {Kind.SPIKE, Kind.LEVEL_SHIFT, Kind.STUCK, Kind.NEIGHBOUR, Kind.IMPOSSIBLE}


@pytest.fixture(scope="module")
def temperature() -> datasets.RealSeries:
    """A real station's hourly temperature: daily cycle, weather, 0.1 °C steps, real gaps."""
    return datasets.beijing(["TEMP"])[0]


def _resampled(
    series: datasets.RealSeries, cadence_s: int, days: int
) -> tuple[np.ndarray, np.ndarray]:
    """The real hourly curve at ``cadence_s``: interpolated, with sensor noise at 0.1 °C steps."""
    ok = np.isfinite(series.values)
    start = int(series.ts_us[ok][0])
    ts = start + np.arange(0, days * 86_400, cadence_s, dtype=np.int64) * 1_000_000
    curve = np.interp(ts, series.ts_us[ok], series.values[ok])
    noise = np.random.default_rng(cadence_s).normal(0, 0.1, ts.size)
    return ts, np.round(curve + noise, 1)


@pytest.mark.parametrize(
    "cadence_s",
    [
        10,
        60,
        300,
        900,
        3600,
    ],
)
def test_the_same_defaults_serve_every_cadence(
    temperature: datasets.RealSeries, cadence_s: int
) -> None:
    # Three weeks; judged after the first (the tails learn what this weather does).
    ts, values = _resampled(temperature, cadence_s, 21)
    learned = ts >= ts[0] + 7 * 86_400_000_000
    at = ts.size * 3 // 4
    faulty = values.copy()
    faulty[at] += 25.0  # a glitch no weather makes
    info = StreamInfo(1, "aq-1", "station", "temperature", "°C", "air", "north")
    for data, expect_spike in ((values, False), (faulty, True)):
        stage = DetectionStage(zone="Asia/Shanghai")
        stage.describe([info])
        ids = np.ones(ts.size, np.int32)
        events, scores = replay(stage, ids, ts, data, batch_s=max(cadence_s, 60))
        after = datetime.fromtimestamp(ts[learned][0] / 1e6, UTC)
        opened = [e for e in events if e.opened and e.kind in FAULTS and e.at >= after]
        if expect_spike:
            assert [e.kind for e in opened] == [Kind.SPIKE], opened
            assert opened[0].at == datetime.fromtimestamp(ts[at] / 1e6, UTC)
            assert scores[at] > 0.9
        else:
            assert opened == [], opened
            assert (scores[learned] > 0.5).mean() <= 0.01


def test_a_pressure_glitch_is_judged_in_hectopascals_not_in_percent() -> None:
    """Air pressure near 1,000 hPa moves about 1 hPa an hour: a glitch of 15 hPa is a spike.

    A spread floor relative to the value (1 % of 1,000 hPa, z = 1.4 here) hid it; the floor is
    the instrument's resolution, in the stream's own units.
    """
    series = datasets.beijing(["PRES"])[0]
    ok = np.isfinite(series.values)
    ts, values = series.ts_us[ok][: 21 * 24], series.values[ok][: 21 * 24]
    at = ts.size * 3 // 4
    faulty = values.copy()
    faulty[at] += 15.0
    info = StreamInfo(1, "aq-1", "station", "pressure", "hPa", "air", "north")
    for data, expect_spike in ((values, False), (faulty, True)):
        stage = DetectionStage(zone="Asia/Shanghai")
        stage.describe([info])
        events, scores = replay(stage, np.ones(ts.size, np.int32), ts, data)
        after = datetime.fromtimestamp(ts[7 * 24] / 1e6, UTC)
        opened = [e.kind for e in events if e.opened and e.kind in FAULTS and e.at >= after]
        assert opened == ([Kind.SPIKE] if expect_spike else []), opened
        if expect_spike:
            assert scores[at] > 0.9


def test_messy_real_series_are_scored_without_errors() -> None:
    series = datasets.metro_traffic()
    counts, ts = series.values[:3000].copy(), series.ts_us[:3000].copy()
    rng = np.random.default_rng(3)
    ts[100], ts[101] = ts[101], ts[100]  # out of order
    ts[200] = ts[199]  # repeated
    counts[300:310] = np.nan  # missing
    ts[1000:] += 30 * 86_400_000_000  # a month without data
    counts[2000:2100] = np.where(rng.random(100) < 0.7, 0.0, counts[2000:2100])  # zero-inflated
    counts[2500:2600] *= rng.pareto(2.0, 100) + 1  # heavy tails
    counts[50] = np.inf
    scores = score_series(ts, counts)
    assert scores.shape == counts.shape
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (scores[300:310] == 0).all()  # NaN is a reading not sent, not an anomaly
    assert scores[50] == 1.0  # an infinite value is impossible
    quiet = np.r_[0:50, 51:2000]
    assert (scores[quiet] > 0.5).mean() <= 0.01


@pytest.mark.parametrize("cut", [1, 101, 201, 999, 1001, 2345])
def test_score_series_is_causal_on_messy_input(cut: int) -> None:
    series = datasets.metro_traffic()
    ts, counts = series.ts_us[:3000].copy(), series.values[:3000].copy()
    ts[100], ts[101] = ts[101], ts[100]
    counts[300:310] = np.nan
    full = score_series(ts, counts)
    assert np.array_equal(score_series(ts[:cut], counts[:cut]), full[:cut])


def test_score_series_refuses_only_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="equal length"):
        score_series(np.arange(3), np.zeros(2))
    assert score_series(np.zeros(0, np.int64), np.zeros(0)).size == 0


@pytest.mark.parametrize("name", ["Europe/London", "America/Chicago", "Australia/Sydney"])
def test_the_zone_table_agrees_with_zoneinfo(name: str) -> None:
    table = offset_table(name)
    zone = ZoneInfo(name)
    moments = np.random.default_rng(1).integers(0, 4_000_000_000, 300)
    for second in moments:
        moment = datetime.fromtimestamp(int(second), UTC)
        expected = moment.astimezone(zone).utcoffset()
        assert expected is not None
        assert offset_at(table, int(second) * 1e6) == expected.total_seconds()


def _commuter_road(year: int, zone: ZoneInfo) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy every 5 minutes for a year, peaking at 08:00 local time (whatever the clocks)."""
    start = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    ts = (start + np.arange(0, 365 * 86_400, 300)).astype(np.int64) * 1_000_000
    table = offset_table(zone)
    local_s = ts / 1e6 + np.array([offset_at(table, t) for t in ts[::12]]).repeat(12)[: ts.size]
    hour = local_s % 86_400 / 3600
    rng = np.random.default_rng(year)
    values = 25 + 20 * np.cos(2 * np.pi * (hour - 8) / 24)
    return ts, np.round(values + rng.normal(0, 1.0, ts.size), 1)


def test_daily_slots_follow_the_clocks_through_both_changes_and_a_restore() -> None:
    zone = ZoneInfo("Europe/London")
    ts, values = _commuter_road(2026, zone)
    info = StreamInfo(1, "tr-1", "loop", "occupancy", "%", "traffic", "north")
    ids = np.ones(ts.size, np.int32)

    def fresh(zone_given: ZoneInfo | float) -> DetectionStage:
        if isinstance(zone_given, float):  # a fixed offset: what ingest started in winter did
            stage = DetectionStage(capacity=1)
        else:
            stage = DetectionStage(capacity=1, zone=zone_given)
        stage.describe([info])
        return stage

    following, scores = replay(fresh(zone), ids, ts, values, batch_s=3600)
    assert [e for e in following if e.opened and e.kind in FAULTS] == []
    # On an offset fixed in winter the day is an hour off after each change until the slots
    # relearn it: a level shift opens and readings score high for days.
    fixed, fixed_scores = replay(fresh(0.0), ids, ts, values, batch_s=3600)
    for moved in (datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC)):
        start = moved.timestamp() * 1e6
        week = (ts >= start) & (ts < start + 7 * 86_400e6)
        assert (fixed_scores[week] > 0.5).sum() >= 10
        assert (scores[week] > 0.5).mean() <= 0.01
        opened = [e.at for e in fixed if e.opened and e.kind is Kind.LEVEL_SHIFT]
        assert any(moved <= at < moved + timedelta(days=1) for at in opened)

    # A checkpoint taken before the clocks go forward and restored after: still on local time.
    change = int(datetime(2026, 3, 29, 1, tzinfo=UTC).timestamp() * 1e6)
    before = ts < change - 3_600_000_000
    first = fresh(zone)
    replay(first, ids[before], ts[before], values[before], batch_s=3600)
    saved = first.take_dirty()
    later = ts >= change + 3_600_000_000
    restored = fresh(zone)
    assert restored.restore(saved) == 1
    restored_events, restored_scores = replay(
        restored, ids[later], ts[later], values[later], batch_s=3600
    )
    assert [e for e in restored_events if e.opened and e.kind in FAULTS] == []
    assert (restored_scores > 0.5).mean() <= 0.01
