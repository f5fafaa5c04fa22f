"""The main detector: each stream's seasonal baseline and the robust z-score of every reading.

A stream's expectation is its fast level plus the usual offset of the hour (24 hours x weekday or
weekend, in the city's local time), interpolated between the two nearest hours. Readings far from
it teach almost nothing, so a fault is not learned as normal.

The per-reading step sits inside the loop of :func:`baseline_range` on purpose: numba passes an
array to an inlined helper by taking a reference (an atomic increment and decrement per array per
call), which cost more than the arithmetic itself and held the detector to a third of its speed.
Helpers called on every reading therefore take and return numbers only; the rare paths (warm-up,
the end of warm-up, a new hour) are ordinary calls.
"""

from __future__ import annotations

import math

import numpy as np

from processing.config import inline_kernel, kernel
from processing.layout import (
    C_CADENCE,
    C_EXPECTED,
    C_FIRST_TS,
    C_JUMP_M,
    C_JUMP_Q,
    C_LAST_TS,
    C_LAST_X,
    C_LEVEL,
    C_N,
    C_PAIR,
    C_PAIR_END,
    C_PAIR_START,
    C_QUANTUM,
    C_SETTLED,
    C_SHIFT_M,
    C_SHIFT_Q,
    C_SIGMA,
    C_SPIKE_M,
    C_SPIKE_Q,
    C_SPREAD,
    C_STEP_SPREAD,
    HOUR_US,
    MAD_TO_SIGMA,
    N_SLOTS,
    P_FLOOR,
    S_CALM_SCORE,
    S_LEVEL_READINGS,
    S_LEVEL_TAU,
    S_PROTECT,
    S_SLOT_TAU,
    S_SLOT_WARM,
    S_SUSTAIN_Z,
    S_WARMUP,
    S_WARMUP_S,
    US,
    WARM_UP_GUARD_FROM,
)
from processing.tails import SHIFT_PRIOR, SPIKE_PRIOR, excess_at


@kernel
def zone_row(zone: np.ndarray, ts_us: float) -> int:
    """The row of the zone table (``processing.zones``) in force at ``ts_us``: bisection."""
    lo = 0
    hi = zone.shape[0]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if zone[mid, 0] <= ts_us:
            lo = mid
        else:
            hi = mid
    return lo


@inline_kernel
def slot_of(ts_us: float, utc_offset_s: float) -> int:
    """Seasonal slot: local hour of day, plus 24 on Saturdays and Sundays."""
    hours = (int(ts_us) + int(utc_offset_s) * 1_000_000) // HOUR_US
    return _slot_of_hour(hours)


