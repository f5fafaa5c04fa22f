"""Numba kernels: pure functions over per-stream state arrays, one row per sensor stream.

State layout (all float64, C-contiguous, row ``r`` is one stream):

- ``core[r, C_*]``: counters, the fast level and spread, CUSUMs, run lengths, rates;
- ``slots[r, 48, 3]``: the seasonal profile, 24 hours x (weekday, weekend), each slot holding
  level, spread (mean absolute deviation) and count;
- ``hours[r, 24, 2]``: a ring of hourly sums and counts for the air-quality averaging periods;
- ``conds[r, K, D_*]``: one alert condition per kind, with hysteresis and a flapping counter;
- ``params[r, P_*]``: what the stream is (plausible range, metric code, partner, neighbours).

Thresholds arrive as ``cfg`` (see :class:`processing.config.DetectionSettings`), indexed by the
``S_*`` constants below, which follow that class's field order. Every kernel has a plain-Python
twin in ``tests/processing/naive.py``.
"""

from __future__ import annotations

import math

import numpy as np

from processing.config import inline_kernel, kernel

# core fields
C_N = 0  # finite readings learned
C_LAST_TS = 1  # µs
C_LAST_X = 2
C_CADENCE = 3  # seconds between readings (learned)
C_LEVEL = 4
C_SPREAD = 5
C_EXPECTED = 6  # the baseline's fields share one cache line
C_SIGMA = 7
C_RUN = 8  # identical consecutive readings so far
C_RUN_START = 9  # µs
C_REPEAT_P = 10  # how often this stream repeats a value when healthy
C_LAST_Z = 11
C_FILL_RATE = 12  # %/h
C_TTF_H = 13
C_HOUR = 14  # hour number of the newest air-quality ring slot
C_AQ_MEAN = 15
C_AQ_BAND = 16
C_CUSUM_POS = 17
C_CUSUM_NEG = 18
C_NB_OFFSET = 19  # usual offset from the neighbours' median
C_NB_SPREAD = 20
C_NB_N = 21
C_NB_SCORE = 22  # the latest comparison's score
C_SCORE = 23
C_SMOOTH = 24  # unprotected 10-minute average, what neighbours compare
C_FIRST_TS = 25  # µs of the first reading learned
C_SETTLED = 26  # 1 once warm-up has ended and the hour means became offsets
C_NB_TS = 27  # µs of the last comparison with warm neighbours
C_CONG_Z = 28  # speed z averaged over about five minutes
C_PAIR_START = 29  # UTC µs from which the remembered pair of seasonal slots holds (0: none)
C_PAIR_END = 30  # UTC µs until which it holds (an hour, or the next change of the clocks)
C_PAIR = 31  # the pair, earlier slot x N_SLOTS + later slot
# Tail models (see tail_score): threshold exceeded by 1 % of strengths, and the mean excess.
C_SPIKE_Q = 32  # of |z|
C_SPIKE_M = 33
C_SHIFT_Q = 34  # of the larger CUSUM
C_SHIFT_M = 35
C_NB_Q = 36  # of |z| against the neighbours
C_NB_M = 37
C_NB_SEEN = 38  # µs of the newest reading already compared with the neighbours
C_BOTTOM = 39  # the lowest value of about the last season (a detection limit, a quiet night)
C_RUN_BOTTOM = 40  # 1 while the current run sits at that bottom
C_NB_CUSUM_POS = 41  # CUSUMs of the z against the neighbours: an offset or drift of one station
C_NB_CUSUM_NEG = 42
C_NB_SHIFT_Q = 43  # tail model of the larger of them
C_NB_SHIFT_M = 44
N_CORE = 45

# params fields
P_LO = 0
P_HI = 1
P_METRIC = 2
P_PARTNER = 3  # row of the paired stream (speed <-> occupancy), -1 if none
P_LEAD = 4  # 1 for the stream that speaks for its sensor (missing data)
P_GROUP = 5  # neighbour group, -1 if none
P_AQ_HOURS = 6
P_AQ_TABLE = 7  # row of the band table, -1 if none
P_ALERT_BAND = 8
P_FLOOR = 9  # smallest meaningful change (instrument resolution)
N_PARAMS = 10

# metric codes
M_GENERIC = 0
M_PARTICLES = 1
M_GAS = 2
M_SPEED = 3
M_OCCUPANCY = 4
M_FILL = 5
M_BIN_TEMPERATURE = 6
M_COUNT = 7

# condition fields
D_ACTIVE = 0
D_SINCE = 1  # µs the anomaly began, 0 if calm
D_CALM = 2  # µs calm began while active, 0 if not calm
D_FLAP = 3  # decaying count of recent openings
D_PEAK = 4
D_OPENED = 5  # µs of the last opening
N_COND = 6

