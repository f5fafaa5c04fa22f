"""Behaviours of the whole stage that operators rely on, on small synthetic cities."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from processing.config import DetectionSettings
from processing.hook import ReadingColumns
from processing.kinds import Kind
from processing.stage import DetectionStage, Event
from processing.streams import StreamInfo
from processing.tails import opening_score

MONDAY = datetime(2026, 10, 5, tzinfo=UTC)
MINUTE_US = 60_000_000


def _run(
    stage: DetectionStage, values: np.ndarray, *, start: datetime = MONDAY, sweep: bool = False
) -> list[Event]:
    """Feed ``values[step, stream]`` a minute apart (NaN: not sent); returns every transition."""
    t0 = int(start.timestamp() * 1e6)
    streams = np.arange(values.shape[1], dtype=np.int32)
    events: list[Event] = []
    for step in range(values.shape[0]):
        ts = np.full(values.shape[1], t0 + step * MINUTE_US, np.int64)
        sent = ~np.isnan(values[step])
        stage.process(ReadingColumns(streams[sent], ts[sent], values[step][sent]))
        if sweep:
            stage.sweep(start + timedelta(minutes=step), since=start)
        events.extend(stage.drain())
    return events


def _opened(events: list[Event], kind: Kind) -> list[Event]:
    return [e for e in events if e.kind is kind and e.opened]


def test_a_daily_cycle_learned_on_the_first_day_raises_nothing_afterwards() -> None:
    """The first day's profile is learned as hour means, so no hour is misjudged every night."""
    rng = np.random.default_rng(5)
    minutes = np.arange(4 * 1440)
    hours = minutes / 60
    temperature = 10 + 5 * np.cos(2 * np.pi * (hours - 15) / 24) + rng.normal(0, 0.2, minutes.size)
    stage = DetectionStage()
    stage.describe([StreamInfo(0, "aq-1", "aq", "temperature", "°C", "air", "north")])
    events = _run(stage, temperature[:, None])
    assert [e for e in events if e.opened] == []


def _air_district(stations: int) -> DetectionStage:
    stage = DetectionStage()
    stage.describe(
        [StreamInfo(i, f"aq-{i}", "aq", "pm2_5", "µg/m³", "air", "north") for i in range(stations)]
    )
    return stage


def test_a_shift_the_whole_district_shares_is_weather_not_a_fault() -> None:
    rng = np.random.default_rng(6)
    steps, stations = 2 * 1440, 5
    base = 12 + 2 * rng.normal(size=stations)
    values = base * (1 + 0.04 * rng.normal(size=(steps, stations)))
    episode = np.ones(steps)
    episode[1500:1680] = np.linspace(1.0, 2.0, 180)  # doubling in three hours, everywhere
    episode[1680:] = 2.0
    values *= episode[:, None]
    events = _run(_air_district(stations), values, sweep=True)
    assert _opened(events, Kind.LEVEL_SHIFT) == []
    assert _opened(events, Kind.NEIGHBOUR) == []


def test_a_station_drifting_alone_is_a_fault() -> None:
    rng = np.random.default_rng(7)
    steps, stations = 2 * 1440, 5
    base = 12 + 2 * rng.normal(size=stations)
    values = base * (1 + 0.04 * rng.normal(size=(steps, stations)))
    values[1500:, 2] += np.arange(steps - 1500) * 0.2  # 12 µg/m³ an hour, on one station only
    events = _run(_air_district(stations), values, sweep=True)
    faulty = {e.stream_id for e in _opened(events, Kind.LEVEL_SHIFT)}
    faulty |= {e.stream_id for e in _opened(events, Kind.NEIGHBOUR)}
    assert faulty == {2}
    # Once apart from its neighbours its readings no longer count towards the air's averages:
    # the drift (to 290 µg/m³) does not declare an episode the district does not have.
    assert _opened(events, Kind.AIR_QUALITY) == []


def _bin() -> DetectionStage:
    stage = DetectionStage()
    stage.describe([StreamInfo(0, "wb-1", "bin", "fill_level", "%", "waste", "north")])
    return stage


def test_a_full_bin_reading_100_is_saturated_not_stuck() -> None:
    rng = np.random.default_rng(8)
    day = 40 + rng.normal(0, 0.8, 1440)
    full = np.full(600, 100.0)
    events = _run(_bin(), np.concatenate([day, np.linspace(40, 100, 300), full])[:, None])
    assert _opened(events, Kind.STUCK) == []
    assert _opened(events, Kind.OVERFLOW)


