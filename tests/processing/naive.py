"""Plain-Python references for the numba kernels: one object per stream, readable before fast.

They follow the same definitions as the kernels (``processing.seasonal``, ``fused``, ``sweeps``
and ``tails``, documented there and in ``docs/detection.md``) but are written independently,
per stream and per reading, so a disagreement points at a bug in one of them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from processing.config import DetectionSettings
from processing.kinds import MIN_DURATION_S, QUIET_S, Kind

SIGMA_PER_MAD = 1.2533


def seasonal_slot(ts_us: int, utc_offset_s: float = 0.0) -> int:
    """Local hour of day, plus 24 at weekends."""
    seconds = math.floor(ts_us / 1e6) + utc_offset_s
    hour = int(seconds // 3600) % 24
    weekday = (int(seconds // 86400) + 3) % 7
    return hour + 24 * (weekday >= 5)


def seasonal_pair(ts_us: int, utc_offset_s: float = 0.0) -> tuple[tuple[int, int], float]:
    """The slots centred (at half past) just before and just after, and the later one's weight."""
    half_hour_us = 1_800_000_000
    before = ts_us - half_hour_us
    fraction = (before + int(utc_offset_s) * 1_000_000) % 3_600_000_000 / 3_600_000_000
    after = before + 2 * half_hour_us
    return (seasonal_slot(before, utc_offset_s), seasonal_slot(after, utc_offset_s)), fraction


@dataclass
class Ewm:
    """A robust exponentially weighted level and mean absolute deviation."""

    level: float = 0.0
    spread: float = 0.0
    count: float = 0.0


@dataclass
class Tail:
    """Threshold passed by 1 % of strengths and the mean excess beyond it (exponential tail)."""

    threshold: float = 0.0
    excess: float = 0.0

    def score(self, strength: float) -> float:
        """-log10 of the tail probability, 2 -> 0 and 5 -> 1."""
        if self.excess <= 0 or strength <= self.threshold:
            return 0.0
        # Generalised Pareto beyond the threshold, shape 0.2, mean excess self.excess.
        shape, scale = 0.2, self.excess * 0.8
        chance = 0.01 * (1 + shape * (strength - self.threshold) / scale) ** (-1 / shape)
        return min(1.0, (-math.log10(chance) - 2) / 3)

    def learn(
        self, strength: float, score: float, cfg: DetectionSettings, rate: float | None = None
    ) -> None:
        """Quantile step for the threshold, capped mean excess; the unusual teaches nothing."""
        if self.excess <= 0 or score >= cfg.calm_score:
            return
        rate = cfg.tail_rate if rate is None else rate
        if strength > self.threshold:
            excess = min(strength - self.threshold, 6 * self.excess)
            before = self.excess
            self.excess = max(before + rate * (excess - before), 0.25)
            self.threshold += rate * before * 0.99
        else:
            self.threshold = max(self.threshold - rate * self.excess * 0.01, 0.0)


@dataclass(frozen=True)
class AirRule:
    """A pollutant's averaging period, band lower bounds and the band that alerts."""

    hours: int
    bounds: tuple[float, ...]
    alert_band: int
    rounds: bool


@dataclass
class NeighbourView:
    """How a stream usually sits against its neighbours' median, and the latest comparison."""

    offset: float = 0.0
    spread: float = 0.0
    seen: int = 0
    score: float = 0.0
    compared_at: float = 0.0  # µs of the last comparison with warm neighbours
    newest_compared: float = 0.0  # µs of the newest reading already compared
    up: float = 0.0
    down: float = 0.0
    odd_tail: Tail = field(default_factory=Tail)
    drift_tail: Tail = field(default_factory=Tail)
    span: float = 0.0  # seconds of readings compared so far
    held: bool = False  # apart when the group split, and not calm since
    long: float = 0.0  # the usual offset over weeks
    recent: float = 0.0  # the offset over about a day, from every comparison
    wander: float = 0.0  # mean absolute distance of the usual offset from the long one
    slow_tail: Tail = field(default_factory=Tail)