# kinds (processing.kinds.Kind)
K_SPIKE = 0
K_LEVEL = 1
K_STUCK = 2
K_IMPOSSIBLE = 3
K_MISSING = 4
K_AIR = 5
K_CONGESTION = 6
K_OVERFLOW = 7
K_FIRE = 8
K_NEIGHBOUR = 9
N_KINDS = 10

# cfg fields (DetectionSettings order)
S_WARMUP = 0
S_LEVEL_TAU = 1
S_LEVEL_READINGS = 2
S_SLOT_TAU = 3
S_SLOT_WARM = 4
S_ALERT_SCORE = 5
S_CALM_SCORE = 6
S_SUSTAIN_Z = 7
S_PROTECT = 8
S_CUSUM_K = 9
S_CUSUM_CAP = 10
S_CUSUM_CLIP = 11
S_STUCK_RUN = 12
S_STUCK_S = 13
S_STUCK_RATE = 14
S_CONG_SPEED = 15
S_CONG_OCC = 16
S_FILL_WARN = 17
S_FILL_SOON_H = 18
S_FILL_SOON_FROM = 19
S_FIRE_C = 20
S_FIRE_Z = 21
S_FLAP_TAU = 22
S_MISSING_FACTOR = 23
S_MISSING_MIN = 24
S_NB_TAU = 25
S_NB_MIN = 26
S_UTC_OFFSET = 27
S_WARMUP_S = 28
S_CONG_MEAN_Z = 29
S_TAIL_RATE = 30
S_QUIET_READINGS = 31

# event columns
E_ROW = 0
E_KIND = 1
E_OPEN = 2  # 1 opened, 0 resolved
E_TS = 3
E_SCORE = 4
E_VALUE = 5
E_EXPECTED = 6
E_SIGMA = 7
N_EVENT = 8

N_SLOTS = 48
US = 1_000_000.0
HOUR_US = 3_600_000_000
WARM_UP_GUARD_FROM = 5  # readings before a warm-up reading can be judged absurd
SMOOTH_S = 600.0  # window of the unprotected average (C_SMOOTH), seconds
BOTTOM_TAU_S = 90 * 86_400.0  # how fast the remembered bottom rises again (a season)
NB_FRESH_S = 600.0  # a neighbour comparison this recent (or two readings old) speaks for it
# Tail models: the threshold is exceeded by TAIL_SHARE of readings, beyond it the tail is
# exponential with the learned mean excess. A score is -log10 of the tail probability, from
# 2 (1 in 100: score 0) over SCORE_DECADES decades (1 in 100,000: score 1).
TAIL_SHARE = 0.01
SCORE_DECADES = 3.0
SCORE_SPAN = SCORE_DECADES * math.log(10.0)  # mean excesses from the threshold to a score of 1
EXCESS_CAP = 6.0  # largest excess one reading teaches, in mean excesses
EXCESS_FLOOR = 0.25
SPIKE_PRIOR = (3.0, 1.0)  # threshold and mean excess before a stream's own are learned
SHIFT_PRIOR = (4.0, 2.0)
NB_PRIOR = (3.0, 1.0)
MAD_TO_SIGMA = 1.2533  # mean absolute deviation of a normal distribution -> its sigma


@inline_kernel
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
def utc_offset_at(zone: np.ndarray, ts_us: float) -> float:
    """The city's offset from UTC at ``ts_us``, seconds."""
    offset: float = zone[zone_row(zone, ts_us), 1]
    return offset


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
def slot_view(
    slots: np.ndarray, r: int, s: int, spread: float, warm_count: float
) -> tuple[float, float]:
    """A slot's offset and spread, borrowed while the slot is not yet learned.

    It borrows the same hour of the other kind of day with double the spread, or failing that
    expects the level itself.
    """
    if slots[r, s, 2] >= warm_count:
        return slots[r, s, 0], slots[r, s, 1]
    other = s + 24 if s < 24 else s - 24
    if slots[r, other, 2] >= warm_count:
        return slots[r, other, 0], 2.0 * max(slots[r, other, 1], spread)
    return 0.0, spread


@inline_kernel
def squash(z: float, half: float) -> float:
    """Map a non-negative strength to [0, 1), reaching 0.5 at ``half``."""
    z2 = z * z
    return z2 / (z2 + half * half)


@inline_kernel
def tail_score(core: np.ndarray, r: int, field: int, strength: float) -> float:
    """How rare ``strength`` is under the stream's tail model in ``core[r, field:field + 2]``.

    -log10 of the tail probability, mapped from 2 (1 in 100, score 0) to 5 (1 in 100,000,
    score 1); 0 while the model is not yet set up.
    """
    q = core[r, field]
    m = core[r, field + 1]
    if m <= 0.0 or strength <= q:
        return 0.0
    score: float = min(1.0, (strength - q) / (SCORE_SPAN * m))
    return score