def test_a_bin_filling_fast_warns_before_it_is_full() -> None:
    rng = np.random.default_rng(9)
    day = 40 + rng.normal(0, 0.8, 1440)
    dumping = 60 + np.arange(40) * 1.0 + rng.normal(0, 0.8, 40)  # 60 % an hour: dumping
    events = _run(_bin(), np.concatenate([day, dumping])[:, None])
    warned = _opened(events, Kind.OVERFLOW)
    assert warned
    assert warned[0].value < 90  # warned by time-to-full, before the 90 % rule


def test_an_air_quality_alert_holds_through_an_outage_instead_of_closing_and_reopening() -> None:
    """Back from a 12-hour outage, the 24-hour PM2.5 mean covers too little of its period to
    say the air is clean: the alert stays open, then resolves once the air really is clean."""
    stage = _air_district(1)
    hourly = [90.0] * 30 + [np.nan] * 12 + [90.0] * 4 + [5.0] * 40  # µg/m³, one reading an hour
    t0 = int(MONDAY.timestamp() * 1e6)
    events: list[Event] = []
    for hour, value in enumerate(hourly):
        if np.isfinite(value):
            ts = np.array([t0 + hour * 60 * MINUTE_US], np.int64)
            stage.process(ReadingColumns(np.zeros(1, np.int32), ts, np.array([value])))
        events.extend(stage.drain())
    air = [
        (e.opened, round((e.at.timestamp() * 1e6 - t0) / 3.6e9))
        for e in events
        if e.kind is Kind.AIR_QUALITY
    ]
    assert air[0] == (True, 17)  # 18 hours: three quarters of the period
    assert len(air) == 2  # one alert, one resolution: nothing closed and reopened by the gap
    assert air[1] == (False, 60)  # the day's mean is clean again (not at hour 43, mid-gap)


def test_a_station_going_wrong_alone_does_not_take_its_neighbours_with_it() -> None:
    """The consensus is of the stations less their usual offsets: the lowest of seven stations,
    far apart in level, reading 200 µg/m³ must not move the others' comparison by a rank."""
    rng = np.random.default_rng(11)
    steps, stations = 2 * 1440, 7
    base = np.array([5.0, 10, 15, 20, 25, 30, 35])
    values = base * (1 + 0.04 * rng.normal(size=(steps, stations)))
    values[1500:, 0] = 200 * (1 + 0.04 * rng.normal(size=steps - 1500))
    events = _run(_air_district(stations), values, sweep=True)
    assert {e.stream_id for e in _opened(events, Kind.NEIGHBOUR)} == {0}


def test_a_station_falling_silent_does_not_move_its_neighbours_consensus() -> None:
    """Stations far apart in level: the consensus adds back the median of their usual offsets,
    which a silent station keeps its part in, or the highest one's silence would move every
    other station's comparison by a rank of those offsets."""
    rng = np.random.default_rng(13)
    steps, stations = 3 * 1440, 5
    base = np.array([10.0, 40, 70, 100, 130])
    values = base * (1 + 0.01 * rng.normal(size=(steps, stations)))
    values[2 * 1440 :, 4] = np.nan  # the highest station silent from the third day on
    events = _run(_air_district(stations), values, sweep=True)
    assert _opened(events, Kind.NEIGHBOUR) == []


def _heat_island(silent_copy: bool, settings: DetectionSettings) -> set[int]:
    """Four suburbs, and four central stations reporting one shared series (as datasets copy a
    weather station's); on the fourth night the centre stays 3 degrees warmer, and one copy
    may be silent from that evening. The streams opening neighbour alerts."""
    rng = np.random.default_rng(17)
    steps = 4 * 1440
    hours = np.arange(steps) / 60
    day = 10 + 5 * np.cos(2 * np.pi * (hours - 15) / 24)
    inversion = 3.0 * ((hours > 71) & (hours < 79))
    suburbs = day[:, None] + rng.normal(0, 0.2, (steps, 4))
    centre = np.repeat((day + inversion + rng.normal(0, 0.2, steps))[:, None], 4, axis=1)
    values = np.hstack([suburbs, centre])
    if silent_copy:
        values[70 * 60 :, 7] = np.nan
    stage = DetectionStage(settings)
    stage.describe(
        [StreamInfo(i, f"aq-{i}", "aq", "temperature", "°C", "air", "north") for i in range(8)]
    )
    return {e.stream_id for e in _opened(_run(stage, values, sweep=True), Kind.NEIGHBOUR)}


