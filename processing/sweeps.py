"""The timed sweeps: detectors that look at streams between readings, not at one reading.

Missing data (a sensor silent for longer than its cadence allows) and neighbours (a station
apart from the median of its nearby stations of the same kind) run on the stage's sweep timer.
"""

from __future__ import annotations

import math

import numpy as np

from processing.conditions import condition_step
from processing.config import kernel
from processing.layout import (
    C_CADENCE,
    C_LAST_TS,
    C_N,
    C_NB_CUSUM_NEG,
    C_NB_CUSUM_POS,
    C_NB_DRIFT_M,
    C_NB_DRIFT_Q,
    C_NB_DRIFT_SPREAD,
    C_NB_HELD,
    C_NB_LONG,
    C_NB_M,
    C_NB_N,
    C_NB_OFFSET,
    C_NB_Q,
    C_NB_RECENT,
    C_NB_SCORE,
    C_NB_SEEN,
    C_NB_SHIFT_M,
    C_NB_SHIFT_Q,
    C_NB_SPAN,
    C_NB_SPREAD,
    C_NB_TS,
    C_SMOOTH,
    K_MISSING,
    K_NEIGHBOUR,
    M_COUNT,
    M_GAS,
    M_PARTICLES,
    MAD_TO_SIGMA,
    P_FLOOR,
    P_LEAD,
    P_METRIC,
    S_CALM_SCORE,
    S_FLAP_TAU,
    S_MISSING_FACTOR,
    S_MISSING_MIN,
    S_NB_DRIFT_TAU,
    S_NB_MIN,
    S_NB_SPLIT,
    S_NB_TAU,
    S_PROTECT,
    S_QUIET_READINGS,
    S_TAIL_RATE,
    S_WARMUP,
    US,
)
from processing.tails import (
    NB_PRIOR,
    SHIFT_PRIOR,
    cusum_step,
    opening_score,
    squash,
    tail_learn,
    tail_learn_at,
    tail_score,
)


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
    corrected = np.empty(members.shape[0])
    fresh_rows = np.empty(members.shape[0], dtype=np.int64)
    scores = np.empty(members.shape[0])
    sigmas = np.empty(members.shape[0])
    expected = np.empty(members.shape[0])
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
                continue  # silent
            scratch[m] = core[r, C_SMOOTH]
            corrected[m] = core[r, C_SMOOTH] - core[r, C_NB_OFFSET]
            fresh_rows[m] = r
            m += 1
        if m < cfg[S_NB_MIN]:
            continue
        # The consensus is the median of the members each less its usual offset: stations that
        # usually agree sit close together, so one going wrong (or silent) moves it by a small
        # fraction of their spread, not by the gap between two stations' raw levels or usual
        # offsets. A shift common to every usual offset moves the consensus the other way and
        # cancels in every comparison, so nothing anchors it: an anchor such as the median
        # usual offset jumped by the gap between two stations' offsets whenever one member's
        # drift carried its offset past another's, and set the others apart.
        median = np.median(corrected[:m])
        # Learn from every comparison first; open or resolve after, knowing how many members
        # the consensus sets apart at once (beyond calm: members do not all cross the opening
        # score in the same sweep). When more than a share of them are, the group has split
        # in two (or one member's silence moved the median across a gap): no member is the
        # odd one out, so none opens an alert on it.
        apart_now = 0
        for j in range(m):
            r = fresh_rows[j]
            # Compare each reading once: a sweep between two readings learns nothing new.
            if core[r, C_LAST_TS] <= core[r, C_NB_SEEN]:
                scores[j] = np.nan  # not compared: nothing to open or resolve on
                continue
            # Time constants count the time between the readings compared (sweeps may come
            # less often than readings), at most ten readings' worth after a gap.
            cadence = core[r, C_CADENCE]
            previous = core[r, C_NB_SEEN]
            step_s = cadence
            if previous > 0.0:
                step_s = min((core[r, C_LAST_TS] - previous) / US, 10.0 * cadence)
            core[r, C_NB_SEEN] = core[r, C_LAST_TS]
            offset = scratch[j] - median
            seen = core[r, C_NB_N]
            usual = core[r, C_NB_OFFSET]
            spread = core[r, C_NB_SPREAD]
            # Concentrations and counts differ between stations in proportion to their level;
            # a pressure or a temperature has no true zero to be proportional to (5 % of
            # 1,000 hPa hid every pressure drift).
            metric = params[r, P_METRIC]
            ratio_scale = metric in (M_PARTICLES, M_GAS, M_COUNT)
            relative = 0.05 * abs(median + usual) if ratio_scale else 0.0
            sigma = max(MAD_TO_SIGMA * spread, params[r, P_FLOOR] + relative)
            z = (offset - usual) / sigma if seen > 0 else 0.0
            warm = seen >= cfg[S_WARMUP]
            if seen == 0:
                usual = offset
                core[r, C_NB_LONG] = offset
                core[r, C_NB_RECENT] = offset
                core[r, C_NB_DRIFT_SPREAD] = 0.0
                core[r, C_NB_Q], core[r, C_NB_M] = NB_PRIOR
                core[r, C_NB_SHIFT_Q], core[r, C_NB_SHIFT_M] = SHIFT_PRIOR
                core[r, C_NB_DRIFT_Q], core[r, C_NB_DRIFT_M] = NB_PRIOR
            # One odd comparison, or a run of moderately odd ones (a station's own offset or
            # drift, which each reading alone would not show), as for the stream's own level.
            apart = cusum_step(core, r, C_NB_CUSUM_POS, C_NB_CUSUM_NEG, z, cfg)
            odd = tail_score(core, r, C_NB_Q, abs(z)) if warm else 0.0
            drifting = tail_score(core, r, C_NB_SHIFT_Q, apart) if warm else 0.0
            # A drift over days moves the usual offset along with it, so neither of those sees
            # it: the offset of about the last day (learned from every comparison, fault or
            # not) is also compared with where it stood over weeks, in units of how far it
            # usually wanders from there. Judged once the long offset has had those weeks.
            long = core[r, C_NB_LONG]
            recent = core[r, C_NB_RECENT] if seen > 0 else offset
            wander = abs(recent - long)
            # The recent offset averages about 2 tau / cadence readings: finer than one
            # reading's resolution.
            fine = params[r, P_FLOOR] / math.sqrt(max(1.0, 2.0 * cfg[S_NB_TAU] / cadence))
            drift_sigma = max(MAD_TO_SIGMA * core[r, C_NB_DRIFT_SPREAD], fine)
            span = core[r, C_NB_SPAN] if seen > 0 else 0.0
            long_warm = warm and span >= cfg[S_NB_DRIFT_TAU]
            slow = tail_score(core, r, C_NB_DRIFT_Q, wander / drift_sigma) if long_warm else 0.0
            score = max(odd, drifting, slow)
            weight = cfg[S_PROTECT] if score >= cfg[S_CALM_SCORE] else 1.0
            a = max(1.0 / (seen + 1.0), min(0.5, step_s / cfg[S_NB_TAU]))
            core[r, C_NB_OFFSET] = usual + a * weight * (offset - usual)
            core[r, C_NB_RECENT] = recent + a * (offset - recent)
            # Spreads learn over weeks and from at most 3 sigma a comparison: learned as fast
            # as the usual offset, a drift too slow to score taught them that it was normal.
            b = max(1.0 / (seen + 1.0), min(0.5, step_s / cfg[S_NB_DRIFT_TAU])) * weight
            core[r, C_NB_SPREAD] = spread + b * (min(abs(offset - usual), 3.0 * sigma) - spread)
            core[r, C_NB_LONG] = long + b * (offset - long)
            wandered = min(wander, 3.0 * drift_sigma)
            core[r, C_NB_DRIFT_SPREAD] += b * (wandered - core[r, C_NB_DRIFT_SPREAD])
            core[r, C_NB_N] = seen + 1.0
            core[r, C_NB_SPAN] = span + step_s
            core[r, C_NB_SCORE] = score
            # The tails learn only while the comparison is usual in every way: a drift lasting
            # days, odd by one measure first, must not teach the others that it is normal.
            if warm:
                tail_learn(core, r, C_NB_Q, abs(z), score, cfg)
                tail_learn(core, r, C_NB_SHIFT_Q, apart, score, cfg)
                core[r, C_NB_TS] = now_us
            if long_warm:
                # As slowly as the long offset learns.
                slow_rate = cfg[S_TAIL_RATE] * cfg[S_NB_TAU] / cfg[S_NB_DRIFT_TAU]
                tail_learn_at(core, r, C_NB_DRIFT_Q, wander / drift_sigma, score, cfg, slow_rate)
            scores[j] = score
            sigmas[j] = sigma
            # What the neighbours say it should read: by the long usual offset when the drift
            # is what stands out (the usual one has followed part of the way).
            expected[j] = median + (long if slow > max(odd, drifting) else usual)
            apart_now += score >= cfg[S_CALM_SCORE]
        split = apart_now > cfg[S_NB_SPLIT] * m
        for j in range(m):
            if np.isnan(scores[j]):
                continue
            r = fresh_rows[j]
            cadence = core[r, C_CADENCE]
            # A member apart when its group split stays held until it is calm once more: as
            # the group comes back together its members calm one by one, and the last is not
            # the odd one out either.
            calm_now = scores[j] < cfg[S_CALM_SCORE]
            if calm_now:
                core[r, C_NB_HELD] = 0.0
            elif split:
                core[r, C_NB_HELD] = 1.0
            n_events = condition_step(
                conds,
                events,
                n_events,
                r,
                K_NEIGHBOUR,
                now_us,
                scores[j] >= opening_score(cadence, cfg) and core[r, C_NB_HELD] == 0.0,
                scores[j] >= cfg[S_CALM_SCORE],
                scores[j],
                scratch[j],
                expected[j],
                sigmas[j],
                min_s,
                max(quiet_s, cfg[S_QUIET_READINGS] * cadence),
                cfg[S_FLAP_TAU],
            )
    return n_events