@inline_kernel
def tail_learn(
    core: np.ndarray, r: int, field: int, strength: float, score: float, cfg: np.ndarray
) -> None:
    """Move the threshold towards the 99th percentile of strengths and learn the mean excess.

    Only strengths that are not unusual (below ``calm_score``) teach: a developing fault is not
    what normal looks like. No excess counts for more than ``EXCESS_CAP`` mean excesses.
    """
    m = core[r, field + 1]
    if m <= 0.0 or score >= cfg[S_CALM_SCORE]:
        return
    q = core[r, field]
    rate = cfg[S_TAIL_RATE]
    if strength > q:
        excess = min(strength - q, EXCESS_CAP * m)
        core[r, field + 1] = max(m + rate * (excess - m), EXCESS_FLOOR)
        core[r, field] = q + rate * m * (1.0 - TAIL_SHARE)
    else:
        core[r, field] = max(q - rate * m * TAIL_SHARE, 0.0)


@inline_kernel
def cusum_step(core: np.ndarray, r: int, pos: int, neg: int, z: float, cfg: np.ndarray) -> float:
    """Advance the two-sided CUSUM in ``core[r, pos]`` and ``core[r, neg]``; return the larger.

    Each reading adds at most ``cusum_clip`` (one spike is not a shift) less the allowance, and
    neither sum passes ``cusum_cap`` (a long fault ends in bounded time).
    """
    zc = min(max(z, -cfg[S_CUSUM_CLIP]), cfg[S_CUSUM_CLIP])
    cap = cfg[S_CUSUM_CAP]
    up = min(max(0.0, core[r, pos] + zc - cfg[S_CUSUM_K]), cap)
    down = min(max(0.0, core[r, neg] - zc - cfg[S_CUSUM_K]), cap)
    core[r, pos] = up
    core[r, neg] = down
    larger: float = max(up, down)
    return larger


@inline_kernel
def score_of_rarity(decades: float) -> float:
    """A tail probability of 10 ** -decades as a score (see :func:`tail_score`)."""
    return min(1.0, max(0.0, (decades - 2.0) / SCORE_DECADES))


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
    core[r, C_SPIKE_Q], core[r, C_SPIKE_M] = SPIKE_PRIOR
    core[r, C_SHIFT_Q], core[r, C_SHIFT_M] = SHIFT_PRIOR
    core[r, C_SETTLED] = 1.0


def _baseline_step(
    core: np.ndarray,
    slots: np.ndarray,
    params: np.ndarray,
    cfg: np.ndarray,
    zone: np.ndarray,
    r: int,
    ts: float,
    x: float,
) -> float:
    """Score one finite reading against the stream's seasonal baseline, then learn from it.

    Returns the robust z-score (0 during warm-up). Stores expectation and sigma in ``core``.
    """
    n = core[r, C_N]
    if n == 0:
        core[r, C_LEVEL] = x
        core[r, C_SPREAD] = 0.0
        core[r, C_FIRST_TS] = ts
    warm = n >= cfg[S_WARMUP] and ts - core[r, C_FIRST_TS] >= cfg[S_WARMUP_S] * US
    if warm and core[r, C_SETTLED] == 0:
        settle(core, slots, r, cfg[S_SLOT_WARM])
    floor0 = params[r, P_FLOOR]
    if not warm:
        # Warm-up: plain means of everything and of each hour; nothing is scored. Only an absurd
        # reading is held back (to 20 sigma), so one glitch cannot poison the first day.
        s = slot_of(ts, utc_offset_at(zone, ts))
        count = slots[r, s, 2]
        if n >= WARM_UP_GUARD_FROM:
            level = core[r, C_LEVEL]
            limit = 20.0 * max(MAD_TO_SIGMA * core[r, C_SPREAD], floor0 + 0.01 * abs(level))
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
        core[r, C_SIGMA] = max(MAD_TO_SIGMA * core[r, C_SPREAD], floor0 + 0.01 * abs(expected))
        return 0.0

    level = core[r, C_LEVEL]
    spread = core[r, C_SPREAD]
    # Each slot holds its hour's usual offset from the running level, so the expectation keeps
    # the daily shape while following slow changes of the whole level (weather, seasons); between
    # two slots' centres the offset is interpolated. The pair is remembered for the hour, as
    # working it out takes integer divisions and a search that would cost more than all the rest.
    # The pair is remembered in UTC until the hour ends or the clocks change, whichever is first,
    # so a checkpoint restored after a change of the clocks is not an hour off.
    start = core[r, C_PAIR_START]
    if ts < start or ts >= core[r, C_PAIR_END] or start == 0.0:
        row = zone_row(zone, ts)
        sa, sb, wb = slot_pair(ts, zone[row, 1])
        start = ts - wb * HOUR_US
        end = start + HOUR_US
        if row + 1 < zone.shape[0]:
            end = min(end, zone[row + 1, 0])
        core[r, C_PAIR_START] = start
        core[r, C_PAIR_END] = end
        core[r, C_PAIR] = sa * N_SLOTS + sb
    else:
        pair = int(core[r, C_PAIR])
        sa = pair // N_SLOTS
        sb = pair - sa * N_SLOTS
        wb = (ts - start) / HOUR_US
    wa = 1.0 - wb
    oa, ta = slot_view(slots, r, sa, spread, cfg[S_SLOT_WARM])
    ob, tb = slot_view(slots, r, sb, spread, cfg[S_SLOT_WARM])
    offset = wa * oa + wb * ob
    typical = wa * ta + wb * tb
    expected = level + offset
    sigma = max(MAD_TO_SIGMA * typical, floor0 + 0.01 * abs(expected))
    z: float = (x - expected) / sigma

    # Learn with an exponential window of level_tau (at least level_readings); a reading beyond
    # what is usual is probably the anomaly, so it barely teaches, and no reading moves anything
    # by more than 3 sigma.
    # "Beyond" is where the stream's own tail says 1 in 3,000 once it is learned: a stream with
    # heavy tails keeps learning from its ordinary large swings instead of lagging behind them.
    cadence = core[r, C_CADENCE]
    limit = cfg[S_SUSTAIN_Z]
    if core[r, C_SPIKE_M] > 0.0:
        limit = max(limit, core[r, C_SPIKE_Q] + cfg[S_CALM_SCORE] * SCORE_SPAN * core[r, C_SPIKE_M])
    weight = cfg[S_PROTECT] if abs(z) > limit else 1.0
    a = min(1.0 / cfg[S_LEVEL_READINGS], cadence / cfg[S_LEVEL_TAU])
    if (n + 1.0) * a < 1.0:  # still a running mean (a division only while it matters)
        a = 1.0 / (n + 1.0)
    a *= weight
    g_sigma = max(MAD_TO_SIGMA * spread, floor0 + 0.01 * abs(level))
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
    return z


