"""Simulated sensors: realistic daily shapes, determinism, and bins emptied on collection."""

from __future__ import annotations

import itertools
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from edge.metrics import METRICS
from edge.sensors.simulated import (
    SimulatedAirQuality,
    SimulatedTraffic,
    SimulatedWasteBin,
    simulated_sensors,
    traffic_intensity,
)

MONDAY = datetime(2026, 11, 23, tzinfo=UTC)  # London is on UTC in November


def sample_day(sensor: object, metric: str, start: datetime, step: timedelta) -> dict[int, float]:
    """Mean value of ``metric`` per local hour over one day."""
    per_hour: dict[int, list[float]] = {}
    at = start
    while at < start + timedelta(days=1):
        for r in sensor.read(at):  # type: ignore[attr-defined]
            if r.metric == metric:
                per_hour.setdefault(at.hour, []).append(r.value)
        at += step
    return {hour: statistics.fmean(values) for hour, values in per_hour.items()}


def test_weekday_traffic_peaks_at_rush_hours() -> None:
    assert traffic_intensity(8.0, False) > 3 * traffic_intensity(3.0, False)
    assert traffic_intensity(17.5, False) > 3 * traffic_intensity(3.0, False)
    assert traffic_intensity(8.0, True) < traffic_intensity(8.0, False)


def test_traffic_counts_follow_the_day() -> None:
    sensor = SimulatedTraffic("loop", seed=4, capacity_per_hour=1_800)
    counts = sample_day(sensor, "vehicle_count", MONDAY, timedelta(minutes=1))
    assert counts[8] > 4 * counts[3]
    speeds = sample_day(
        SimulatedTraffic("loop", seed=4), "speed_mean", MONDAY, timedelta(minutes=5)
    )
    assert speeds[3] > speeds[8]


def test_air_quality_has_traffic_peaks_and_a_daily_temperature_cycle() -> None:
    no2 = sample_day(SimulatedAirQuality("aq", seed=2), "no2", MONDAY, timedelta(minutes=5))
    assert no2[8] > no2[3] + 15
    temperature = sample_day(
        SimulatedAirQuality("aq", seed=2), "temperature", MONDAY, timedelta(minutes=5)
    )
    assert temperature[15] > temperature[4] + 5


def test_bins_fill_by_day_and_are_emptied_on_collection() -> None:
    sensor = SimulatedWasteBin("bin", seed=1, percent_per_day=40)
    levels = []
    at = MONDAY
    for _ in range(7 * 24 * 4):
        levels.append(next(r.value for r in sensor.read(at) if r.metric == "fill_level"))
        at += timedelta(minutes=15)
    drops = [later - earlier for earlier, later in itertools.pairwise(levels)]
    assert max(levels) >= 60
    assert min(drops) < -50  # a collection round emptied it


@pytest.mark.parametrize("family", ["traffic", "air", "waste"])
def test_simulated_readings_are_valid_and_deterministic(family: str) -> None:
    first = [
        s.read(MONDAY + timedelta(minutes=m))
        for s in simulated_sensors(family, seed=9)  # type: ignore[arg-type]
        for m in range(30)
    ]
    second = [
        s.read(MONDAY + timedelta(minutes=m))
        for s in simulated_sensors(family, seed=9)  # type: ignore[arg-type]
        for m in range(30)
    ]
    assert first == second
    for readings in first:
        for r in readings:
            assert METRICS[r.metric].contains(r.value)
