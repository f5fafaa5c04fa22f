"""Score one series of unknown kind with the same detectors the fleet uses.

Examples:
    >>> import numpy as np
    >>> ts = np.arange(300, dtype=np.int64) * 60_000_000
    >>> values = np.sin(np.arange(300) / 10.0)
    >>> values[200] = 25.0
    >>> scores = score_series(ts, values)
    >>> bool(scores[200] > 0.9), bool(scores[:30].max() == 0)
    (True, True)
    >>> float(score_series(ts[:3], [1.0, float("nan"), 1.0])[1])  # a missing reading
    0.0
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.clock import ReadingsClock
from processing.config import DetectionSettings
from processing.hook import ReadingColumns
from processing.stage import DetectionStage, Event


def score_series(
    timestamps: ArrayLike, values: ArrayLike, *, settings: DetectionSettings | None = None
) -> NDArray[np.float64]:
    """A causal, calibrated anomaly score in [0, 1] for every point of one series.

    Each point is scored before it is learned from, by the seasonal robust baseline (spikes), the
    CUSUM (level shifts and drift) and the run-length check (stuck values); each detector's
    strength is judged against the tail of its own history (see ``docs/detection.md``), and the
    score is the strongest. Messy input is taken as it comes: points are read in the order
    given (a timestamp that steps back or repeats is scored but does not move the learned
    cadence or clock), NaN is a missing reading (score 0, nothing learned) and an infinite
    value is impossible (score 1). No domain rules apply: the kind is unknown.

    Args:
        timestamps: Datetimes (``datetime64``) or epoch microseconds.
        values: The measurements.
        settings: Thresholds; by default the fleet's, with warm-up counted in readings only.

    Raises:
        ValueError: The arrays are not one-dimensional and of equal length.
    """
    ts = np.asarray(timestamps)
    if np.issubdtype(ts.dtype, np.datetime64):
        ts_us = ts.astype("datetime64[us]").astype(np.int64)
    else:
        ts_us = np.asarray(ts, dtype=np.float64).astype(np.int64)
    x = np.asarray(values, dtype=np.float64)
    if ts_us.shape != x.shape or x.ndim != 1:
        raise ValueError("timestamps and values must be one-dimensional and of equal length")
    stage = DetectionStage(settings or replace(DetectionSettings(), warmup_s=0.0), capacity=1)
    scores = np.zeros(x.size)
    sent = np.flatnonzero(~np.isnan(x))
    if sent.size:
        out = np.zeros(sent.size)
        columns = ReadingColumns(np.zeros(sent.size, np.int32), ts_us[sent], x[sent])
        stage.process(columns, out_score=out)
        scores[sent] = out
    return scores


def baseline_band(
    ts_us: NDArray[np.int64],
    values: NDArray[np.float64],
    shown_from_us: int,
    *,
    points: int = 300,
    settings: DetectionSettings | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Scores, and the learned baseline (expected value and spread) as a chart draws them.

    Everything before ``shown_from_us`` is learned from in one go; the rest is replayed in
    ``points`` steps, reading the detector's expected value and sigma after each, so a chart
    shows the band the detectors compared each reading with.

    Returns:
        (score per reading, band times, expected, sigma), the band over the shown part only.
    """
    from processing import layout as k  # noqa: PLC0415  # the state's column numbers

    stage = DetectionStage(settings or replace(DetectionSettings(), warmup_s=0.0), capacity=1)
    scores = np.zeros(values.size)
    first = int(np.searchsorted(ts_us, shown_from_us))
    bounds = [0, first, *np.linspace(first, values.size, points + 1).astype(int)[1:].tolist()]
    band_ts, expected, sigma = [], [], []
    for start, stop in itertools.pairwise(bounds):
        if stop <= start:
            continue
        part = slice(start, stop)
        out = np.zeros(stop - start)
        columns = ReadingColumns(np.zeros(stop - start, np.int32), ts_us[part], values[part])
        stage.process(columns, out_score=out)
        scores[part] = out
        if start >= first:
            band_ts.append(int(ts_us[stop - 1]))
            expected.append(float(stage.state.core[0, k.C_EXPECTED]))
            sigma.append(float(stage.state.core[0, k.C_SIGMA]))
    return scores, np.array(band_ts, np.int64), np.array(expected), np.array(sigma)


def replay(
    stage: DetectionStage,
    stream_ids: NDArray[np.int32],
    ts_us: NDArray[np.int64],
    values: NDArray[np.float64],
    *,
    batch_s: float = 3600.0,
) -> tuple[list[Event], NDArray[np.float64]]:
    """Feed readings through ``stage`` as ingest would: batches in time order, a sweep after each.

    The readings must be sorted by time. Each batch holds the readings of one ``batch_s`` window
    and is followed by the sweeps (missing data, neighbours) at the window's end, the moment a
    live worker would have run them.

    Returns:
        Every opening and resolution, oldest first, and each reading's score.
    """
    scores = np.zeros(values.size)
    events: list[Event] = []
    if values.size == 0:
        return events, scores
    if (np.diff(ts_us) < 0).any():
        raise ValueError("readings must be in time order")
    # The clock cuts the readings at window ends and sweeps there, as for ingest's batches.
    clock = ReadingsClock(stage, window_s=batch_s)
    clock(ReadingColumns(stream_ids, ts_us, values), out_score=scores)
    clock.sweep()
    events.extend(stage.drain())
    return events, scores