@dataclass
class Condition:
    """One alert condition with hysteresis."""

    active: bool = False
    since: float = 0.0
    calm: float = 0.0
    flap: float = 0.0
    peak: float = 0.0
    opened: float = 0.0


@dataclass
class NaiveStream:
    """Every per-reading detector of one generic stream (no domain rules), reading by reading."""

    settings: DetectionSettings = field(default_factory=DetectionSettings)
    floor: float = 1e-9
    low: float = -math.inf
    high: float = math.inf
    n: int = 0
    last_ts: float = 0.0
    last_x: float = 0.0
    cadence: float = 0.0
    fast: Ewm = field(default_factory=Ewm)
    slots: dict[int, Ewm] = field(default_factory=dict)
    settled: bool = False
    up: float = 0.0
    down: float = 0.0
    run: int = 0
    run_start: float = 0.0
    repeat_p: float = 0.0
    bottom: float = 0.0
    run_at_bottom: bool = False
    sigma: float = 0.0
    expected: float = 0.0
    last_residual: float = 0.0
    step_spread: float = 0.0  # mean absolute change of the residual, reading to reading
    spike_tail: Tail = field(default_factory=Tail)
    jump_tail: Tail = field(default_factory=Tail)
    shift_tail: Tail = field(default_factory=Tail)
    conditions: dict[Kind, Condition] = field(default_factory=dict)
    events: list[tuple[Kind, bool, float, float]] = field(default_factory=list)  # +peak score
    # What the stream is: "generic", "speed", "occupancy", "fill", "bin_temperature" (others
    # behave as generic here), its paired stream, whether it speaks for its sensor (missing
    # data) and its air-quality rule.
    kind: str = "generic"
    ratio_scale: bool = False  # a concentration or count, whose zero is a true zero
    partner: NaiveStream | None = None
    lead: bool = False
    air: AirRule | None = None
    smooth: float = 0.0  # the unprotected ten-minute average
    last_z: float = 0.0
    slow_z: float = 0.0  # speed z averaged over about five minutes
    fill_rate: float = 0.0  # %/h
    hours_to_full: float = 0.0
    hourly: dict[int, list[float]] = field(default_factory=dict)  # hour -> [sum, count]
    newest_hour: float = -math.inf
    air_mean: float = math.nan
    quantum: float = 0.0  # the smallest change between two readings seen
    neighbours: NeighbourView = field(default_factory=NeighbourView)

    def _sigma(self, spread: float) -> float:
        # Never below the smallest change the stream has shown (its quantum).
        return max(SIGMA_PER_MAD * spread, self.floor, self.quantum)

    def baseline(self, ts: float, x: float) -> float:
        """Score against the seasonal profile, then learn; hour means until warm, then offsets."""
        cfg = self.settings
        if self.n == 0:
            self.fast = Ewm(x, 0.0)
            self.first_ts = ts
        elif x != self.last_x:
            self.quantum = min(self.quantum or math.inf, abs(x - self.last_x))
        warm = self.n >= cfg.warmup_readings and ts - self.first_ts >= cfg.warmup_s * 1e6
        if not warm:
            self._learn_warm_up(ts, x)
            return 0.0
        if not self.settled:
            # From here on each slot is its hour's offset from the overall mean.
            for slot in self.slots.values():
                slot.level -= self.fast.level
            learned = [slot for slot in self.slots.values() if slot.count >= cfg.slot_warm]
            total = sum(slot.count for slot in learned)
            if total:
                self.fast.spread = sum(slot.count * slot.spread for slot in learned) / total
            self.step_spread = self.fast.spread
            self.spike_tail = Tail(3.0, 1.0)
            self.jump_tail = Tail(3.0, 1.0)
            self.shift_tail = Tail(4.0, 2.0)
            self.settled = True

        (early, late), late_weight = seasonal_pair(int(ts), cfg.utc_offset_s)
        views = [self._view(early), self._view(late)]
        weights = [1 - late_weight, late_weight]
        offset = sum(w * v[0] for w, v in zip(weights, views, strict=True))
        spread = sum(w * v[1] for w, v in zip(weights, views, strict=True))
        expected = self.fast.level + offset
        self.expected = expected
        sigma = self._sigma(spread)
        z = (x - expected) / sigma
        self.sigma = sigma
        usual = cfg.sustain_z
        if self.spike_tail.excess > 0:  # where the stream's own tail says 1 in 3,000
            calm_excess = 4 * (10 ** (0.6 * cfg.calm_score) - 1) * self.spike_tail.excess
            usual = max(usual, self.spike_tail.threshold + calm_excess)
        weight = cfg.protect if abs(z) > usual else 1.0

        level_sigma = self._sigma(self.fast.spread)
        spread_before = self.fast.spread
        rate = max(1 / (self.n + 1), min(1 / cfg.level_readings, self.cadence / cfg.level_tau_s))
        rate *= weight
        error = min(max(x - expected, -3 * sigma), 3 * sigma)
        self.fast = _learn(self.fast, x - offset, rate, True, level_sigma)
        for key, (borrowed, borrowed_spread), share in zip(
            (early, late), views, weights, strict=True
        ):
            slot = self.slots.setdefault(key, Ewm())
            if slot.count == 0:
                slot.level, slot.spread = borrowed, max(borrowed_spread, spread_before)
            step = max(1 / (slot.count + 1), min(0.5, self.cadence / cfg.slot_tau_s))
            step *= weight * share
            slot.level += step * error
            slot.spread += step * (abs(error) - slot.spread)
            slot.count += share
        self.n += 1
        return z

    def _learn_warm_up(self, ts: float, x: float) -> None:
        slot = self.slots.setdefault(seasonal_slot(int(ts), self.settings.utc_offset_s), Ewm())
        if self.n >= 5:  # an absurd reading is held to 20 sigma
            limit = 20 * self._sigma(self.fast.spread)
            x = min(max(x, self.fast.level - limit), self.fast.level + limit)
        self.fast.level += (x - self.fast.level) / (self.n + 1)
        self.fast.spread += (abs(x - self.fast.level) - self.fast.spread) / (self.n + 1)
        mean = x if slot.count == 0 else slot.level + (x - slot.level) / (slot.count + 1)
        slot.spread += (abs(x - mean) - slot.spread) / (slot.count + 1)
        self.expected = mean if slot.count >= self.settings.slot_warm else self.fast.level
        self.sigma = self._sigma(self.fast.spread)
        slot.level, slot.count = mean, slot.count + 1
        self.n += 1

    def _view(self, key: int) -> tuple[float, float]:
        """A learned slot, else the same hour of the other kind of day, else the level."""
        warm = self.settings.slot_warm
        slot = self.slots.get(key)
        if slot is not None and slot.count >= warm:
            return slot.level, slot.spread
        twin = self.slots.get(key + 24 if key < 24 else key - 24)
        if twin is not None and twin.count >= warm:
            return twin.level, 2 * max(twin.spread, self.fast.spread)
        return 0.0, self.fast.spread

    def step(self, ts: float, x: float) -> float:
        """One reading through every per-reading detector and condition; returns its score."""
        cfg = self.settings
        if self.conditions.get(Kind.MISSING, Condition()).active:
            self._condition(Kind.MISSING, ts, False, False, 0.0)
        impossible = not (math.isfinite(x) and self.low <= x <= self.high)
        self._condition(Kind.IMPOSSIBLE, ts, impossible, impossible, float(impossible))
        if impossible:
            self.last_ts = max(self.last_ts, ts)
            return 1.0
        seen_before = self.n
        fresh = ts > self.last_ts
        if self.n > 0 and fresh:
            gap = (ts - self.last_ts) / 1e6
            self.cadence = (
                gap
                if self.cadence == 0
                else self.cadence + 0.05 * (min(gap, 10 * self.cadence) - self.cadence)
            )
        same, stuck, stuck_score = self._stuck(ts, x, fresh)
        warm = (
            self.n > 0
            and self.n >= cfg.warmup_readings
            and ts - self.first_ts >= cfg.warmup_s * 1e6
        )
        # A bin emptied: a collection round, from which the level starts again.
        collected = self.kind == "fill" and self.n > 0 and fresh and x - self.last_x < -15
        if collected:
            self.fast.level = x
            self.smooth = x
            self.fill_rate = 0.0
            self.up = self.down = 0.0
        smooth_before = self.smooth
        z = self.baseline(ts, x)
        share = max(1 / (seen_before + 1), min(1.0, self.cadence / 600))
        self.smooth = x if seen_before == 0 else self.smooth + share * (x - self.smooth)
        clipped = min(max(z, -cfg.cusum_clip), cfg.cusum_clip)
        shift_before = max(self.up, self.down)
        self.up = min(max(0.0, self.up + clipped - cfg.cusum_k), cfg.cusum_cap)
        self.down = min(max(0.0, self.down - clipped - cfg.cusum_k), cfg.cusum_cap)
        shift = max(self.up, self.down)

        jammed = self._congestion(ts, z, warm, seen_before)
        statistical = self.kind != "fill" and not collected and not jammed
        recent = max(600.0, 2 * self.cadence + 60) * 1e6
        explained = (
            ts - self.neighbours.compared_at <= recent and self.neighbours.score < cfg.calm_score
        )
        level_active = self.conditions.get(Kind.LEVEL_SHIFT, Condition()).active
        # Far from the expectation and from the last reading's place against its own, in units
        # of how much that place usually changes between readings.
        residual = x - self.expected
        change = residual - self.last_residual
        step_sigma = max(SIGMA_PER_MAD * self.step_spread, self.floor, self.quantum)
        sudden = min(abs(residual), abs(change)) / step_sigma
        spike_score = self.jump_tail.score(sudden) if statistical else 0.0
        shift_score = self.shift_tail.score(shift) if statistical else 0.0
        if statistical and warm:
            far_score = self.spike_tail.score(abs(z))  # it teaches the |z| tail, scores nothing
            self.spike_tail.learn(abs(z), far_score, cfg)
            self.jump_tail.learn(sudden, spike_score, cfg)
            self.shift_tail.learn(shift, shift_score, cfg)
            rate = min(1 / cfg.level_readings, self.cadence / cfg.level_tau_s)
            rate *= cfg.protect if spike_score >= cfg.calm_score else 1.0
            self.step_spread += rate * (min(abs(change), 3 * step_sigma) - self.step_spread)
        slow = cfg.quiet_readings * self.cadence
        self._condition(
            Kind.SPIKE,
            ts,
            statistical and not level_active and spike_score >= opening_score(self.cadence, cfg),
            spike_score >= cfg.calm_score,
            spike_score,
            slow,
        )
        self._condition(
            Kind.LEVEL_SHIFT,
            ts,
            statistical and shift_score >= opening_score(self.cadence, cfg) and not explained,
            shift_score >= cfg.calm_score,
            shift_score,
            slow,
        )
        self._condition(Kind.STUCK, ts, stuck, same, stuck_score, slow)
        if self.kind == "fill":
            self._overflow(ts, x, fresh and seen_before > 0 and not collected, smooth_before)
        elif self.kind == "bin_temperature":
            hot = x >= cfg.fire_c or (warm and z >= cfg.fire_z and x >= 40)
            warmish = x >= cfg.fire_c - 10 or (warm and z >= cfg.sustain_z and x >= 30)
            self._condition(Kind.FIRE, ts, hot, warmish, float(hot))
        if self.air is not None:
            suspect = any(
                self.conditions.get(kind, Condition()).active
                for kind in (Kind.STUCK, Kind.NEIGHBOUR)
            )
            self._air_quality(ts, x, counted=not suspect)
        self.last_z = z
        self.last_residual = residual
        if fresh:
            self.last_ts = ts
        self.last_x = x
        return max(spike_score, shift_score if shift > shift_before else 0.0, stuck_score)

    def _congestion(self, ts: float, z: float, warm: bool, seen_before: int) -> bool:
        """Speed far below the hour's usual while the lane is full; True while it is pending."""
        cfg = self.settings
        partner = self.partner
        if partner is None:
            return False
        if self.kind == "occupancy":
            return partner.conditions.get(Kind.CONGESTION, Condition()).since > 0
        if self.kind != "speed":
            return False
        near = abs(partner.last_ts - ts) <= (3 * self.cadence + 1) * 1e6
        full = near and (partner.last_z >= cfg.congestion_occupancy_z or partner.last_x >= 60)
        half = near and (partner.last_z >= cfg.congestion_occupancy_z / 2 or partner.last_x >= 45)
        share = min(1.0, self.cadence / 300) if seen_before > 0 else 1.0
        self.slow_z += share * (z - self.slow_z)
        slow = z <= cfg.congestion_speed_z or self.slow_z <= cfg.congestion_mean_z
        slowish = z <= cfg.congestion_speed_z / 2 or self.slow_z <= cfg.congestion_mean_z / 2
        congested = warm and slow and full
        score = max(_squash(-z, 3.0), 0.5) if congested else 0.0
        self._condition(Kind.CONGESTION, ts, congested, warm and slowish and half, score)
        return self.conditions[Kind.CONGESTION].since > 0

    def _overflow(self, ts: float, x: float, filling: bool, smooth_before: float) -> None:
        """The fill rate from the ten-minute average, time to full, and the overflow warning."""
        cfg = self.settings
        if filling:
            hours = (ts - self.last_ts) / 3.6e9
            slope = (self.smooth - smooth_before) / hours if hours > 0 else 0.0
            self.fill_rate += min(1.0, 4 * hours) * (slope - self.fill_rate)
        rate = self.fill_rate
        fill = max(x, self.smooth + max(rate, 0.0) / 6)  # where the average will be in 10 min
        to_full = (100 - fill) / rate if rate > 0.1 else math.inf
        self.hours_to_full = max(to_full, 0.0)
        soon = fill >= cfg.fill_soon_from and to_full <= cfg.fill_soon_h
        self._condition(
            Kind.OVERFLOW,
            ts,
            x >= cfg.fill_warn or soon,
            x >= cfg.fill_warn - 10 or (soon and to_full <= 2 * cfg.fill_soon_h),
            max(_squash(x / cfg.fill_warn, 1.0), 0.9 if soon else 0.0),
        )

    def _air_quality(self, ts: float, x: float, *, counted: bool) -> None:
        """The band of the mean of hourly means over the pollutant's averaging period; a reading
        of a suspected sensor is not ``counted``."""
        rule = self.air
        assert rule is not None
        hour = math.floor(ts / 3.6e9)
        if hour > self.newest_hour:
            self.newest_hour = hour
            self.hourly = {h: v for h, v in self.hourly.items() if h > hour - 24}
        if counted and hour > self.newest_hour - 24:
            bucket = self.hourly.setdefault(hour, [0.0, 0.0])
            bucket[0] += x
            bucket[1] += 1
        period = [self.hourly.get(int(self.newest_hour) - j) for j in range(rule.hours)]
        means = [total / count for total, count in filter(None, period)]
        if not means or len(means) < 0.75 * rule.hours:  # three quarters of the period
            self.air_mean = math.nan
            return  # too little seen to say anything, either way
        self.air_mean = sum(means) / len(means)
        band = aq_band(means, list(rule.bounds), rounds=rule.rounds)
        top = sum(1 for bound in rule.bounds if math.isfinite(bound))
        above = band - rule.alert_band + 1
        score = min(1.0, 0.5 + 0.5 * above / (top - rule.alert_band + 1)) if above > 0 else 0.0
        self._condition(
            Kind.AIR_QUALITY, ts, band >= rule.alert_band, band >= rule.alert_band - 1, score
        )

    def _stuck(self, ts: float, x: float, fresh: bool) -> tuple[bool, bool, float]:
        """The run of identical values: (same as the last, stuck, its score)."""
        cfg = self.settings
        same = self.n > 0 and x == self.last_x
        if same:
            self.run += 1
        else:
            self.run, self.run_start = 1, ts
            # At the usual bottom (a detection limit), runs are expected; zeros never seen are not.
            margin = max(3 * self.floor, 0.25 * self.sigma)
            self.run_at_bottom = (
                self.n > 0 and x <= self.bottom + margin and (x != 0 or self.bottom <= self.floor)
            )
        if self.n == 0 or x < self.bottom:
            self.bottom = x
        elif fresh:
            self.bottom += min(0.5, self.cadence / (90 * 86400)) * (x - self.bottom)
        if self.repeat_p > 0.95:
            need = math.inf
        elif self.repeat_p > 1e-3:
            need = max(cfg.stuck_min_run, math.log(cfg.stuck_false_rate) / math.log(self.repeat_p))
        else:
            need = cfg.stuck_min_run
        if self.run < need and self.n > 0:
            self.repeat_p += max(1 / (self.n + 1), 0.01) * (float(same) - self.repeat_p)
        warm = (
            self.n > 0
            and self.n >= cfg.warmup_readings
            and ts - self.first_ts >= cfg.warmup_s * 1e6
        )
        # The bottom excuses a run only while fresh neighbours agree with it, or without them
        # while the stream is expected near it.
        recent = max(600.0, 2 * self.cadence + 60) * 1e6
        view = self.neighbours
        if ts - view.compared_at <= recent:
            near = view.score < cfg.calm_score
        else:
            near = self.expected - x < 3 * self.sigma
        excused = self.run_at_bottom and near
        stuck = (
            warm
            and self.run >= need
            and ts - self.run_start >= cfg.stuck_min_s * 1e6
            and x < self.high  # pinned at the top of the range is saturated (a full bin)
            and not excused
        )
        stuck_score = 0.0
        if warm and self.run >= cfg.stuck_min_run and not excused:
            # A run this long has chance p^(run - 1): its rarity in decades, without underflow.
            decades = -(self.run - 1) * math.log10(min(max(self.repeat_p, 1e-3), 0.95))
            stuck_score = min(1.0, max(0.0, (decades - 2) / 3))

        return same, stuck, stuck_score

    first_ts: float = 0.0

    def _condition(
        self,
        kind: Kind,
        ts: float,
        trigger: bool,
        sustain: bool,
        score: float,
        quiet_s: float = 0.0,
    ) -> None:
        c = self.conditions.setdefault(kind, Condition())
        if sustain if c.active else trigger:
            c.since = c.since or ts
            c.calm = 0.0
            c.peak = max(c.peak, score)
            if not c.active and ts - c.since >= MIN_DURATION_S[kind] * 1e6:
                decay = (
                    math.exp(-(ts - c.opened) / (self.settings.flap_tau_s * 1e6))
                    if c.opened
                    else 0.0
                )
                c.flap = c.flap * decay + 1
                c.active, c.opened = True, ts
                self.events.append((kind, True, ts, c.peak))
            return
        if not c.active:
            c.since, c.peak = 0.0, 0.0
            return
        c.calm = c.calm or ts
        quiet = max(QUIET_S[kind], quiet_s)
        if ts - c.calm >= quiet * (1 + 2 * max(c.flap - 1, 0)) * 1e6:
            self.conditions[kind] = Condition(flap=c.flap, opened=c.opened)
            self.events.append((kind, False, ts, c.peak))


