"""Alert conditions: when an anomaly opens, when it is over, and the events that say so.

Each stream keeps one condition per kind in ``conds[r, K_*, D_*]``, with hysteresis (open on the
trigger, stay open while the sustain test holds) and a counter that stretches the quiet time of a
condition that keeps reopening.
"""

from __future__ import annotations

import math

import numpy as np

from processing.config import kernel
from processing.layout import (
    D_ACTIVE,
    D_CALM,
    D_FLAP,
    D_OPENED,
    D_PEAK,
    D_SINCE,
    E_EXPECTED,
    E_KIND,
    E_OPEN,
    E_ROW,
    E_SCORE,
    E_SIGMA,
    E_TS,
    E_VALUE,
    US,
)


@kernel
def condition_step(
    conds: np.ndarray,
    events: np.ndarray,
    n_events: int,
    r: int,
    k: int,
    ts: float,
    trigger: bool,
    sustain: bool,
    score: float,
    value: float,
    expected: float,
    sigma: float,
    min_s: float,
    quiet_s: float,
    flap_tau_s: float,
) -> int:
    """Advance one alert condition; append an open or resolve event. Returns the event count.

    Opening needs ``trigger`` for ``min_s``; resolving needs ``sustain`` to be false for
    ``quiet_s``, stretched while the condition flaps (opened repeatedly within ``flap_tau_s``).
    """
    active = conds[r, k, D_ACTIVE] > 0
    anomalous = sustain if active else trigger
    if anomalous:
        if conds[r, k, D_SINCE] == 0:
            conds[r, k, D_SINCE] = ts
        conds[r, k, D_CALM] = 0.0
        if score > conds[r, k, D_PEAK]:
            conds[r, k, D_PEAK] = score
        if not active and ts - conds[r, k, D_SINCE] >= min_s * US:
            opened = conds[r, k, D_OPENED]
            decay = math.exp(-(ts - opened) / (flap_tau_s * US)) if opened > 0 else 0.0
            conds[r, k, D_FLAP] = conds[r, k, D_FLAP] * decay + 1.0
            conds[r, k, D_ACTIVE] = 1.0
            conds[r, k, D_OPENED] = ts
            _emit(events, n_events, r, k, 1.0, ts, conds[r, k, D_PEAK], value, expected, sigma)
            return n_events + 1
        return n_events
    if not active:
        conds[r, k, D_SINCE] = 0.0
        conds[r, k, D_PEAK] = 0.0
        return n_events
    if conds[r, k, D_CALM] == 0:
        conds[r, k, D_CALM] = ts
    hold = quiet_s * (1.0 + 2.0 * max(conds[r, k, D_FLAP] - 1.0, 0.0))
    if ts - conds[r, k, D_CALM] >= hold * US:
        peak = conds[r, k, D_PEAK]
        conds[r, k, D_ACTIVE] = 0.0
        conds[r, k, D_SINCE] = 0.0
        conds[r, k, D_CALM] = 0.0
        conds[r, k, D_PEAK] = 0.0
        _emit(events, n_events, r, k, 0.0, ts, peak, value, expected, sigma)
        return n_events + 1
    return n_events


@kernel
def _emit(
    events: np.ndarray,
    i: int,
    r: int,
    k: int,
    opened: float,
    ts: float,
    score: float,
    value: float,
    expected: float,
    sigma: float,
) -> None:
    events[i, E_ROW] = r
    events[i, E_KIND] = k
    events[i, E_OPEN] = opened
    events[i, E_TS] = ts
    events[i, E_SCORE] = score
    events[i, E_VALUE] = value
    events[i, E_EXPECTED] = expected
    events[i, E_SIGMA] = sigma