# The main detector alone inlines the step (its loop is nothing else, and the call would cost
# more than the arithmetic); the fused stage kernel calls it, as inlining it there as well made
# that large function slower.
baseline_step = kernel(_baseline_step)
baseline_step_inline = inline_kernel(_baseline_step)


@inline_kernel
def cadence_step(core: np.ndarray, r: int, gap_us: float) -> None:
    """Learn the interval between readings; one long gap (an outage) moves it only a little."""
    gap = gap_us / US
    cadence = core[r, C_CADENCE]
    core[r, C_CADENCE] = (
        gap if cadence == 0 else cadence + 0.05 * (min(gap, 10 * cadence) - cadence)
    )


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
    """The main detector alone: seasonal robust z-scores for a batch, learning as it goes.

    Non-finite values score NaN and teach nothing.
    """
    for i in range(rows.shape[0]):
        r = rows[i]
        x = values[i]
        if not math.isfinite(x):
            out_z[i] = math.nan
            continue
        ts = float(ts_us[i])
        last = core[r, C_LAST_TS]
        if core[r, C_N] > 0 and ts > last:
            cadence_step(core, r, ts - last)
        out_z[i] = baseline_step_inline(core, slots, params, cfg, zone, r, ts, x)
        if ts > last:
            core[r, C_LAST_TS] = ts
        core[r, C_LAST_X] = x


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


@kernel
def air_quality_step(
    core: np.ndarray,
    hours: np.ndarray,
    params: np.ndarray,
    bands: np.ndarray,
    r: int,
    ts: float,
    x: float,
    rounds: bool,
) -> float:
    """Add a reading to the hourly ring; return the band of the running mean (0 if unknown)."""
    hour = math.floor(ts / (3600 * US))
    newest = core[r, C_HOUR]
    if hour > newest:
        steps = min(hour - newest, 24.0)
        for j in range(int(steps)):
            h = int(newest + 1 + j) % 24
            hours[r, h, 0] = 0.0
            hours[r, h, 1] = 0.0
        core[r, C_HOUR] = hour
        newest = hour
    if hour > newest - 24:
        h = int(hour) % 24
        hours[r, h, 0] += x
        hours[r, h, 1] += 1.0
    span = int(params[r, P_AQ_HOURS])
    total = 0.0
    have = 0
    for j in range(span):
        h = int(newest - j) % 24
        if hours[r, h, 1] > 0:
            total += hours[r, h, 0] / hours[r, h, 1]
            have += 1
    # The official rules want three quarters of the period covered (and the current hour).
    if have == 0 or have < 0.75 * span:
        core[r, C_AQ_MEAN] = math.nan
        core[r, C_AQ_BAND] = 0.0
        return 0.0
    mean = total / have
    core[r, C_AQ_MEAN] = mean
    value = math.floor(mean + 0.5) if rounds else mean
    table = int(params[r, P_AQ_TABLE])
    band = 0
    for j in range(bands.shape[1]):
        if value >= bands[table, j]:
            band = j + 1
    core[r, C_AQ_BAND] = band
    return float(band)


