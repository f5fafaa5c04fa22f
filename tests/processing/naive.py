"""Plain-Python references for the numba kernels: one object per stream, readable before fast.

They follow the same definitions as the kernels (``processing.seasonal``, ``fused``, ``sweeps``
and ``tails``, documented there and in ``docs/detection.md``) but are written independently,
per stream and per reading, so a disagreement points at a bug in one of them.
"""

from __future__ import annotations

import math
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
        decades = 2 + (strength - self.threshold) / (self.excess * math.log(10))
        return min(1.0, (decades - 2) / 3)

    def learn(self, strength: float, score: float, cfg: DetectionSettings) -> None:
        """Quantile step for the threshold, capped mean excess; the unusual teaches nothing."""
        if self.excess <= 0 or score >= cfg.calm_score:
            return
        if strength > self.threshold:
            excess = min(strength - self.threshold, 6 * self.excess)
            before = self.excess
            self.excess = max(before + cfg.tail_rate * (excess - before), 0.25)
            self.threshold += cfg.tail_rate * before * 0.99
        else:
            self.threshold = max(self.threshold - cfg.tail_rate * self.excess * 0.01, 0.0)


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
    spike_tail: Tail = field(default_factory=Tail)
    shift_tail: Tail = field(default_factory=Tail)
    conditions: dict[Kind, Condition] = field(default_factory=dict)
    events: list[tuple[Kind, bool, float]] = field(default_factory=list)

    def _sigma(self, spread: float, level: float) -> float:
        return max(SIGMA_PER_MAD * spread, self.floor + 0.01 * abs(level))

    def baseline(self, ts: float, x: float) -> float:
        """Score against the seasonal profile, then learn; hour means until warm, then offsets."""
        cfg = self.settings
        if self.n == 0:
            self.fast = Ewm(x, 0.0)
            self.first_ts = ts
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
            self.spike_tail = Tail(3.0, 1.0)
            self.shift_tail = Tail(4.0, 2.0)
            self.settled = True

        (early, late), late_weight = seasonal_pair(int(ts), cfg.utc_offset_s)
        views = [self._view(early), self._view(late)]
        weights = [1 - late_weight, late_weight]
        offset = sum(w * v[0] for w, v in zip(weights, views, strict=True))
        spread = sum(w * v[1] for w, v in zip(weights, views, strict=True))
        expected = self.fast.level + offset
        sigma = self._sigma(spread, expected)
        z = (x - expected) / sigma
        self.sigma = sigma
        usual = cfg.sustain_z
        if self.spike_tail.excess > 0:  # where the stream's own tail says 1 in 3,000
            calm_excess = cfg.calm_score * 3 * math.log(10) * self.spike_tail.excess
            usual = max(usual, self.spike_tail.threshold + calm_excess)
        weight = cfg.protect if abs(z) > usual else 1.0

        level_sigma = self._sigma(self.fast.spread, self.fast.level)
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
            limit = 20 * self._sigma(self.fast.spread, self.fast.level)
            x = min(max(x, self.fast.level - limit), self.fast.level + limit)
        self.fast.level += (x - self.fast.level) / (self.n + 1)
        self.fast.spread += (abs(x - self.fast.level) - self.fast.spread) / (self.n + 1)
        mean = x if slot.count == 0 else slot.level + (x - slot.level) / (slot.count + 1)
        slot.spread += (abs(x - mean) - slot.spread) / (slot.count + 1)
        expected = mean if slot.count >= self.settings.slot_warm else self.fast.level
        self.sigma = self._sigma(self.fast.spread, expected)
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
        """One reading through every generic detector and condition; returns its score."""
        cfg = self.settings
        if self.conditions.get(Kind.MISSING, Condition()).active:
            self._condition(Kind.MISSING, ts, False, False, 0.0)
        impossible = not (math.isfinite(x) and self.low <= x <= self.high)
        self._condition(Kind.IMPOSSIBLE, ts, impossible, impossible, float(impossible))
        if impossible:
            self.last_ts = max(self.last_ts, ts)
            return 1.0
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
        z = self.baseline(ts, x)
        clipped = min(max(z, -cfg.cusum_clip), cfg.cusum_clip)
        self.up = min(max(0.0, self.up + clipped - cfg.cusum_k), cfg.cusum_cap)
        self.down = min(max(0.0, self.down - clipped - cfg.cusum_k), cfg.cusum_cap)
        shift = max(self.up, self.down)

        level_active = self.conditions.get(Kind.LEVEL_SHIFT, Condition()).active
        spike_score = self.spike_tail.score(abs(z))
        shift_score = self.shift_tail.score(shift)
        if warm:
            self.spike_tail.learn(abs(z), spike_score, cfg)
            self.shift_tail.learn(shift, shift_score, cfg)
        slow = cfg.quiet_readings * self.cadence
        self._condition(
            Kind.SPIKE,
            ts,
            not level_active and spike_score >= cfg.alert_score,
            spike_score >= cfg.calm_score,
            spike_score,
            slow,
        )
        self._condition(
            Kind.LEVEL_SHIFT,
            ts,
            shift_score >= cfg.alert_score,
            shift_score >= cfg.calm_score,
            shift_score,
            slow,
        )
        self._condition(Kind.STUCK, ts, stuck, same, stuck_score, slow)
        if fresh:
            self.last_ts = ts
        self.last_x = x
        return max(spike_score, shift_score, stuck_score)

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
        stuck = (
            warm
            and self.run >= need
            and ts - self.run_start >= cfg.stuck_min_s * 1e6
            and not self.run_at_bottom
        )
        stuck_score = 0.0
        if warm and self.run >= cfg.stuck_min_run and not self.run_at_bottom:
            chance = min(max(self.repeat_p, 1e-3), 0.95) ** (self.run - 1)
            stuck_score = min(1.0, max(0.0, (-math.log10(chance) - 2) / 3))

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
                self.events.append((kind, True, ts))
            return
        if not c.active:
            c.since, c.peak = 0.0, 0.0
            return
        c.calm = c.calm or ts
        quiet = max(QUIET_S[kind], quiet_s)
        if ts - c.calm >= quiet * (1 + 2 * max(c.flap - 1, 0)) * 1e6:
            self.conditions[kind] = Condition(flap=c.flap, opened=c.opened)
            self.events.append((kind, False, ts))


def _learn(state: Ewm, x: float, rate: float, clip: bool, sigma: float) -> Ewm:
    deviation = x - state.level
    if clip:
        deviation = min(max(deviation, -3 * sigma), 3 * sigma)
    return Ewm(
        state.level + rate * deviation,
        state.spread + rate * (abs(deviation) - state.spread),
        state.count,
    )


def _squash(strength: float, half: float) -> float:
    return strength * strength / (strength * strength + half * half)


def aq_band(hourly_means: list[float], lower_bounds: list[float], *, rounds: bool) -> int:
    """The band of the mean of hourly means, by lower bounds (official rounding when asked)."""
    mean = sum(hourly_means) / len(hourly_means)
    value = math.floor(mean + 0.5) if rounds else mean
    return sum(1 for bound in lower_bounds if value >= bound)
