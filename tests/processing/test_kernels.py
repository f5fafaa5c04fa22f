"""The fused kernel against its plain-Python reference, on the inputs that break detectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.detection_speed import STEADY, fleet_readings, numpy_baseline
from processing import layout as k
from processing import seasonal
from processing.config import DetectionSettings
from processing.hook import ReadingColumns
from processing.kinds import Kind
from processing.stage import DetectionStage
from processing.state import StreamState
from processing.zones import offset_table
from tests.processing.naive import NaiveStream, seasonal_slot

T0 = 1_795_000_000_000_000  # 2026-11-18, a Wednesday
MINUTE = 60_000_000
FRIDAY_NOON = T0 - T0 % (1440 * MINUTE) + (2 * 24 + 12) * 60 * MINUTE


def _series(name: str, n: int = 3000, seed: int = 20261123) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    match name:
        case "random":
            return rng.normal(50, 5, n)
        case "nan_inf":
            values = rng.normal(10, 1, n)
            values[rng.choice(n, 40, replace=False)] = np.nan
            values[rng.choice(n, 10, replace=False)] = np.inf
            values[rng.choice(n, 10, replace=False)] = -np.inf
            return values
        case "constant":
            return np.full(n, 7.25)
        case "step":
            return np.where(t < n // 2, 20.0, 45.0) + rng.normal(0, 1, n)
        case "seasonal":
            return 30 + 20 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 2, n)
        case "spikes":
            values = rng.normal(100, 3, n)
            values[::397] += 60
            return values
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["random", "nan_inf", "constant", "step", "seasonal", "spikes"])
def test_stage_kernel_matches_reference(name: str) -> None:
    values = _series(name)
    # From Friday noon: the day of warm-up ends on Saturday, whose unseen hours borrow Friday's.
    ts = FRIDAY_NOON + np.arange(values.size, dtype=np.int64) * MINUTE
    stage = DetectionStage()
    scores = np.empty(values.size)
    # Uneven batches: state must carry across calls exactly.
    for lo, hi in ((0, 7), (7, 1000), (1000, values.size)):
        batch = ReadingColumns(np.full(hi - lo, 3, np.int32), ts[lo:hi], values[lo:hi])
        stage.process(batch, out_score=scores[lo:hi])
    reference = NaiveStream()
    expected = np.array(
        [reference.step(float(t), float(v)) for t, v in zip(ts, values, strict=False)]
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-12)
    events = stage.drain()
    got = [(e.kind, e.opened, round(e.at.timestamp() * 1e6)) for e in events]
    assert got == [(kind, opened, round(at)) for kind, opened, at, _ in reference.events]
    peaks = [peak for *_, peak in reference.events]
    np.testing.assert_allclose([e.score for e in events], peaks, rtol=1e-9, atol=1e-12)
    assert np.isfinite(stage.state.core[: stage.streams]).all() or name == "constant"


def test_scores_stay_in_unit_interval_and_finite_in_finite_out() -> None:
    values = _series("nan_inf")
    ts = T0 + np.arange(values.size, dtype=np.int64) * MINUTE
    stage = DetectionStage()
    scores = np.empty(values.size)
    stage.process(ReadingColumns(np.zeros(values.size, np.int32), ts, values), out_score=scores)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (scores[~np.isfinite(values)] == 1).all()
    learned = stage.state.core[0]
    assert math.isfinite(learned[k.C_LEVEL])
    assert math.isfinite(learned[k.C_SPREAD])


def test_warm_up_holds_scores_at_zero() -> None:
    settings = DetectionSettings()
    values = _series("spikes")
    values[5] = 1e6  # a wild value inside the warm-up: scored 0, no spike alert
    ts = T0 + np.arange(values.size, dtype=np.int64) * MINUTE
    stage = DetectionStage(settings)
    scores = np.empty(values.size)
    stage.process(ReadingColumns(np.zeros(values.size, np.int32), ts, values), out_score=scores)
    assert (scores[: int(settings.warmup_readings)] == 0).all()
    spikes = [e for e in stage.drain() if e.kind is Kind.SPIKE and e.opened]
    assert spikes
    assert all(e.at.timestamp() * 1e6 > ts[int(settings.warmup_readings)] for e in spikes)


@pytest.mark.parametrize("offset", [0.0, 3600.0, -18000.0])
def test_seasonal_slot_matches_reference(offset: float) -> None:
    rng = np.random.default_rng(7)
    for ts in rng.integers(0, 4_000_000_000_000_000, 500):
        assert seasonal.slot_of(float(ts), offset) == seasonal_slot(int(ts), offset)


def test_batches_of_many_streams_match_one_stream_at_a_time() -> None:
    rng = np.random.default_rng(11)
    n, streams = 4000, 9
    ids = rng.integers(0, streams, n).astype(np.int32)
    ts = T0 + np.sort(rng.integers(0, 4000 * MINUTE, n)).astype(np.int64)
    values = rng.normal(20, 3, n) + ids
    values[rng.choice(n, 15, replace=False)] += 80
    mixed = DetectionStage()
    together = np.empty(n)
    mixed.process(ReadingColumns(ids, ts, values), out_score=together)
    for stream in range(streams):
        mask = ids == stream
        reference = NaiveStream()
        expected = [
            reference.step(float(t), float(v)) for t, v in zip(ts[mask], values[mask], strict=False)
        ]
        np.testing.assert_allclose(together[mask], expected, rtol=1e-9, atol=1e-12)


def test_score_series_is_causal_bounded_and_refuses_unequal_lengths() -> None:
    from processing import score_series  # noqa: PLC0415 - the public entry point, as users import it

    values = _series("seasonal", 2000)
    values[1500] += 80
    ts = np.datetime64("2026-11-02T00:00") + np.arange(2000) * np.timedelta64(5, "m")
    scores = score_series(ts, values)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[1500] > 0.9
    assert np.array_equal(score_series(ts[:1500], values[:1500]), scores[:1500])  # causal
    with pytest.raises(ValueError, match="equal length"):
        score_series(ts[:10], values[:9])


def test_speed_benchmarks_numpy_twin_does_the_kernels_arithmetic() -> None:
    """The benchmark's vectorised baseline must be the same work, or its ratio means nothing."""
    batch = fleet_readings(150, 90)
    state = StreamState(150)
    kernel_z = np.empty(len(batch))
    seasonal.baseline_kernel(
        batch.stream_ids.astype(np.int64), batch.ts_us, batch.values,
        state.core, state.slots, state.params, STEADY.as_array(), offset_table(0.0), kernel_z,
    )  # fmt: skip
    np.testing.assert_allclose(numpy_baseline(batch, 150), kernel_z, rtol=1e-9, atol=1e-9)