@kernel
def stage_kernel(
    rows: np.ndarray,
    ts_us: np.ndarray,
    values: np.ndarray,
    start: int,
    core: np.ndarray,
    slots: np.ndarray,
    hours: np.ndarray,
    conds: np.ndarray,
    params: np.ndarray,
    cfg: np.ndarray,
    zone: np.ndarray,
    bands: np.ndarray,
    aq_rounds: bool,
    min_s: np.ndarray,
    quiet_s: np.ndarray,
    out_score: np.ndarray,
    events: np.ndarray,
) -> tuple[int, int]:
    """Every per-reading detector and the alert conditions, fused into one pass.

    Processes readings from ``start`` until the end or until ``events`` is nearly full, and
    returns (next reading index, events written); the caller drains events and calls again.
    """
    n_events = 0
    capacity = events.shape[0] - N_KINDS
    flap_tau = cfg[S_FLAP_TAU]
    i = start
    while i < rows.shape[0]:
        if n_events >= capacity:
            break
        r = rows[i]
        ts = float(ts_us[i])
        x = values[i]
        i += 1
        metric = int(params[r, P_METRIC])
        if conds[r, K_MISSING, D_ACTIVE] > 0:  # data again: the gap is over
            n_events = condition_step(
                conds,
                events,
                n_events,
                r,
                K_MISSING,
                ts,
                False,
                False,
                0.0,
                x,
                0.0,
                0.0,
                0.0,
                0.0,
                flap_tau,
            )

        impossible = not (math.isfinite(x) and params[r, P_LO] <= x <= params[r, P_HI])
        n_events = condition_step(
            conds,
            events,
            n_events,
            r,
            K_IMPOSSIBLE,
            ts,
            impossible,
            impossible,
            1.0 if impossible else 0.0,
            x,
            params[r, P_LO],
            params[r, P_HI],
            min_s[K_IMPOSSIBLE],
            quiet_s[K_IMPOSSIBLE],
            flap_tau,
        )
        last = core[r, C_LAST_TS]
        n = core[r, C_N]
        if impossible:
            out_score[i - 1] = 1.0
            if ts > last:
                core[r, C_LAST_TS] = ts
            continue

        # Cadence, and the run of identical values (before the baseline moves on).
        fresh = ts > last
        if n > 0 and fresh:
            cadence_step(core, r, ts - last)
        same = n > 0 and x == core[r, C_LAST_X]
        if same:
            core[r, C_RUN] += 1.0
        else:
            core[r, C_RUN] = 1.0
            core[r, C_RUN_START] = ts
            # A run at the stream's usual bottom (or a new one) is a detection limit or an empty
            # road at night, not a stuck sensor; zeros from a stream that never reads zero are a
            # dead sensor all the same.
            bottom = core[r, C_BOTTOM]
            resolution = params[r, P_FLOOR]
            margin = max(3.0 * resolution, 0.25 * core[r, C_SIGMA])
            at_bottom = n > 0 and x <= bottom + margin and (x != 0.0 or bottom <= resolution)
            core[r, C_RUN_BOTTOM] = 1.0 if at_bottom else 0.0
        if n == 0 or x < core[r, C_BOTTOM]:
            core[r, C_BOTTOM] = x
        elif fresh:
            creep = min(0.5, core[r, C_CADENCE] / BOTTOM_TAU_S)
            core[r, C_BOTTOM] += creep * (x - core[r, C_BOTTOM])
        run = core[r, C_RUN]
        p = core[r, C_REPEAT_P]
        need = cfg[S_STUCK_RUN]
        if p > 0.95:
            need = math.inf  # a stream that rarely changes cannot be told stuck by repetition
        elif p > 1e-3:
            need = max(need, math.log(cfg[S_STUCK_RATE]) / math.log(p))
        if run < need and n > 0:
            p += max(1.0 / (n + 1.0), 0.01) * ((1.0 if same else 0.0) - p)
            core[r, C_REPEAT_P] = p
        age = ts - core[r, C_FIRST_TS]
        warm = n > 0 and n >= cfg[S_WARMUP] and age >= cfg[S_WARMUP_S] * US
        # A reading pinned at the top of the range is saturated (a full bin), not stuck.
        stuck = (
            warm
            and run >= need
            and ts - core[r, C_RUN_START] >= cfg[S_STUCK_S] * US
            and x < params[r, P_HI]
            and core[r, C_RUN_BOTTOM] == 0.0
        )
        # A healthy stream repeats with probability p, so a run this long has chance p^(run-1).
        stuck_score = 0.0
        if run >= cfg[S_STUCK_RUN] and warm and core[r, C_RUN_BOTTOM] == 0.0:
            stuck_score = score_of_rarity((run - 1.0) * -math.log10(min(max(p, 1e-3), 0.95)))

        # Bins: a big drop is a collection round, not an anomaly; the level restarts there.
        collected = False
        if metric == M_FILL and n > 0 and fresh and x - core[r, C_LAST_X] < -15.0:
            collected = True
            core[r, C_LEVEL] = x
            core[r, C_SMOOTH] = x
            core[r, C_FILL_RATE] = 0.0
            core[r, C_CUSUM_POS] = 0.0
            core[r, C_CUSUM_NEG] = 0.0

        previous_level = core[r, C_LEVEL]
        previous_smooth = core[r, C_SMOOTH]
        z = baseline_step(core, slots, params, cfg, zone, r, ts, x)
        smooth_a = max(1.0 / (n + 1.0), min(1.0, core[r, C_CADENCE] / SMOOTH_S))
        core[r, C_SMOOTH] = x if n == 0 else core[r, C_SMOOTH] + smooth_a * (x - core[r, C_SMOOTH])
        expected = core[r, C_EXPECTED]
        sigma = core[r, C_SIGMA]
        shift = cusum_step(core, r, C_CUSUM_POS, C_CUSUM_NEG, z, cfg)

        # Congestion: speed well below the usual for the hour while the lane is full.
        congested = False
        congestion_pending = False
        partner = int(params[r, P_PARTNER])
        if metric == M_SPEED and partner >= 0:
            near = abs(core[partner, C_LAST_TS] - ts) <= 3.0 * core[r, C_CADENCE] * US + US
            occ_z = core[partner, C_LAST_Z]
            full = near and (occ_z >= cfg[S_CONG_OCC] or core[partner, C_LAST_X] >= 60.0)
            half = near and (occ_z >= cfg[S_CONG_OCC] / 2 or core[partner, C_LAST_X] >= 45.0)
            # Slow: far below the usual for the hour, now or on average over about five minutes
            # (a rush hour's speeds vary too much for one reading to say).
            mean_a = min(1.0, core[r, C_CADENCE] / 300.0) if n > 0 else 1.0
            zbar = core[r, C_CONG_Z] + mean_a * (z - core[r, C_CONG_Z])
            core[r, C_CONG_Z] = zbar
            slow = z <= cfg[S_CONG_SPEED] or zbar <= cfg[S_CONG_MEAN_Z]
            slowish = z <= cfg[S_CONG_SPEED] / 2 or zbar <= cfg[S_CONG_MEAN_Z] / 2
            congested = warm and slow and full
            keep = warm and slowish and half
            n_events = condition_step(
                conds,
                events,
                n_events,
                r,
                K_CONGESTION,
                ts,
                congested,
                keep,
                max(squash(-z, 3.0), 0.5) if congested else 0.0,
                x,
                expected,
                sigma,
                min_s[K_CONGESTION],
                quiet_s[K_CONGESTION],
                flap_tau,
            )
            congestion_pending = conds[r, K_CONGESTION, D_SINCE] > 0
        elif metric == M_OCCUPANCY and partner >= 0:
            congestion_pending = conds[partner, K_CONGESTION, D_SINCE] > 0

        statistical = metric != M_FILL and not collected and not congestion_pending
        # A shift the neighbours share (weather, a city-wide episode) is not this sensor's fault.
        cadence = core[r, C_CADENCE]
        fresh_nb = ts - core[r, C_NB_TS] <= max(NB_FRESH_S, 2.0 * cadence + 60.0) * US
        shared = fresh_nb and core[r, C_NB_SCORE] < cfg[S_CALM_SCORE]
        # Scores are calibrated on the stream's own history (tail_score); conditions open at
        # alert_score and calm below calm_score, and a slow stream stays quiet for a few readings.
        alert = cfg[S_ALERT_SCORE]
        calm = cfg[S_CALM_SCORE]
        slow = cfg[S_QUIET_READINGS] * cadence
        level_active = conds[r, K_LEVEL, D_ACTIVE] > 0
        spike_score = tail_score(core, r, C_SPIKE_Q, abs(z)) if statistical else 0.0
        shift_score = tail_score(core, r, C_SHIFT_Q, shift) if statistical else 0.0
        if statistical and warm:
            tail_learn(core, r, C_SPIKE_Q, abs(z), spike_score, cfg)
            tail_learn(core, r, C_SHIFT_Q, shift, shift_score, cfg)
        n_events = condition_step(
            conds,
            events,
            n_events,
            r,
            K_SPIKE,
            ts,
            statistical and not level_active and spike_score >= alert,
            spike_score >= calm,
            spike_score,
            x,
            expected,
            sigma,
            min_s[K_SPIKE],
            max(quiet_s[K_SPIKE], slow),
            flap_tau,
        )
        n_events = condition_step(
            conds,
            events,
            n_events,
            r,
            K_LEVEL,
            ts,
            statistical and shift_score >= alert and not shared,
            shift_score >= calm,
            shift_score,
            x,
            previous_level,
            sigma,
            min_s[K_LEVEL],
            max(quiet_s[K_LEVEL], slow),
            flap_tau,
        )
        n_events = condition_step(
            conds,
            events,
            n_events,
            r,
            K_STUCK,
            ts,
            stuck,
            same,
            stuck_score,
            x,
            (ts - core[r, C_RUN_START]) / US,
            run,
            min_s[K_STUCK],
            max(quiet_s[K_STUCK], slow),
            flap_tau,
        )

        if metric == M_FILL:
            if n > 0 and fresh and not collected:
                dt_h = (ts - last) / (3600 * US)
                # The rate follows the 10-minute average (not the protected baseline, which is
                # built for readings that return to normal, as a filling bin never does) with a
                # 15-minute memory, so a bin filling fast is seen within minutes.
                slope = (core[r, C_SMOOTH] - previous_smooth) / dt_h if dt_h > 0 else 0.0
                a = min(1.0, 4.0 * dt_h)
                core[r, C_FILL_RATE] += a * (slope - core[r, C_FILL_RATE])
            rate = core[r, C_FILL_RATE]
            fill = max(x, core[r, C_SMOOTH] + max(rate, 0.0) * SMOOTH_S / 3600.0)
            ttf = (100.0 - fill) / rate if rate > 0.1 else math.inf
            core[r, C_TTF_H] = max(ttf, 0.0)
            soon = fill >= cfg[S_FILL_SOON_FROM] and ttf <= cfg[S_FILL_SOON_H]
            over = x >= cfg[S_FILL_WARN] or soon
            n_events = condition_step(
                conds,
                events,
                n_events,
                r,
                K_OVERFLOW,
                ts,
                over,
                x >= cfg[S_FILL_WARN] - 10 or (soon and ttf <= 2 * cfg[S_FILL_SOON_H]),
                max(squash(x / cfg[S_FILL_WARN], 1.0), 0.9 if soon else 0.0),
                x,
                rate,
                ttf,
                min_s[K_OVERFLOW],
                quiet_s[K_OVERFLOW],
                flap_tau,
            )
        elif metric == M_BIN_TEMPERATURE:
            hot = x >= cfg[S_FIRE_C] or (warm and z >= cfg[S_FIRE_Z] and x >= 40.0)
            n_events = condition_step(
                conds,
                events,
                n_events,
                r,
                K_FIRE,
                ts,
                hot,
                x >= cfg[S_FIRE_C] - 10 or (warm and z >= cfg[S_SUSTAIN_Z] and x >= 30.0),
                1.0 if hot else 0.0,
                x,
                expected,
                sigma,
                min_s[K_FIRE],
                quiet_s[K_FIRE],
                flap_tau,
            )
        if params[r, P_AQ_TABLE] >= 0:
            band = air_quality_step(core, hours, params, bands, r, ts, x, aq_rounds)
            table = int(params[r, P_AQ_TABLE])
            top = 0
            for j in range(bands.shape[1]):
                if math.isfinite(bands[table, j]):
                    top = j + 1
            alert_band = params[r, P_ALERT_BAND]
            above = band - alert_band + 1.0
            aq_score = min(1.0, 0.5 + 0.5 * above / (top - alert_band + 1.0)) if above > 0 else 0.0
            n_events = condition_step(
                conds,
                events,
                n_events,
                r,
                K_AIR,
                ts,
                band >= alert_band,
                band >= alert_band - 1,
                aq_score,
                core[r, C_AQ_MEAN],
                band,
                alert_band,
                min_s[K_AIR],
                quiet_s[K_AIR],
                flap_tau,
            )

        core[r, C_LAST_Z] = z
        score = max(spike_score, shift_score, stuck_score)
        core[r, C_SCORE] = score
        out_score[i - 1] = score
        if fresh:
            core[r, C_LAST_TS] = ts
        core[r, C_LAST_X] = x
    return i, n_events


