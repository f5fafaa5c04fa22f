"""The timed sweeps: detectors that look at streams between readings, not at one reading.

Missing data (a sensor silent for longer than its cadence allows) and neighbours (a station
apart from the median of its nearby stations of the same kind) run on the stage's sweep timer.
"""

from __future__ import annotations

import numpy as np

from processing.conditions import condition_step
from processing.config import kernel
from processing.layout import (
    C_CADENCE,
    C_LAST_TS,
    C_N,
    C_NB_CUSUM_NEG,
    C_NB_CUSUM_POS,
    C_NB_M,
    C_NB_N,
    C_NB_OFFSET,
    C_NB_Q,
    C_NB_SCORE,
    C_NB_SEEN,
    C_NB_SHIFT_M,
    C_NB_SHIFT_Q,
    C_NB_SPREAD,
    C_NB_TS,
    C_SMOOTH,
    K_MISSING,
    K_NEIGHBOUR,
    MAD_TO_SIGMA,
    P_FLOOR,
    P_LEAD,
    S_CALM_SCORE,
    S_FLAP_TAU,
    S_MISSING_FACTOR,
    S_MISSING_MIN,
    S_NB_MIN,
    S_NB_SPLIT,
    S_NB_TAU,
    S_PROTECT,
    S_QUIET_READINGS,
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
    anchors = np.empty(members.shape[0])
    fresh_rows = np.empty(members.shape[0], dtype=np.int64)
    scores = np.empty(members.shape[0])
    sigmas = np.empty(members.shape[0])
    expected = np.empty(members.shape[0])
    for g in range(starts.shape[0] - 1):
        if n_events >= events.shape[0] - (starts[g + 1] - starts[g]):
            break
        m = 0
        k = 0
        for j in range(starts[g], starts[g + 1]):
            r = members[j]
            cadence = core[r, C_CADENCE]
            if core[r, C_N] < cfg[S_WARMUP] or cadence <= 0:
                continue
            silent = now_us - core[r, C_LAST_TS] > (3.0 * cadence + 60.0) * US
            if not silent or core[r, C_NB_N] > 0:
                anchors[k] = core[r, C_NB_OFFSET]
                k += 1
            if silent:
                continue
            scratch[m] = core[r, C_SMOOTH]
            corrected[m] = core[r, C_SMOOTH] - core[r, C_NB_OFFSET]
            fresh_rows[m] = r
            m += 1
        if m < cfg[S_NB_MIN]:
            continue
        # The consensus is the median of the members each less its usual offset: stations that
        # usually agree sit close together, so one going wrong moves it by a small fraction of
        # their spread, not by the gap between two stations' raw levels (which made a faulty
        # station's neighbours drift apart from the consensus in its place). Adding back the
        # median usual offset keeps it at a typical station's level: offsets are learned against
        # the consensus, which would otherwise be free to wander with them; silent members count
        # there too.
        median = np.median(corrected[:m]) + np.median(anchors[:k])
        # Learn from every comparison first; open or resolve after, knowing how many members
        # the consensus sets apart at once. When more than a share of them are, the group has
        # split in two (or one member's silence moved the median across a gap): no member is
        # the odd one out, so none opens an alert on it.
        apart_now = 0
        for j in range(m):
            r = fresh_rows[j]
            # Compare each reading once: a sweep between two readings learns nothing new.
            if core[r, C_LAST_TS] <= core[r, C_NB_SEEN]:
                scores[j] = np.nan  # not compared: nothing to open or resolve on
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
            scores[j] = score
            sigmas[j] = sigma
            expected[j] = median + usual
            apart_now += score >= opening_score(cadence, cfg)
        split = apart_now > cfg[S_NB_SPLIT] * m
        for j in range(m):
            if np.isnan(scores[j]):
                continue
            r = fresh_rows[j]
            cadence = core[r, C_CADENCE]
            n_events = condition_step(
                conds,
                events,
                n_events,
                r,
                K_NEIGHBOUR,
                now_us,
                scores[j] >= opening_score(cadence, cfg) and not split,
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
