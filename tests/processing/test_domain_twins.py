"""The domain detectors and the sweeps against their plain-Python twins, on a small city.

Air quality, congestion, overflow, fire, missing data and neighbours each depend on more than one
stream or on time passing; the city below makes each of them open and resolve, and the stage
(numba) and ``tests/processing/naive.NaiveCity`` must agree on every score and every transition.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pytest

from processing import aqi
from processing import layout as k
from processing.config import DetectionSettings
from processing.hook import ReadingColumns
from processing.kinds import Kind
from processing.stage import DetectionStage
from processing.streams import PLAUSIBLE, RESOLUTION, StreamInfo, metric_code, neighbour_groups
from tests.processing.naive import AirRule, NaiveCity, NaiveStream

T0 = 1_795_000_000_000_000 - 1_795_000_000_000_000 % 86_400_000_000  # a midnight, UTC
MINUTE = 60_000_000
HOUR = 60 * MINUTE
DAYS = 3
# The neighbour offsets have their day and weeks in hours here, so the slow comparison is
# judged too.
SETTINGS = replace(
    DetectionSettings(),
    warmup_s=6 * 3600.0,
    neighbour_tau_s=2 * 3600.0,
    neighbour_drift_tau_s=12 * 3600.0,
)
STATIONS = 5


def _city() -> list[StreamInfo]:
    infos: list[StreamInfo] = []
    for station in range(STATIONS):
        for metric in ("pm2_5", "no2"):
            infos.append(StreamInfo(len(infos), f"aq{station}", "aq", metric, "", "air", "north"))
    for metric in ("speed_mean", "occupancy"):
        infos.append(StreamInfo(len(infos), "loop1", "loop", metric, "", "traffic", "north"))
    for metric in ("fill_level", "temperature"):
        infos.append(StreamInfo(len(infos), "bin1", "bin", metric, "", "waste", "north"))
    for station in range(STATIONS):  # the air's temperature: no true zero, neighbours agree
        infos.append(
            StreamInfo(len(infos), f"aq{station}", "aq", "temperature", "", "air", "north")
        )
    return infos


def _readings(infos: list[StreamInfo]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A minute apart for three days, with each domain's event on the second and third day."""
    rng = np.random.default_rng(20261201)
    minutes = np.arange(DAYS * 1440)
    hour = minutes / 60.0
    daily = np.sin(2 * np.pi * (hour % 24) / 24)
    columns = []
    for info in infos:
        station = int(info.device[2:]) if info.device.startswith("aq") else 0
        match info.metric:
            case "pm2_5":
                x = 25 + 8 * daily + rng.normal(0, 1.5, minutes.size) + station
                x = np.where((hour >= 30) & (hour < 54), x + 120, x)  # a city-wide episode
                if station == 3:  # one station reads high for a morning: not the city's air
                    x = np.where((hour >= 58) & (hour < 62), x + 40, x)
            case "no2":
                x = 40 + 15 * daily + rng.normal(0, 3, minutes.size) + 2 * station
                x = np.where((hour >= 40) & (hour < 42), x + 500, x)
                if station == 1:  # stuck at its lowest reading while its neighbours are not
                    x = np.where((hour >= 62) & (hour < 66), np.round(x[hour < 62].min(), 1), x)
            case "temperature" if info.family == "air":
                x = 12 + 4 * daily + rng.normal(0, 0.2, minutes.size) + 0.5 * station
                if station == 4:  # drifts away from the others from the second day on
                    x = x + np.clip(1.0 * (hour - 40), 0, None)
            case "speed_mean":
                x = 50 + rng.normal(0, 2, minutes.size)
                x = np.where((hour >= 41) & (hour < 41.7), 8 + rng.normal(0, 1, minutes.size), x)
            case "occupancy":
                x = 20 + rng.normal(0, 2, minutes.size)
                x = np.where((hour >= 41) & (hour < 41.7), 85 + rng.normal(0, 2, minutes.size), x)
            case "fill_level":
                # Filling over a day, emptied, filling fast on the third day until it
                # overflows, then emptied again.
                x = np.where(hour < 24, 5 + 2.5 * hour, 5 + 1.0 * (hour - 24))
                x = np.where(hour >= 48, 30 + 30 * (hour - 48), x)
                x = np.where(hour >= 56, 5 + 0.5 * (hour - 56), x)
                x = np.clip(np.round(x * 2) / 2 + rng.normal(0, 0.3, minutes.size), 0, 100)
            case _:
                x = 18 + 3 * daily + rng.normal(0, 0.4, minutes.size)
                x = np.where((hour >= 66) & (hour < 67), 75.0, x)  # a bin fire
                # Stuck at its lowest reading by day, with no neighbours to ask.
                x = np.where((hour >= 60) & (hour < 63), np.round(x[hour < 60].min(), 1), x)
        columns.append(np.round(x, 1))
    values = np.stack(columns, axis=1)  # minute x stream
    ts = T0 + minutes[:, None] * MINUTE + np.arange(len(infos))[None, :] * 1_000_000
    ids = np.broadcast_to(np.arange(len(infos)), values.shape)
    # Station 2 goes silent for 8 hours during the episode: missing data, and a 24-hour mean
    # that covers too little of its period for a while.
    silent = (hour[:, None] >= 46) & (hour[:, None] < 54) & (ids // 2 == 2) & (ids < 10)
    keep = ~silent
    return ids[keep].astype(np.int32), ts[keep].astype(np.int64), values[keep]


def _naive_city(infos: list[StreamInfo]) -> NaiveCity:
    rules = aqi.scheme(aqi.DEFAULT_SCHEME)
    city = NaiveCity()
    devices: dict[str, list[StreamInfo]] = {}
    for info in infos:
        low, high = PLAUSIBLE.get(info.metric, (-np.inf, np.inf))
        kind = {"speed_mean": "speed", "occupancy": "occupancy", "fill_level": "fill"}.get(
            info.metric, "generic"
        )
        if info.metric == "temperature" and info.family == "waste":
            kind, low, high = "bin_temperature", -40.0, 125.0
        rule = rules.pollutants.get(info.metric)
        air = None
        if rule is not None:
            air = AirRule(rule.averaging_hours, rule.lower_bounds, rules.alert_from_band, True)
        city.streams[info.stream_id] = NaiveStream(
            settings=SETTINGS,
            floor=RESOLUTION.get(info.metric, 1e-9),
            low=low,
            high=high,
            kind=kind,
            air=air,
            ratio_scale=metric_code(info) in (k.M_PARTICLES, k.M_GAS, k.M_COUNT),
        )
        devices.setdefault(info.device, []).append(info)
    for streams in devices.values():
        city.streams[min(s.stream_id for s in streams)].lead = True
        by_metric = {s.metric: city.streams[s.stream_id] for s in streams}
        if {"speed_mean", "occupancy"} <= by_metric.keys():
            by_metric["speed_mean"].partner = by_metric["occupancy"]
            by_metric["occupancy"].partner = by_metric["speed_mean"]
    rows = {info.stream_id: info.stream_id for info in infos}
    members, starts = neighbour_groups(infos, rows)
    city.groups = [members[a:b].tolist() for a, b in itertools.pairwise(starts)]
    return city


def _stage_events(stage: DetectionStage) -> list[tuple[int, Kind, bool, float, float]]:
    return [
        (e.stream_id, e.kind, e.opened, round(e.at.timestamp() * 1e6), e.score)
        for e in stage.drain()
    ]


Transition = tuple[int, Kind, bool, float, float]  # stream, kind, opened, at (µs), peak score


@dataclass(frozen=True)
class Run:
    """What the stage and the twins made of the same city."""

    city: NaiveCity
    scores: np.ndarray
    expected: np.ndarray
    events: list[Transition]
    # After each sweep, per stream: the neighbour comparison's score, its usual, recent and
    # long offsets, their spreads and its three tails, as the stage holds them and the twin.
    neighbours: np.ndarray
    twin_neighbours: np.ndarray


NEIGHBOUR_COLUMNS = (
    k.C_NB_SCORE,
    k.C_NB_OFFSET,
    k.C_NB_SPREAD,
    k.C_NB_LONG,
    k.C_NB_RECENT,
    k.C_NB_DRIFT_SPREAD,
    k.C_NB_DRIFT_Q,
    k.C_NB_DRIFT_M,
    k.C_NB_Q,
    k.C_NB_M,
    k.C_NB_SHIFT_Q,
    k.C_NB_SHIFT_M,
)


def _twin_neighbours(city: NaiveCity) -> list[list[float]]:
    views = [city.streams[i].neighbours for i in sorted(city.streams)]
    return [
        [
            v.score,
            v.offset,
            v.spread,
            v.long,
            v.recent,
            v.wander,
            v.slow_tail.threshold,
            v.slow_tail.excess,
            v.odd_tail.threshold,
            v.odd_tail.excess,
            v.drift_tail.threshold,
            v.drift_tail.excess,
        ]
        for v in views
    ]


@pytest.fixture(scope="module")
def both() -> Run:
    infos = _city()
    ids, ts, values = _readings(infos)
    stage = DetectionStage(SETTINGS)
    stage.describe(infos)
    city = _naive_city(infos)
    since = datetime.fromtimestamp(T0 / 1e6, UTC)
    scores = np.empty(values.size)
    expected = np.empty(values.size)
    events: list[Transition] = []
    neighbours: list[np.ndarray] = []
    twin_neighbours: list[list[list[float]]] = []
    # Five-minute batches in time order, each followed by a sweep at its end, as ingest runs.
    bounds = np.searchsorted(ts, np.arange(T0, ts[-1] + 5 * MINUTE, 5 * MINUTE))
    for lo, hi in itertools.pairwise(bounds):
        if hi <= lo:
            continue
        stage.process(ReadingColumns(ids[lo:hi], ts[lo:hi], values[lo:hi]), out_score=scores[lo:hi])
        for i in range(lo, hi):
            expected[i] = city.step(int(ids[i]), float(ts[i]), float(values[i]))
        now_us = float(ts[hi - 1] + MINUTE)
        stage.sweep(datetime.fromtimestamp(now_us / 1e6, UTC), since=since)
        city.sweep(now_us, T0)
        events.extend(_stage_events(stage))
        neighbours.append(stage.state.core[: len(infos), NEIGHBOUR_COLUMNS].copy())
        twin_neighbours.append(_twin_neighbours(city))
    return Run(city, scores, expected, events, np.array(neighbours), np.array(twin_neighbours))


def test_scores_match_the_twin(both: Run) -> None:
    np.testing.assert_allclose(both.scores, both.expected, rtol=1e-9, atol=1e-12)


def test_every_neighbour_comparison_matches_the_twin(both: Run) -> None:
    np.testing.assert_allclose(both.neighbours, both.twin_neighbours, rtol=1e-9, atol=1e-9)


def test_every_transition_matches_the_twin(both: Run) -> None:
    twin = [(s, kind, opened, round(at)) for s, kind, opened, at, _ in both.city.events]
    assert [event[:4] for event in both.events] == twin
    np.testing.assert_allclose(
        [event[4] for event in both.events],
        [peak for *_, peak in both.city.events],
        rtol=1e-9,
        atol=1e-12,
    )


@pytest.mark.parametrize(
    "kind",
    [
        Kind.AIR_QUALITY,
        Kind.CONGESTION,
        Kind.OVERFLOW,
        Kind.FIRE,
        Kind.MISSING,
        Kind.NEIGHBOUR,
    ],
)
def test_the_city_exercises_each_domain_detector(both: Run, kind: Kind) -> None:
    """Each detector opens and resolves here, so the comparison above covers it."""
    counts = Counter((k, opened) for _, k, opened, *_ in both.events)
    assert counts[kind, True] >= 1
    assert counts[kind, False] >= 1