def _learn(state: Ewm, x: float, rate: float, clip: bool, sigma: float) -> Ewm:
    deviation = x - state.level
    if clip:
        deviation = min(max(deviation, -3 * sigma), 3 * sigma)
    return Ewm(
        state.level + rate * deviation,
        state.spread + rate * (abs(deviation) - state.spread),
        state.count,
    )


def opening_score(cadence_s: float, cfg: DetectionSettings) -> float:
    """``alert_score``, or for a slow stream the rarity of once per ``alert_every_s`` of its
    readings (as a score: 2 decades is 0, 5 decades is 1), never below ``calm_score`` + 0.1."""
    if cadence_s <= 0:
        return cfg.alert_score
    decades = math.log10(max(cfg.alert_every_s / cadence_s, 1.0))
    per_time = min(1.0, max(0.0, (decades - 2.0) / 3.0))
    return min(cfg.alert_score, max(per_time, cfg.calm_score + 0.1))


def _squash(strength: float, half: float) -> float:
    return strength * strength / (strength * strength + half * half)


def aq_band(hourly_means: list[float], lower_bounds: list[float], *, rounds: bool) -> int:
    """The band of the mean of hourly means, by lower bounds (official rounding when asked)."""
    mean = sum(hourly_means) / len(hourly_means)
    value = math.floor(mean + 0.5) if rounds else mean
    return sum(1 for bound in lower_bounds if value >= bound)