def test_one_silent_copy_does_not_set_its_twins_apart() -> None:
    """Four of eight: the median sits between centre and suburbs, each half the gap away. One
    copy silent, it crosses to the suburbs' side and the three others are the whole gap away,
    all at once: a split group, not three faulty stations, and no neighbour alert."""
    settings = DetectionSettings()
    assert _heat_island(silent_copy=False, settings=settings) == set()
    assert _heat_island(silent_copy=True, settings=settings) == set()
    # Without the rule each remaining copy would be alerted on.
    every_member_alone = DetectionSettings(neighbour_split_share=1.0)
    assert _heat_island(silent_copy=True, settings=every_member_alone) == {4, 5, 6}


def _hourly_stations(metric: str, values: np.ndarray) -> list[Event]:
    """Stations of one district reporting ``values[hour, station]``, swept every hour."""
    stations = values.shape[1]
    stage = DetectionStage()
    stage.describe(
        [StreamInfo(i, f"aq-{i}", "aq", metric, "", "air", "north") for i in range(stations)]
    )
    t0 = int(MONDAY.timestamp() * 1e6)
    streams = np.arange(stations, dtype=np.int32)
    events: list[Event] = []
    for hour in range(values.shape[0]):
        ts = np.full(stations, t0 + hour * 60 * MINUTE_US, np.int64)
        stage.process(ReadingColumns(streams, ts, values[hour]))
        stage.sweep(MONDAY + timedelta(hours=hour, minutes=1), since=MONDAY)
        events.extend(stage.drain())
    return events


def _weather(metric: str, weeks: int, stations: int, seed: int) -> np.ndarray:
    """Hourly readings that share the city's weather (a wandering level and a daily cycle),
    each station at its own offset with its own slow local swings and noise."""
    rng = np.random.default_rng(seed)
    hours = np.arange(weeks * 168)
    daily = np.sin(2 * np.pi * hours / 24)
    if metric == "pressure":  # hPa, stations at different heights
        common = 1012 + np.cumsum(rng.normal(0, 0.4, hours.size)) + 0.8 * daily
        offsets = -1.7 * np.arange(stations)
        local = 0.1
    else:  # pm2_5, µg/m³: episodes of a few days
        common = 60 + 30 * np.sin(2 * np.pi * hours / 120) ** 2 + 10 * daily
        offsets = rng.normal(0, 6, stations)
        local = 3.0
    swings = np.zeros((hours.size, stations))
    for hour in range(1, hours.size):  # each station's own weather, an hour-to-hour memory
        swings[hour] = 0.95 * swings[hour - 1] + rng.normal(0, local * 0.3, stations)
    noise = rng.normal(0, local, (hours.size, stations))
    return common[:, None] + offsets[None, :] + swings + noise


@dataclass(frozen=True)
class Drift:
    """What the neighbours made of one station's slow drift."""

    found_after_h: float | None  # from the drift's start to the first alert on it
    drifted: float  # how far it had drifted by then
    alert: Event | None
    others: set[int]  # other stations alerted on after the drift began


def _drift(metric: str, size: float, seed: int) -> Drift:
    """Six weeks of hourly stations; from the fifth week station 3 drifts linearly to ``size``
    over 72 hours and holds."""
    values = _weather(metric, 6, 8, seed)
    start = 4 * 168 + 5
    ramp = np.clip((np.arange(values.shape[0]) - start) / 72, 0, 1)
    values[:, 3] += size * ramp
    opened = _opened(_hourly_stations(metric, values), Kind.NEIGHBOUR)
    t_start = MONDAY + timedelta(hours=start)
    alert = next((e for e in opened if e.stream_id == 3 and e.at >= t_start), None)
    found = None if alert is None else (alert.at - t_start).total_seconds() / 3600
    drifted = 0.0 if found is None else size * min(found / 72, 1.0)
    others = {e.stream_id for e in opened if e.stream_id != 3 and e.at >= t_start}
    return Drift(found, drifted, alert, others)


