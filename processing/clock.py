"""Sweeps on the readings' own clock, for history played faster (or slower) than it happened.

A live worker runs the time-driven checks (missing data, neighbours) on the wall clock. Readings
replayed at a speed-up (``smartcity replay``, a backfill, the offline benchmarks) would then be
judged against the wrong time: days of data between two sweeps, or every sensor silent because
its newest reading is last week's. :class:`ReadingsClock` instead sweeps at the end of each window
of acquisition time, the moment a live worker would have, so a replay through ingest and the
same readings scored offline give the same alerts.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np

from processing.hook import ReadingColumns
from processing.stage import DetectionStage

MAX_CATCH_UP = 168  # windows swept one by one through a silence (a week of hours)


class ReadingsClock:
    """A detection hook that feeds ``stage`` and sweeps whenever the readings pass a window's end.

    Readings are taken in time order within each batch; a reading older than the current window
    (a late device) is scored where it falls, without moving the clock back.

    Args:
        stage: The detectors.
        window_s: The sweep period, in seconds of acquisition time.
    """

    def __init__(self, stage: DetectionStage, *, window_s: float = 3600.0) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.stage = stage
        self._window_us = int(window_s * 1e6)
        self._window: int | None = None  # the window of the newest readings, not yet swept
        self._since: datetime | None = None

    def __call__(self, batch: ReadingColumns, out_score: np.ndarray | None = None) -> None:
        """Score ``batch``, sweeping at each window boundary it crosses (as ingest's hook)."""
        if len(batch) == 0:
            return
        order = np.argsort(batch.ts_us, kind="stable")
        ts_us = batch.ts_us[order]
        windows = ts_us // self._window_us
        if self._since is None:
            self._since = datetime.fromtimestamp(int(ts_us[0]) / 1e6, UTC)
        # Readings in the current window or before it go in at once; each later window is
        # preceded by the sweeps closing the windows before it.
        floor = windows[0] if self._window is None else self._window
        cuts = np.flatnonzero(np.diff(np.maximum(windows, floor))) + 1
        scores = np.empty(len(batch))
        for lo, hi in itertools.pairwise([0, *cuts.tolist(), len(batch)]):
            window = int(windows[hi - 1])
            if self._window is None:
                self._window = window
            self._catch_up(window)
            pick = order[lo:hi]
            part = ReadingColumns(batch.stream_ids[pick], ts_us[lo:hi], batch.values[pick])
            self.stage.process(part, out_score=scores[lo:hi])
        if out_score is not None:
            out_score[order] = scores

    def sweep(self) -> None:
        """Close the current window: run the sweeps at its end."""
        if self._window is None or self._since is None:
            return
        end = (self._window + 1) * self._window_us
        self.stage.sweep(datetime.fromtimestamp(end / 1e6, UTC), since=self._since)

    def _catch_up(self, window: int) -> None:
        """Sweep the end of every window before ``window``, as a live worker would have.

        Through a silence of the whole city (nothing arrives to move the clock) a live worker
        kept sweeping: that is when missing data is noticed. A silence longer than
        ``MAX_CATCH_UP`` windows is swept at its first windows and its last.
        """
        assert self._window is not None
        passed = window - self._window
        for step in range(passed):
            if step < MAX_CATCH_UP or step == passed - 1:
                self.sweep()  # closes self._window
            self._window += 1