@dataclass
class NaiveCity:
    """Streams that know each other: partners, the missing-data sweep and the neighbour sweep.

    ``groups`` lists the streams compared with each other (same metric, same district), each in
    the order the stage keeps them.
    """

    streams: dict[int, NaiveStream] = field(default_factory=dict)
    groups: list[list[int]] = field(default_factory=list)
    events: list[tuple[int, Kind, bool, float, float]] = field(default_factory=list)

    def step(self, stream_id: int, ts: float, x: float) -> float:
        """One reading of one stream; its events join the city's."""
        stream = self.streams[stream_id]
        before = len(stream.events)
        score = stream.step(ts, x)
        self._collect(stream_id, stream, before)
        return score

    def sweep(self, now: float, since: float) -> None:
        """Missing data for every stream, then each neighbour group, as the stage sweeps."""
        cfg = next(iter(self.streams.values())).settings
        for stream_id, stream in self.streams.items():
            if not stream.lead or stream.n < 2 or stream.cadence <= 0:
                continue
            before = len(stream.events)
            limit = max(cfg.missing_factor * stream.cadence, cfg.missing_min_s)
            gap = (now - max(stream.last_ts, since)) / 1e6
            silent = gap > limit
            score = _squash(gap / limit, 1.0) if silent else 0.0
            stream._condition(Kind.MISSING, now, silent, silent, score)
            self._collect(stream_id, stream, before)
        for group in self.groups:
            self._compare(group, now)

    def _compare(self, group: list[int], now: float) -> None:
        cfg = next(iter(self.streams.values())).settings
        fresh = [
            i
            for i in group
            if self.streams[i].n >= cfg.warmup_readings
            and self.streams[i].cadence > 0
            and now - self.streams[i].last_ts <= (3 * self.streams[i].cadence + 60) * 1e6
        ]
        if len(fresh) < cfg.neighbour_min_members:
            return
        # The median of the members each less its usual offset; nothing anchors it (a shift
        # common to every usual offset cancels in every comparison).
        median = statistics.median(
            self.streams[i].smooth - self.streams[i].neighbours.offset for i in fresh
        )
        # Every comparison learned first; then, unless more than a share of the members are set
        # apart at once (the group is split, no member the odd one out), conditions as usual.
        judged: list[tuple[int, float]] = []
        for stream_id in fresh:
            stream = self.streams[stream_id]
            view = stream.neighbours
            if stream.last_ts <= view.newest_compared:
                continue  # nothing new since the last sweep
            # The time between the readings compared, at most ten readings' worth.
            step_s = stream.cadence
            if view.newest_compared > 0:
                step_s = min((stream.last_ts - view.newest_compared) / 1e6, 10 * stream.cadence)
            view.newest_compared = stream.last_ts
            offset = stream.smooth - median
            relative = 0.05 * abs(median + view.offset) if stream.ratio_scale else 0.0
            sigma = max(SIGMA_PER_MAD * view.spread, stream.floor + relative)
            z = (offset - view.offset) / sigma if view.seen else 0.0
            warm = view.seen >= cfg.warmup_readings
            usual = view.offset
            if view.seen == 0:
                usual = offset
                view.long, view.recent, view.wander = offset, offset, 0.0
                view.odd_tail, view.drift_tail = Tail(3.0, 1.0), Tail(4.0, 2.0)
                view.slow_tail = Tail(3.0, 1.0)
            clipped = min(max(z, -cfg.cusum_clip), cfg.cusum_clip)
            view.up = min(max(0.0, view.up + clipped - cfg.cusum_k), cfg.cusum_cap)
            view.down = min(max(0.0, view.down - clipped - cfg.cusum_k), cfg.cusum_cap)
            apart = max(view.up, view.down)
            odd = view.odd_tail.score(abs(z)) if warm else 0.0
            drifting = view.drift_tail.score(apart) if warm else 0.0
            # The offset of about a day (learned from every comparison) against the long one,
            # once the long one has had its weeks; a day's average is finer than one reading.
            recent = view.recent if view.seen else offset
            wander = abs(recent - view.long)
            fine = stream.floor / math.sqrt(max(1.0, 2 * cfg.neighbour_tau_s / stream.cadence))
            slow_sigma = max(SIGMA_PER_MAD * view.wander, fine)
            long_warm = warm and view.span >= cfg.neighbour_drift_tau_s
            slow = view.slow_tail.score(wander / slow_sigma) if long_warm else 0.0
            score = max(odd, drifting, slow)
            held = cfg.protect if score >= cfg.calm_score else 1.0
            rate = max(1 / (view.seen + 1), min(0.5, step_s / cfg.neighbour_tau_s))
            slow_rate = max(1 / (view.seen + 1), min(0.5, step_s / cfg.neighbour_drift_tau_s))
            view.offset = usual + rate * held * (offset - usual)
            view.recent = recent + rate * (offset - recent)
            # Spreads over weeks, from at most 3 sigma a comparison.
            view.spread += slow_rate * held * (min(abs(offset - usual), 3 * sigma) - view.spread)
            view.long += slow_rate * held * (offset - view.long)
            view.wander += slow_rate * held * (min(wander, 3 * slow_sigma) - view.wander)
            view.seen += 1
            view.span += step_s
            view.score = score
            if warm:  # only while usual in every way
                view.odd_tail.learn(abs(z), score, cfg)
                view.drift_tail.learn(apart, score, cfg)
                view.compared_at = now
            if long_warm:
                tail_rate = cfg.tail_rate * cfg.neighbour_tau_s / cfg.neighbour_drift_tau_s
                view.slow_tail.learn(wander / slow_sigma, score, cfg, tail_rate)
            judged.append((stream_id, score))
        set_apart = sum(score >= cfg.calm_score for _, score in judged)
        split = set_apart > cfg.neighbour_split_share * len(fresh)
        for stream_id, score in judged:
            stream = self.streams[stream_id]
            view = stream.neighbours
            # Apart when the group split: held until calm once more.
            if score < cfg.calm_score:
                view.held = False
            elif split:
                view.held = True
            before = len(stream.events)
            stream._condition(
                Kind.NEIGHBOUR,
                now,
                score >= opening_score(stream.cadence, cfg) and not view.held,
                score >= cfg.calm_score,
                score,
                cfg.quiet_readings * stream.cadence,
            )
            self._collect(stream_id, stream, before)

    def _collect(self, stream_id: int, stream: NaiveStream, before: int) -> None:
        self.events.extend((stream_id, *event) for event in stream.events[before:])