@inline_kernel
def _slot_of_hour(hours: int) -> int:
    weekday = (hours // 24 + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    return hours % 24 + (24 if weekday >= 5 else 0)


@inline_kernel
def slot_pair(ts_us: float, utc_offset_s: float) -> tuple[int, int, float]:
    """The two slots whose centres (half past each hour) surround ``ts_us``, and the later's weight.

    The profile then changes linearly through the hour instead of in steps.
    """
    local = int(ts_us) + int(utc_offset_s) * 1_000_000 - HOUR_US // 2
    hours = local // HOUR_US
    weight = (local - hours * HOUR_US) / HOUR_US
    return _slot_of_hour(hours), _slot_of_hour(hours + 1), weight


@inline_kernel
def twin_slot(s: int) -> int:
    """The same hour of the other kind of day (weekday <-> weekend)."""
    return s + 24 if s < 24 else s - 24


@inline_kernel
def learned_cadence(cadence: float, gap_s: float) -> float:
    """The interval between readings, learned; one long gap (an outage) moves it only a little."""
    if cadence == 0:
        return gap_s
    return cadence + 0.05 * (min(gap_s, 10 * cadence) - cadence)


@kernel
def settle(core: np.ndarray, slots: np.ndarray, r: int, warm_count: float) -> None:
    """End of warm-up: turn the learned hour means into offsets from the overall mean.

    During warm-up every slot learns its own plain mean and the level the mean of everything, so
    the first day's profile does not depend on a level that was itself still moving.
    """
    level = core[r, C_LEVEL]
    weight = 0.0
    spread = 0.0
    for s in range(N_SLOTS):
        count = slots[r, s, 2]
        if count > 0:
            slots[r, s, 0] -= level
        if count >= warm_count:  # a slot of one or two readings knows nothing of spread
            spread += count * slots[r, s, 1]
            weight += count
    if weight > 0:
        core[r, C_SPREAD] = spread / weight
    core[r, C_STEP_SPREAD] = core[r, C_SPREAD]  # until learned, changes as large as the spread
    core[r, C_SPIKE_Q], core[r, C_SPIKE_M] = SPIKE_PRIOR
    core[r, C_JUMP_Q], core[r, C_JUMP_M] = SPIKE_PRIOR
    core[r, C_SHIFT_Q], core[r, C_SHIFT_M] = SHIFT_PRIOR
    core[r, C_SETTLED] = 1.0


@kernel
def warm_up_step(
    core: np.ndarray,
    slots: np.ndarray,
    params: np.ndarray,
    cfg: np.ndarray,
    zone: np.ndarray,
    r: int,
    ts: float,
    x: float,
) -> None:
    """Learn from one warm-up reading: plain means of everything and of each hour; no score.

    Only an absurd reading is held back (to 20 sigma), so one glitch cannot poison the first day.
    """
    n = core[r, C_N]
    floor0 = max(params[r, P_FLOOR], core[r, C_QUANTUM])
    s = slot_of(ts, zone[zone_row(zone, ts), 1])
    count = slots[r, s, 2]
    if n >= WARM_UP_GUARD_FROM:
        level = core[r, C_LEVEL]
        limit = 20.0 * max(MAD_TO_SIGMA * core[r, C_SPREAD], floor0)
        x = min(max(x, level - limit), level + limit)
    level = core[r, C_LEVEL] + (x - core[r, C_LEVEL]) / (n + 1.0)
    core[r, C_LEVEL] = level
    core[r, C_SPREAD] += (abs(x - level) - core[r, C_SPREAD]) / (n + 1.0)
    mean = x if count == 0 else slots[r, s, 0] + (x - slots[r, s, 0]) / (count + 1.0)
    slots[r, s, 1] += (abs(x - mean) - slots[r, s, 1]) / (count + 1.0)
    slots[r, s, 0] = mean
    slots[r, s, 2] = count + 1.0
    core[r, C_N] = n + 1.0
    expected = mean if count >= cfg[S_SLOT_WARM] else level
    core[r, C_EXPECTED] = expected
    core[r, C_SIGMA] = max(MAD_TO_SIGMA * core[r, C_SPREAD], floor0)


@kernel
def remember_pair(core: np.ndarray, zone: np.ndarray, r: int, ts: float) -> None:
    """Work out the pair of slots around ``ts`` and remember it until the hour ends.

    It is remembered in UTC, and only until the next change of the clocks, so a checkpoint
    restored after a change is not an hour off. Working it out takes integer divisions and a
    search that would cost more than all the rest, so it is done once an hour.
    """
    row = zone_row(zone, ts)
    sa, sb, wb = slot_pair(ts, zone[row, 1])
    start = ts - wb * HOUR_US
    end = start + HOUR_US
    if row + 1 < zone.shape[0]:
        end = min(end, zone[row + 1, 0])
    core[r, C_PAIR_START] = start
    core[r, C_PAIR_END] = end
    core[r, C_PAIR] = sa * N_SLOTS + sb


@kernel
def baseline_range(
    rows: np.ndarray,
    ts_us: np.ndarray,
    values: np.ndarray,
    lo: int,
    hi: int,
    core: np.ndarray,
    slots: np.ndarray,
    params: np.ndarray,
    cfg: np.ndarray,
    zone: np.ndarray,
    own_clock: bool,
    out_z: np.ndarray,
) -> float:
    """Score readings ``lo`` to ``hi`` against their seasonal baselines, learning as it goes.

    Writes each robust z-score (0 during warm-up) to ``out_z`` and the expectation and sigma to
    ``core``; returns the last z. With ``own_clock`` it also learns each stream's cadence and
    newest reading and scores non-finite values NaN without learning; the fused stage does
    those itself and passes one finite reading at a time.
    """
    warm_count = cfg[S_SLOT_WARM]
    calm_excess = excess_at(cfg[S_CALM_SCORE])
    z = 0.0
    for i in range(lo, hi):
        r = rows[i]
        x = values[i]
        ts = float(ts_us[i])
        last = core[r, C_LAST_TS]
        n = core[r, C_N]
        if own_clock:
            if not math.isfinite(x):
                out_z[i] = math.nan
                continue
            if n > 0 and ts > last:
                core[r, C_CADENCE] = learned_cadence(core[r, C_CADENCE], (ts - last) / US)
        if n == 0:
            core[r, C_LEVEL] = x
            core[r, C_SPREAD] = 0.0
            core[r, C_FIRST_TS] = ts
        else:
            # The smallest change the stream has shown is its quantum (whole counts, 0.1 °C
            # steps): no spread is smaller, whatever the metric's nominal resolution.
            step = abs(x - core[r, C_LAST_X])
            if step > 0.0 and (step < core[r, C_QUANTUM] or core[r, C_QUANTUM] == 0.0):
                core[r, C_QUANTUM] = step
        warm = n >= cfg[S_WARMUP] and ts - core[r, C_FIRST_TS] >= cfg[S_WARMUP_S] * US
        if not warm:
            warm_up_step(core, slots, params, cfg, zone, r, ts, x)
            z = 0.0
        else:
            if core[r, C_SETTLED] == 0:
                settle(core, slots, r, warm_count)
            # Each slot holds its hour's usual offset from the running level, so the
            # expectation keeps the daily shape while following slow changes of the whole level
            # (weather, seasons); between two slots' centres the offset is interpolated.
            start = core[r, C_PAIR_START]
            if ts < start or ts >= core[r, C_PAIR_END] or start == 0.0:
                remember_pair(core, zone, r, ts)
                start = core[r, C_PAIR_START]
            pair = int(core[r, C_PAIR])
            sa = pair // N_SLOTS
            sb = pair - sa * N_SLOTS
            wb = (ts - start) / HOUR_US
            wa = 1.0 - wb
            level = core[r, C_LEVEL]
            spread = core[r, C_SPREAD]
            # A slot not yet learned borrows the same hour of the other kind of day with double
            # the spread, or failing that expects the level itself.
            oa, ta = 0.0, spread
            ob, tb = 0.0, spread
            for j in range(2):
                s = sa if j == 0 else sb
                o, t = 0.0, spread
                if slots[r, s, 2] >= warm_count:
                    o, t = slots[r, s, 0], slots[r, s, 1]
                else:
                    twin = twin_slot(s)
                    if slots[r, twin, 2] >= warm_count:
                        o, t = slots[r, twin, 0], 2.0 * max(slots[r, twin, 1], spread)
                if j == 0:
                    oa, ta = o, t
                else:
                    ob, tb = o, t
            floor0 = max(params[r, P_FLOOR], core[r, C_QUANTUM])
            offset = wa * oa + wb * ob
            expected = level + offset
            sigma = max(MAD_TO_SIGMA * (wa * ta + wb * tb), floor0)
            z = (x - expected) / sigma

            # Learn with an exponential window of level_tau (at least level_readings); a reading
            # beyond what is usual is probably the anomaly, so it barely teaches, and no reading
            # moves anything by more than 3 sigma. "Beyond" is where the stream's own tail says
            # 1 in 3,000 once it is learned: a stream with heavy tails keeps learning from its
            # ordinary large swings instead of lagging behind them.
            cadence = core[r, C_CADENCE]
            limit = cfg[S_SUSTAIN_Z]
            if core[r, C_SPIKE_M] > 0.0:
                usual = core[r, C_SPIKE_Q] + calm_excess * core[r, C_SPIKE_M]
                limit = max(limit, usual)
            weight = cfg[S_PROTECT] if abs(z) > limit else 1.0
            a = min(1.0 / cfg[S_LEVEL_READINGS], cadence / cfg[S_LEVEL_TAU])
            if (n + 1.0) * a < 1.0:  # still a running mean (a division only while it matters)
                a = 1.0 / (n + 1.0)
            a *= weight
            g_sigma = max(MAD_TO_SIGMA * spread, floor0)
            d = min(max(x - offset - level, -3.0 * g_sigma), 3.0 * g_sigma)
            core[r, C_LEVEL] = level + a * d
            core[r, C_SPREAD] = spread + a * (abs(d) - spread)

            # Both slots learn from the interpolated error, each in proportion to its weight.
            err = min(max(x - expected, -3.0 * sigma), 3.0 * sigma)
            slot_rate = min(0.5, cadence / cfg[S_SLOT_TAU])
            for j in range(2):
                s = sa if j == 0 else sb
                w = wa if j == 0 else wb
                count = slots[r, s, 2]
                if count == 0:  # start from what it was borrowing
                    slots[r, s, 0] = oa if j == 0 else ob
                    slots[r, s, 1] = max(ta if j == 0 else tb, spread)
                b = slot_rate if (count + 1.0) * slot_rate >= 1.0 else 1.0 / (count + 1.0)
                b *= weight * w
                slots[r, s, 0] += b * err
                slots[r, s, 1] += b * (abs(err) - slots[r, s, 1])
                slots[r, s, 2] = count + w
            core[r, C_N] = n + 1.0
            core[r, C_EXPECTED] = expected
            core[r, C_SIGMA] = sigma
        out_z[i] = z
        if own_clock:
            if ts > last:
                core[r, C_LAST_TS] = ts
            core[r, C_LAST_X] = x
    return z


@kernel
def baseline_kernel(
    rows: np.ndarray,
    ts_us: np.ndarray,
    values: np.ndarray,
    core: np.ndarray,
    slots: np.ndarray,
    params: np.ndarray,
    cfg: np.ndarray,
    zone: np.ndarray,
    out_z: np.ndarray,
) -> None:
    """The main detector alone over a batch: seasonal robust z-scores, learning as it goes.

    Non-finite values score NaN and teach nothing.
    """
    baseline_range(
        rows, ts_us, values, 0, rows.shape[0], core, slots, params, cfg, zone, True, out_z
    )
