"""The detection stage: every per-reading detector and the alert conditions in one pass.

One reading at a time, in arrival order: plausibility, the run of identical values (stuck), the
seasonal baseline (:mod:`processing.seasonal`) and its level-shift CUSUM, congestion, bin filling
and fire, the air-quality averaging periods, then the alert conditions
(:mod:`processing.conditions`). Scores are calibrated by :mod:`processing.tails`. The timed sweeps
(missing data, neighbours) are in :mod:`processing.sweeps`.
"""

from __future__ import annotations

import math

import numpy as np

from processing.conditions import condition_step
from processing.config import kernel
from processing.layout import (
    BOTTOM_TAU_S,
    C_AQ_BAND,
    C_AQ_MEAN,
    C_BOTTOM,
    C_CADENCE,
    C_CONG_Z,
    C_CUSUM_NEG,
    C_CUSUM_POS,
    C_EXPECTED,
    C_FILL_RATE,
    C_FIRST_TS,
    C_HOUR,
    C_JUMP_Q,
    C_LAST_RES,
    C_LAST_TS,
    C_LAST_X,
    C_LAST_Z,
    C_LEVEL,
    C_N,
    C_NB_SCORE,
    C_NB_TS,
    C_QUANTUM,
    C_REPEAT_P,
    C_RUN,
    C_RUN_BOTTOM,
    C_RUN_START,
    C_SCORE,
    C_SHIFT_Q,
    C_SIGMA,
    C_SMOOTH,
    C_SPIKE_Q,
    C_STEP_SPREAD,
    C_TTF_H,
    D_ACTIVE,
    D_SINCE,
    K_AIR,
    K_CONGESTION,
    K_FIRE,
    K_IMPOSSIBLE,
    K_LEVEL,
    K_MISSING,
    K_NEIGHBOUR,
    K_OVERFLOW,
    K_SPIKE,
    K_STUCK,
    M_BIN_TEMPERATURE,
    M_FILL,
    M_OCCUPANCY,
    M_SPEED,
    MAD_TO_SIGMA,
    N_KINDS,
    NB_FRESH_S,
    P_ALERT_BAND,
    P_AQ_HOURS,
    P_AQ_TABLE,
    P_FLOOR,
    P_HI,
    P_LO,
    P_METRIC,
    P_PARTNER,
    S_CALM_SCORE,
    S_CONG_MEAN_Z,
    S_CONG_OCC,
    S_CONG_SPEED,
    S_FILL_SOON_FROM,
    S_FILL_SOON_H,
    S_FILL_WARN,
    S_FIRE_C,
    S_FIRE_Z,
    S_FLAP_TAU,
    S_LEVEL_READINGS,
    S_LEVEL_TAU,
    S_PROTECT,
    S_QUIET_READINGS,
    S_STUCK_RATE,
    S_STUCK_RUN,
    S_STUCK_S,
    S_SUSTAIN_Z,
    S_WARMUP,
    S_WARMUP_S,
    SMOOTH_S,
    US,
)
from processing.seasonal import baseline_range, learned_cadence
from processing.tails import (
    cusum_step,
    opening_score,
    score_of_rarity,
    squash,
    tail_learn,
    tail_score,
)


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
    counted: bool,
) -> float:
    """The band of the running mean (0 if unknown), after adding a reading to the hourly ring.

    A reading not ``counted`` (its sensor is suspect) only moves the ring on.
    """
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
    if counted and hour > newest - 24:
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
            core[r, C_CADENCE] = learned_cadence(core[r, C_CADENCE], (ts - last) / US)
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
        # The bottom excuses a run only while the neighbours agree with it, or (without fresh
        # neighbours) while the stream is expected near it: ozone at its detection limit on a
        # summer afternoon when the other stations read 300 is a sensor stuck at its floor;
        # every station at 5 after a front has cleared the air is the air.
        cadence = core[r, C_CADENCE]
        fresh_nb = ts - core[r, C_NB_TS] <= max(NB_FRESH_S, 2.0 * cadence + 60.0) * US
        # Also what makes a shift the neighbours share (weather, a city-wide episode) no fault.
        shared = fresh_nb and core[r, C_NB_SCORE] < cfg[S_CALM_SCORE]
        near = shared if fresh_nb else core[r, C_EXPECTED] - x < 3.0 * core[r, C_SIGMA]
        excused = core[r, C_RUN_BOTTOM] != 0.0 and near
        # A reading pinned at the top of the range is saturated (a full bin), not stuck.
        stuck = (
            warm
            and run >= need
            and ts - core[r, C_RUN_START] >= cfg[S_STUCK_S] * US
            and x < params[r, P_HI]
            and not excused
        )
        # A healthy stream repeats with probability p, so a run this long has chance p^(run-1).
        stuck_score = 0.0
        if run >= cfg[S_STUCK_RUN] and warm and not excused:
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
        # The seasonal baseline's z of this one reading (its slot in out_score is overwritten
        # with the reading's score below).
        z = baseline_range(
            rows, ts_us, values, i - 1, i, core, slots, params, cfg, zone, False, out_score
        )
        smooth_a = max(1.0 / (n + 1.0), min(1.0, core[r, C_CADENCE] / SMOOTH_S))
        core[r, C_SMOOTH] = x if n == 0 else core[r, C_SMOOTH] + smooth_a * (x - core[r, C_SMOOTH])
        expected = core[r, C_EXPECTED]
        sigma = core[r, C_SIGMA]
        shift_before = max(core[r, C_CUSUM_POS], core[r, C_CUSUM_NEG])
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
        # Scores are calibrated on the stream's own history (tail_score); conditions open at
        # opening_score and calm below calm_score, and a slow stream stays quiet for a few readings.
        alert = opening_score(cadence, cfg)
        calm = cfg[S_CALM_SCORE]
        slow = cfg[S_QUIET_READINGS] * cadence
        level_active = conds[r, K_LEVEL, D_ACTIVE] > 0
        # A spike departs suddenly: far from its expectation and from where the reading before
        # stood against its own, in units of how much that usually changes from one reading to
        # the next (little for a smooth series such as pressure, whose expectation lags the
        # weather by more than the weather changes in an hour).
        residual = x - expected
        change = residual - core[r, C_LAST_RES]
        floor = max(params[r, P_FLOOR], core[r, C_QUANTUM])
        step_sigma = max(MAD_TO_SIGMA * core[r, C_STEP_SPREAD], floor)
        sudden = min(abs(residual), abs(change)) / step_sigma
        spike_score = tail_score(core, r, C_JUMP_Q, sudden) if statistical else 0.0
        shift_score = tail_score(core, r, C_SHIFT_Q, shift) if statistical else 0.0
        if statistical and warm:
            # The tail of |z| itself says which readings the baseline should not learn from (a
            # drift beyond the usual is held back, however slowly it came); it scores nothing.
            far_score = tail_score(core, r, C_SPIKE_Q, abs(z))
            tail_learn(core, r, C_SPIKE_Q, abs(z), far_score, cfg)
            tail_learn(core, r, C_JUMP_Q, sudden, spike_score, cfg)
            tail_learn(core, r, C_SHIFT_Q, shift, shift_score, cfg)
            learn = min(1.0 / cfg[S_LEVEL_READINGS], cadence / cfg[S_LEVEL_TAU])
            if spike_score >= calm:
                learn *= cfg[S_PROTECT]
            step = min(abs(change), 3.0 * step_sigma)
            core[r, C_STEP_SPREAD] += learn * (step - core[r, C_STEP_SPREAD])
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
        # Too little of the averaging period seen (a station back from an outage) says nothing
        # about the air: the condition neither opens nor resolves on it.
        band = 0.0
        covered = False
        if params[r, P_AQ_TABLE] >= 0:
            # As air-quality networks validate their data, a reading taken while the sensor is
            # stuck or apart from all its neighbours does not count towards the averages: a
            # drifting sensor does not declare an episode. A lone station's sudden change may
            # be the air itself (a front clearing it), so spikes and level shifts still count.
            suspect = conds[r, K_STUCK, D_ACTIVE] > 0 or conds[r, K_NEIGHBOUR, D_ACTIVE] > 0
            band = air_quality_step(core, hours, params, bands, r, ts, x, aq_rounds, not suspect)
            covered = not math.isnan(core[r, C_AQ_MEAN])
        if covered:
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
        core[r, C_LAST_RES] = residual
        # A reading's score is what it adds: a shift already seen scores again only as it grows.
        score = max(spike_score, shift_score if shift > shift_before else 0.0, stuck_score)
        core[r, C_SCORE] = score
        out_score[i - 1] = score
        if fresh:
            core[r, C_LAST_TS] = ts
        core[r, C_LAST_X] = x
    return i, n_events