@kernel
def missing_kernel(
    core: np.ndarray,
    conds: np.ndarray,
    params: np.ndarray,
    cfg: np.ndarray,
    now_us: float,
    since_us: float,
    events: np.ndarray,
) -> int:
    """Open a missing-data condition for each sensor silent for longer than its cadence allows.

    ``since_us`` is when this process started watching: silence before it is not counted, so a
    restart does not accuse every sensor at once. Returns the number of events written.
    """
    n_events = 0
    for r in range(core.shape[0]):
        if params[r, P_LEAD] <= 0 or core[r, C_N] < 2 or core[r, C_CADENCE] <= 0:
            continue
        if n_events >= events.shape[0]:
            break
        cadence = core[r, C_CADENCE]
        limit = max(cfg[S_MISSING_FACTOR] * cadence, cfg[S_MISSING_MIN])
        gap = (now_us - max(core[r, C_LAST_TS], since_us)) / US
        silent = gap > limit
        n_events = condition_step(
            conds,
            events,
            n_events,
            r,
            K_MISSING,
            now_us,
            silent,
            silent,
            squash(gap / limit, 1.0) if silent else 0.0,
            gap,
            cadence,
            limit,
            0.0,
            0.0,
            cfg[S_FLAP_TAU],
        )
    return n_events


