"""Sweeps on the readings' own clock: the same alerts however the readings are cut into batches."""

from __future__ import annotations

import itertools

import numpy as np

from processing.clock import ReadingsClock
from processing.config import DetectionSettings
from processing.hook import ReadingColumns
from processing.stage import DetectionStage, Event
from processing.streams import StreamInfo

HOUR = 3_600_000_000
T0 = 1_795_000_000_000_000 - 1_795_000_000_000_000 % HOUR


def _city() -> tuple[list[StreamInfo], ReadingColumns]:
    """Five stations' PM2.5 every 10 minutes for four days; one drifts apart, one falls silent."""
    rng = np.random.default_rng(7)
    infos = [StreamInfo(i + 1, f"aq{i}", "aq", "pm2_5", "", "air", "north") for i in range(5)]
    steps = np.arange(4 * 144)
    ids, ts, values = [], [], []
    for info in infos:
        x = 30 + 10 * np.sin(steps / 144 * 2 * np.pi) + rng.normal(0, 1, steps.size)
        if info.stream_id == 2:
            x = x + np.clip(steps - 400, 0, None) * 0.3
        keep = np.ones(steps.size, bool)
        if info.stream_id == 4:
            keep[300:330] = False
        ids.append(np.full(keep.sum(), info.stream_id, np.int32))
        ts.append(T0 + steps[keep] * 600_000_000 + info.stream_id * 1_000_000)
        values.append(np.round(x[keep], 1))
    order = np.argsort(np.concatenate(ts), kind="stable")
    return infos, ReadingColumns(
        np.concatenate(ids)[order], np.concatenate(ts)[order], np.concatenate(values)[order]
    )


def _run(cuts: list[int]) -> list[Event]:
    infos, readings = _city()
    stage = DetectionStage(DetectionSettings(warmup_s=0.0))
    stage.describe(infos)
    clock = ReadingsClock(stage)
    events: list[Event] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(readings)], strict=True):
        clock(
            ReadingColumns(
                readings.stream_ids[lo:hi], readings.ts_us[lo:hi], readings.values[lo:hi]
            )
        )
        events.extend(stage.drain())
    return events


def test_the_alerts_do_not_depend_on_how_the_readings_are_batched() -> None:
    whole = _run([])
    kinds = {e.kind.slug for e in whole if e.opened}
    assert {"neighbour", "missing"} <= kinds  # the sweeps ran, on the readings' time
    rng = np.random.default_rng(3)
    size = len(_city()[1])
    for _ in range(3):
        cuts = sorted(set(rng.integers(1, size, 40).tolist()))
        assert _run(cuts) == whole


def test_a_late_reading_does_not_take_the_clock_back() -> None:
    infos, readings = _city()
    stage = DetectionStage(DetectionSettings(warmup_s=0.0))
    stage.describe(infos)
    swept: list[float] = []
    original = stage.sweep

    def recording(now, *, since):  # type: ignore[no-untyped-def]
        swept.append(now.timestamp())
        original(now, since=since)

    stage.sweep = recording  # type: ignore[method-assign]
    clock = ReadingsClock(stage)
    clock(ReadingColumns(readings.stream_ids[:100], readings.ts_us[:100], readings.values[:100]))
    before = list(swept)
    late = ReadingColumns(
        readings.stream_ids[:1], readings.ts_us[:1] - 5 * HOUR, readings.values[:1]
    )
    clock(late)
    assert swept == before  # no sweep for a window already closed
    assert all(b > a for a, b in itertools.pairwise(swept))
    assert len(swept) == (int(readings.ts_us[99]) // HOUR) - (int(readings.ts_us[0]) // HOUR)


def test_a_silence_of_the_whole_city_is_noticed_while_it_lasts() -> None:
    """One counter, hourly, silent for ten hours: nothing arrives to move the clock, yet the
    missing-data alert opens during the silence, when a live worker's sweep would have."""
    info = StreamInfo(1, "loop-1", "loop", "vehicle_count", "", "traffic", "north")
    stage = DetectionStage(DetectionSettings(warmup_s=0.0))
    stage.describe([info])
    hours = np.r_[np.arange(48), np.arange(58, 70)]
    clock = ReadingsClock(stage)
    events: list[Event] = []
    for hour in hours.tolist():
        ts = np.array([T0 + hour * HOUR], np.int64)
        clock(ReadingColumns(np.ones(1, np.int32), ts, np.array([100.0 + hour % 3])))
        events.extend(stage.drain())
    missing = [
        (e.opened, (e.at.timestamp() * 1e6 - T0) / HOUR) for e in events if e.kind.slug == "missing"
    ]
    assert missing[0][0] is True
    assert 48 < missing[0][1] < 58  # during the silence, about five cadences in
    assert missing[1] == (False, 58)  # over with the first reading back
