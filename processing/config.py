"""Numba options and the detection thresholds, each in one place.

Kernels take their thresholds as a float64 array (:meth:`DetectionSettings.as_array`) so they stay
pure functions of arrays; the class gives each number a name, a unit and a reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Final, Literal, TypeVar, cast

import numba
import numpy as np
from numpy.typing import NDArray

# Every kernel compiles with these: nogil so ingest's event loop thread can run while a batch is
# scored, the cache so a restart does not pay the compile again. NUMBA_DISABLE_JIT=1 turns the
# kernels into plain Python for coverage and debugging.
JIT_OPTIONS: Final[dict[str, bool]] = {
    "nogil": True,
    "cache": os.environ.get("CITY_NUMBA_CACHE", "1") != "0",
    "fastmath": False,
    "boundscheck": False,
}

F = TypeVar("F", bound=Callable[..., object])


def kernel(function: F) -> F:
    """Compile ``function`` with :data:`JIT_OPTIONS` (a no-op under ``NUMBA_DISABLE_JIT=1``)."""
    return _compile(function, "never")


def inline_kernel(function: F) -> F:
    """Like :func:`kernel`, and inlined where other kernels call it.

    For the small per-reading steps: a call that passes whole state arrays costs more than the
    arithmetic inside, and inlining lets the compiler keep each row's fields in registers.
    """
    return _compile(function, "always")


def _compile(function: F, inline: Literal["never", "always"]) -> F:
    options = JIT_OPTIONS
    compiled = numba.njit(
        nogil=options["nogil"],
        cache=options["cache"],
        fastmath=options["fastmath"],
        boundscheck=options["boundscheck"],
        inline=inline,
    )(function)
    return cast(F, compiled)


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """Thresholds and time constants of every detector.

    Time constants are in seconds where a stream's cadence does not matter to the maths, and
    bounded in readings where it does, so one set of defaults serves streams reporting every 10 s
    to every hour. Scores are calibrated per stream (see ``docs/detection.md``): an alert opens
    at a score of ``alert_score``, or for a slow stream at a rarity of once per
    ``alert_every_s`` of its own readings.

    Attributes:
        warmup_readings: Readings a new stream learns from before its scores leave 0.
        level_tau_s: Time constant of the fast level and spread, seconds.
        level_readings: Fewest readings the level averages over, for slow streams (hourly
            readings would otherwise move it half way each time).
        slot_tau_s: Time constant of each hour-of-day slot of the seasonal profile, seconds of
            readings falling in that slot (so about three visits of the slot).
        slot_warm: Readings a slot needs before it replaces the fast level as the expectation.
        alert_score: Score from which a statistical condition (spike, level shift, stuck,
            neighbour) opens: rarer than 1 in 50,000 of the stream's own readings.
        calm_score: Score below which an open condition counts as calm again, and from which
            a reading is held back from learning (1 in 3,000).
        sustain_z: Robust z-score beyond which a reading is held back from learning before the
            stream's own tail is known.
        protect: Learning weight for readings held back, so faults are not learned.
        cusum_k: CUSUM allowance, in robust sigmas.
        cusum_cap: Largest value of either CUSUM, so a long fault ends in bounded time.
        cusum_clip: Largest z one reading adds to the CUSUM, so one spike is not a shift.
        stuck_min_run: Fewest identical consecutive readings that can be "stuck".
        stuck_min_s: Shortest stuck period, seconds.
        stuck_false_rate: Chance of an innocent run, from which the run length needed is derived
            using each stream's own rate of repeated values.
        congestion_speed_z: Speed z-score (negative) that, with high occupancy, is congestion.
        congestion_occupancy_z: Occupancy z-score that, with low speed, is congestion.
        fill_warn: Fill level (%) that warns of overflow.
        fill_soon_h: Time-to-full (hours) that warns of overflow from ``fill_soon_from`` up.
        fill_soon_from: Fill level (%) from which time-to-full is trusted.
        fire_c: Bin temperature (°C) that is a fire risk on its own.
        fire_z: Bin temperature z-score that is a fire risk above 40 °C.
        flap_tau_s: Half-life of the flapping counter, seconds.
        missing_factor: A gap longer than this many learned intervals is missing data.
        missing_min_s: Shortest gap that is missing data, seconds.
        neighbour_tau_s: Time constant of a stream's usual offset from its neighbours, seconds.
        neighbour_min_members: Fewest fresh neighbours of the same kind for the spatial check.
        utc_offset_s: A fixed offset from UTC for hour-of-day slots, used when the stage is
            given no time zone.
        warmup_s: Time a new stream learns for before its scores leave 0: a day, so every hour
            of the daily pattern has been seen once (0 for series of unknown rhythm).
        congestion_mean_z: Speed z-score averaged over about five minutes (negative) that, with
            high occupancy, is congestion where one reading's z varies too much to say.
        tail_rate: Learning rate of each stream's tail model (threshold and mean excess).
        quiet_readings: Fewest readings of calm before a condition resolves, for slow streams.
        alert_every_s: How rare, in the stream's own time, a reading must be to open a
            condition when that is commoner than ``alert_score``'s 1 in 50,000 readings: an
            hourly stream opens at once a year of its readings (score 0.65), not once in 5.7
            years. Streams reporting every 10 minutes or faster keep ``alert_score``.
        neighbour_split_share: Share of a neighbour group's members beyond calm at once above
            which the group is taken as split in two (or moved by one member's silence): no
            member is the odd one out, and none opens a neighbour alert until it is calm again.
        neighbour_drift_tau_s: Time constant of a stream's long usual offset from its
            neighbours and of the spreads of its comparisons, seconds: a drift shows as the
            offset of the last day (``neighbour_tau_s``) leaving it, however slowly it comes.
    """

    warmup_readings: float = 30
    level_tau_s: float = 1800
    level_readings: float = 8
    slot_tau_s: float = 10800
    slot_warm: float = 3
    alert_score: float = 0.9
    calm_score: float = 0.5
    sustain_z: float = 3.0
    protect: float = 0.05
    cusum_k: float = 1.0
    cusum_cap: float = 45.0
    cusum_clip: float = 4.0
    stuck_min_run: float = 5
    stuck_min_s: float = 200
    stuck_false_rate: float = 1e-6
    congestion_speed_z: float = -3.0
    congestion_occupancy_z: float = 2.5
    fill_warn: float = 90.0
    fill_soon_h: float = 1.0
    fill_soon_from: float = 70.0
    fire_c: float = 60.0
    fire_z: float = 8.0
    flap_tau_s: float = 3600
    missing_factor: float = 5.0
    missing_min_s: float = 120
    neighbour_tau_s: float = 86_400
    neighbour_min_members: float = 4
    utc_offset_s: float = 0.0
    warmup_s: float = 86_400
    congestion_mean_z: float = -1.5
    tail_rate: float = 0.05
    quiet_readings: float = 3
    alert_every_s: float = 365 * 86_400.0
    neighbour_split_share: float = 1 / 3
    neighbour_drift_tau_s: float = 7 * 86_400

    def as_array(self) -> NDArray[np.float64]:
        """The values in field order, as the kernels index them (see ``processing.layout.S_*``)."""
        return np.array([float(v) for v in asdict(self).values()], dtype=np.float64)