def test_a_slow_drift_apart_from_the_neighbours_is_found_while_it_grows() -> None:
    """A drift over days carries a station's usual offset along with it, so the hourly
    comparison and its CUSUM only see it late (or when it snaps back); the offset of the last
    day compared with its weeks-long usual sees it grow. The alert says how far it has gone."""
    drift = _drift("pm2_5", 60.0, seed=31)
    assert drift.alert is not None
    assert drift.found_after_h is not None
    assert drift.found_after_h < 72
    assert drift.alert.value - drift.alert.expected > 0.8 * drift.drifted
    assert drift.others == set()


def test_a_pressure_drift_is_not_hidden_by_the_level_of_the_air() -> None:
    """5 % of 1,000 hPa was once the comparison's floor: a 4 hPa drift went unseen."""
    drift = _drift("pressure", 4.0, seed=32)
    assert drift.found_after_h is not None
    assert drift.found_after_h < 72
    assert drift.others == set()


def _ozone(weeks: int, stations: int, seed: int) -> np.ndarray:
    """Hourly ozone: high on sunny afternoons, low at night and now and then at the floor (2)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(weeks * 168)
    sun = np.clip(np.sin(2 * np.pi * (hours - 7) / 24), 0, None)
    level = 40 + 20 * np.sin(2 * np.pi * hours / (24 * 9))
    values = level[:, None] * 3 * sun[:, None] + 4 + rng.normal(0, 6, (hours.size, stations))
    floored: np.ndarray = np.round(np.clip(values, 2.0, None))
    return floored


def test_a_sensor_stuck_at_its_floor_while_the_others_read_high_is_stuck() -> None:
    values = _ozone(3, 6, seed=41)
    day = 2 * 168 + 3 * 24  # a Wednesday of the third week, from midnight
    values[day + 5 : day + 20, 2] = 2.0  # at the floor from dawn to evening
    stuck = _opened(_hourly_stations("o3", values), Kind.STUCK)
    assert {e.stream_id for e in stuck} == {2}
    assert stuck[0].at < MONDAY + timedelta(hours=day + 20)


def test_every_station_at_the_floor_after_a_front_is_the_air() -> None:
    """A front clears the air across the city: all stations at the floor for half a day,
    against what their own baselines expect; the neighbours agree, so nothing is stuck."""
    values = _ozone(3, 6, seed=42)
    day = 2 * 168 + 3 * 24
    values[day + 5 : day + 20, :] = 2.0
    assert _opened(_hourly_stations("o3", values), Kind.STUCK) == []


def _hourly_spike_score(size: float, settings: DetectionSettings) -> tuple[float, list[Event]]:
    """Ten weeks of an hourly daily cycle with a spike of ``size`` at the end of week nine."""
    rng = np.random.default_rng(12)
    hours = np.arange(10 * 168)
    values = 20 + 5 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 1.0, hours.size)
    at = 9 * 168 + 13
    values[at] += size
    ts = int(MONDAY.timestamp() * 1e6) + hours * 3_600_000_000
    stage = DetectionStage(settings)
    stage.describe([StreamInfo(0, "aq-1", "aq", "temperature", "°C", "air", "north")])
    scores = np.zeros(hours.size)
    stage.process(ReadingColumns(np.zeros(hours.size, np.int32), ts, values), out_score=scores)
    return float(scores[at]), stage.drain()


def test_an_hourly_stream_opens_at_the_rarity_of_once_a_year_of_its_readings() -> None:
    """A score of 0.9 is 1 in 50,000 readings: every 17 days at 30 s, every 5.7 years hourly."""
    assert opening_score(30.0, DetectionSettings().as_array()) == 0.9
    assert 0.6 < opening_score(3600.0, DetectionSettings().as_array()) < 0.7
    sizes = [
        size
        for size in np.arange(3.0, 15.0, 0.25)
        if 0.7 <= _hourly_spike_score(size, DetectionSettings())[0] < 0.85
    ]
    assert sizes, "no spike size scores between 0.7 and 0.85"
    _, events = _hourly_spike_score(sizes[0], DetectionSettings())
    assert [e.kind for e in events if e.opened] == [Kind.SPIKE]
    # Measured in readings alone (alert_score whatever the cadence) it would not open.
    strict = DetectionSettings(alert_every_s=1e12)
    assert _opened(_hourly_spike_score(sizes[0], strict)[1], Kind.SPIKE) == []