@kernel
def neighbour_kernel(
    core: np.ndarray,
    conds: np.ndarray,
    params: np.ndarray,
    cfg: np.ndarray,
    now_us: float,
    members: np.ndarray,
    starts: np.ndarray,
    min_s: float,
    quiet_s: float,
    events: np.ndarray,
) -> int:
    """Compare each stream's recent average with its neighbours' median, against its usual offset.

    ``members[starts[g]:starts[g + 1]]`` are the rows of neighbour group ``g`` (same kind,
    nearby). Groups with fewer than ``neighbour_min_members`` fresh members are skipped.
    """
    n_events = 0
    scratch = np.empty(members.shape[0])
    fresh_rows = np.empty(members.shape[0], dtype=np.int64)
    for g in range(starts.shape[0] - 1):
        if n_events >= events.shape[0] - (starts[g + 1] - starts[g]):
            break
        m = 0
        for j in range(starts[g], starts[g + 1]):
            r = members[j]
            cadence = core[r, C_CADENCE]
            if core[r, C_N] < cfg[S_WARMUP] or cadence <= 0:
                continue
            if now_us - core[r, C_LAST_TS] > (3.0 * cadence + 60.0) * US:
                continue
            scratch[m] = core[r, C_SMOOTH]
            fresh_rows[m] = r
            m += 1
        if m < cfg[S_NB_MIN]:
            continue
        median = np.median(scratch[:m])
        for j in range(m):
            r = fresh_rows[j]
            # Compare each reading once: a sweep between two readings learns nothing new.
            if core[r, C_LAST_TS] <= core[r, C_NB_SEEN]:
                continue
            core[r, C_NB_SEEN] = core[r, C_LAST_TS]
            offset = scratch[j] - median
            seen = core[r, C_NB_N]
            usual = core[r, C_NB_OFFSET]
            spread = core[r, C_NB_SPREAD]
            sigma = max(MAD_TO_SIGMA * spread, params[r, P_FLOOR] + 0.05 * abs(median))
            z = (offset - usual) / sigma if seen > 0 else 0.0
            warm = seen >= cfg[S_WARMUP]
            if seen == 0:
                usual = offset
                core[r, C_NB_Q], core[r, C_NB_M] = NB_PRIOR
                core[r, C_NB_SHIFT_Q], core[r, C_NB_SHIFT_M] = SHIFT_PRIOR
            # One odd comparison, or a run of moderately odd ones (a station's own offset or
            # drift, which each reading alone would not show), as for the stream's own level.
            apart = cusum_step(core, r, C_NB_CUSUM_POS, C_NB_CUSUM_NEG, z, cfg)
            odd = tail_score(core, r, C_NB_Q, abs(z)) if warm else 0.0
            drifting = tail_score(core, r, C_NB_SHIFT_Q, apart) if warm else 0.0
            score = max(odd, drifting)
            weight = cfg[S_PROTECT] if score >= cfg[S_CALM_SCORE] else 1.0
            cadence = core[r, C_CADENCE]
            a = max(1.0 / (seen + 1.0), min(0.5, cadence / cfg[S_NB_TAU])) * weight
            core[r, C_NB_OFFSET] = usual + a * (offset - usual)
            core[r, C_NB_SPREAD] = spread + a * (abs(offset - usual) - spread)
            core[r, C_NB_N] = seen + 1.0
            core[r, C_NB_SCORE] = score
            if warm:
                tail_learn(core, r, C_NB_Q, abs(z), odd, cfg)
                tail_learn(core, r, C_NB_SHIFT_Q, apart, drifting, cfg)
                core[r, C_NB_TS] = now_us
            n_events = condition_step(
                conds,
                events,
                n_events,
                r,
                K_NEIGHBOUR,
                now_us,
                score >= cfg[S_ALERT_SCORE],
                score >= cfg[S_CALM_SCORE],
                score,
                scratch[j],
                median + usual,
                sigma,
                min_s,
                max(quiet_s, cfg[S_QUIET_READINGS] * cadence),
                cfg[S_FLAP_TAU],
            )
    return n_events
