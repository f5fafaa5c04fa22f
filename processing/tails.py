"""Calibrated scores: each stream's tail model of a strength, and the CUSUM that feeds one.

A strength (a robust |z|, a CUSUM) is scored by how rare it is among the stream's own readings:
the threshold ``q`` is passed by TAIL_SHARE of them, and beyond it the tail is exponential with
the learned mean excess ``m``. A score is -log10 of the tail probability, from 2 (1 in 100: score
0) over SCORE_DECADES decades (1 in 100,000: score 1); ``docs/detection.md`` has the reasoning.
"""

from __future__ import annotations

import math

import numpy as np

from processing.config import inline_kernel
from processing.layout import (
    S_ALERT_EVERY,
    S_ALERT_SCORE,
    S_CALM_SCORE,
    S_CUSUM_CAP,
    S_CUSUM_CLIP,
    S_CUSUM_K,
    S_TAIL_RATE,
)

TAIL_SHARE = 0.01
SCORE_DECADES = 3.0
# Beyond the threshold the tail is generalised Pareto with this shape, heavier than exponential:
# real city data is (episodes, fronts), and the shape cannot be learned from excesses that
# leave the unusual out of learning.
TAIL_SHAPE = 0.2
EXCESS_CAP = 6.0  # largest excess one reading teaches, in mean excesses
EXCESS_FLOOR = 0.25
SPIKE_PRIOR = (3.0, 1.0)  # threshold and mean excess before a stream's own are learned
SHIFT_PRIOR = (4.0, 2.0)
NB_PRIOR = (3.0, 1.0)


@inline_kernel
def squash(z: float, half: float) -> float:
    """Map a non-negative strength to [0, 1), reaching 0.5 at ``half``."""
    z2 = z * z
    return z2 / (z2 + half * half)


@inline_kernel
def tail_score(core: np.ndarray, r: int, field: int, strength: float) -> float:
    """How rare ``strength`` is under the stream's tail model in ``core[r, field:field + 2]``.

    -log10 of the tail probability, mapped from 2 (1 in 100, score 0) to 5 (1 in 100,000,
    score 1), under a generalised Pareto tail of shape ``TAIL_SHAPE`` and mean excess ``m``; 0
    while the model is not yet set up.
    """
    q = core[r, field]
    m = core[r, field + 1]
    if m <= 0.0 or strength <= q:
        return 0.0
    scale = m * (1.0 - TAIL_SHAPE)  # the Pareto scale whose mean excess is m
    decades = math.log10(1.0 + TAIL_SHAPE * (strength - q) / scale) / TAIL_SHAPE
    score: float = min(1.0, decades / SCORE_DECADES)
    return score


@inline_kernel
def excess_at(score: float) -> float:
    """The excess over the threshold, in mean excesses, at which a tail model gives ``score``."""
    rise: float = 10.0 ** (TAIL_SHAPE * SCORE_DECADES * score) - 1.0
    return (1.0 - TAIL_SHAPE) / TAIL_SHAPE * rise


@inline_kernel
def tail_learn(
    core: np.ndarray, r: int, field: int, strength: float, score: float, cfg: np.ndarray
) -> None:
    """Move the threshold towards the 99th percentile of strengths and learn the mean excess.

    Only strengths that are not unusual (below ``calm_score``) teach: a developing fault is not
    what normal looks like. No excess counts for more than ``EXCESS_CAP`` mean excesses.
    """
    tail_learn_at(core, r, field, strength, score, cfg, cfg[S_TAIL_RATE])


@inline_kernel
def tail_learn_at(
    core: np.ndarray,
    r: int,
    field: int,
    strength: float,
    score: float,
    cfg: np.ndarray,
    rate: float,
) -> None:
    """:func:`tail_learn` at a learning rate of the caller's."""
    m = core[r, field + 1]
    if m <= 0.0 or score >= cfg[S_CALM_SCORE]:
        return
    q = core[r, field]
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


@inline_kernel
def opening_score(cadence_s: float, cfg: np.ndarray) -> float:
    """The score from which a statistical condition opens on a stream read every ``cadence_s``.

    Scores count readings, but an operator counts alerts per week: at ``alert_score`` (1 in
    50,000 readings) a 30-second stream's calibrated tail would open one about every 17 days,
    an hourly stream's one every 5.7 years. A slow stream therefore opens at the rarity of once
    per ``alert_every_s`` of its own readings, when that is commoner; never at or below
    ``calm_score``, where readings still teach.
    """
    alert: float = cfg[S_ALERT_SCORE]
    if cadence_s <= 0.0:
        return alert
    readings = max(cfg[S_ALERT_EVERY] / cadence_s, 1.0)
    per_time = score_of_rarity(math.log10(readings))
    lowest: float = cfg[S_CALM_SCORE] + 0.1
    return min(alert, max(per_time, lowest))
