"""The generic scorer on labelled series: ``processing.score_series`` against an EWMA z-score.

    python benchmarks/generic_scoring.py            # a table for people
    python benchmarks/generic_scoring.py --json     # one JSON object

``score_series`` is what a user reaches for with a series of unknown kind and cadence. It is
judged here the way public anomaly benchmarks judge streaming detectors (window-based scoring,
after the Numenta Anomaly Benchmark's standard profile), against the plainest streaming
detector that works: an exponentially weighted mean and variance and the |z| of each point
against them (``--alpha``, 0.05 by default, about twenty points of memory).

Series: real backgrounds from the shared data, in three domains with different shapes: air
quality (PM2.5 of four stations: weather-driven, heavy-tailed), climate (temperature and
pressure of two stations: smooth daily cycles), traffic (the I-94 hourly counts: weekly cycle,
zero-inflated nights, real outages). Each series gets ``--faults`` labelled faults at random
positions, sized in the series' robust scale ``s`` (see ``detection_real.robust_scale``): a
spike of 10 s, a level shift of 6 s for 48 points, a drift to 12 s over 72 points, a burst of
noise of 6 s for 12 points, a stuck value for 24 points. A fault's window runs from its first
point to ``WINDOW_AFTER`` points after its last.

Scoring, per detector, at the threshold that suits it best (chosen on the same data, for both,
which favours neither): every point scoring at or above the threshold is a detection. In a window,
the earliest detection counts once, worth ``2 / (1 + e^(5y)) - 1`` where ``y`` runs from -1 at
the window's start to 0 at its end (earlier is better), and a window without one costs 1. A
detection outside every window costs 0.11 times the same curve of its distance past the last
window (NAB's standard profile). The sum is normalised so that detecting nothing scores 0 and a
perfect detector 100. Recall and precision (detections inside windows) at that threshold are
printed beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from detection_real import robust_scale  # noqa: E402

from processing.offline import score_series  # noqa: E402
from processing.streams import RESOLUTION  # noqa: E402
from smartcity import datasets  # noqa: E402

WINDOW_AFTER = 12
A_FP = 0.11
KINDS = ("spike", "shift", "drift", "noise", "stuck")
LENGTH = {"spike": 1, "shift": 48, "drift": 96, "noise": 12, "stuck": 24}


@dataclass(frozen=True, slots=True)
class Labelled:
    """One series with faults written in, and where they are."""

    domain: str
    name: str
    ts_us: NDArray[np.int64]
    values: NDArray[np.float64]
    windows: list[tuple[int, int]]  # point indices, inclusive


def backgrounds(days: float) -> list[tuple[str, datasets.RealSeries]]:
    """The real series each domain starts from, cut to ``days``."""
    air = datasets.beijing(("PM2.5", "TEMP", "PRES"))

    def some(metric: str, count: int) -> list[datasets.RealSeries]:
        return [s for s in air if s.info.metric == metric][:count]

    chosen = [
        *(("air quality", s) for s in some("pm2_5", 4)),
        *(("climate", s) for s in [*some("temperature", 2), *some("pressure", 1)]),
        ("traffic", datasets.metro_traffic()),
    ]
    cut = []
    for domain, series in chosen:
        stop = int(series.ts_us[0]) + int(days * 86_400e6)
        keep = series.ts_us < stop
        cut.append(
            (domain, datasets.RealSeries(series.info, series.ts_us[keep], series.values[keep]))
        )
    return cut


def labelled(
    domain: str, series: datasets.RealSeries, faults: int, rng: np.random.Generator
) -> Labelled:
    """``series`` with ``faults`` faults of every kind in turn, spread over its length."""
    x = series.values.copy()
    n = x.size
    windows: list[tuple[int, int]] = []
    resolution = RESOLUTION.get(series.info.metric, 0.1)
    for j in range(faults):
        kind = KINDS[j % len(KINDS)]
        length = LENGTH[kind]
        lo = 24 * 21 + (n - 24 * 21 - length - WINDOW_AFTER) * (j + rng.uniform(0.1, 0.9)) / faults
        first = int(lo)
        part = slice(first, first + length)
        s = robust_scale(series.ts_us, series.values, first, resolution)
        sign = rng.choice([-1.0, 1.0]) if series.info.metric in ("temperature", "pressure") else 1.0
        match kind:
            case "spike":
                x[part] += sign * 10 * s
            case "shift":
                x[part] += sign * 6 * s
            case "drift":
                x[part] += sign * 12 * s * np.minimum(np.arange(1, length + 1) / 72, 1.0)
            case "noise":
                x[part] += rng.normal(0, 6 * s, length)
            case "stuck":
                x[part] = x[first - 1] if np.isfinite(x[first - 1]) else x[first]
        windows.append((first, min(first + length - 1 + WINDOW_AFTER, n - 1)))
    name = f"{series.info.device}/{series.info.metric}"
    return Labelled(domain, name, series.ts_us, x, windows)


def ewma_z(values: NDArray[np.float64], alpha: float) -> NDArray[np.float64]:
    """|z| of each point against the exponentially weighted mean and variance before it."""
    scores = np.zeros(values.size)
    mean = var = math.nan
    for i, x in enumerate(values.tolist()):
        if not math.isfinite(x):
            continue
        if math.isnan(mean):
            mean, var = x, 0.0
            continue
        sd = math.sqrt(var)
        scores[i] = abs(x - mean) / sd if sd > 0 else 0.0
        delta = x - mean
        mean += alpha * delta
        var = (1 - alpha) * (var + alpha * delta * delta)
    return scores


def _sigmoid(y: NDArray[np.float64]) -> NDArray[np.float64]:
    """NAB's scaled sigmoid: 1 at y = -1 (a window's start), 0 at its end, towards -1 beyond."""
    result: NDArray[np.float64] = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return result


def nab_raw(detected: NDArray[np.bool_], windows: list[tuple[int, int]]) -> tuple[float, int, int]:
    """(raw score, windows found, detections outside windows) for one series."""
    inside = np.zeros(detected.size, dtype=bool)
    score = 0.0
    found = 0
    for lo, hi in windows:
        inside[lo : hi + 1] = True
        hits = np.flatnonzero(detected[lo : hi + 1])
        if hits.size:
            found += 1
            y = -1.0 + hits[0] / max(hi - lo, 1)
            score += float(_sigmoid(np.array(y)))
        else:
            score -= 1.0
    outside = np.flatnonzero(detected & ~inside)
    ends = np.array([hi for _, hi in windows])
    widths = np.array([hi - lo + 1 for lo, hi in windows])
    previous = np.searchsorted(ends, outside) - 1  # the window each false detection follows
    cost = np.full(outside.size, A_FP)
    after = previous >= 0
    # Just past a window a detection is mostly its echo; it costs more the further it is.
    y = (outside[after] - ends[previous[after]]) / widths[previous[after]]
    cost[after] = np.where(y < 1, -A_FP * _sigmoid(y), A_FP)
    score -= float(cost.sum())
    return score, found, int(outside.size)


def evaluate(series: list[Labelled], scores: list[NDArray[np.float64]]) -> dict[str, float]:
    """The best normalised score over thresholds, with its recall and precision."""
    pooled = np.concatenate(scores)
    candidates = np.unique(np.quantile(pooled[pooled > 0], np.linspace(0.0, 1.0, 201)))
    null = sum(-len(s.windows) for s in series)
    perfect = sum(float(len(s.windows)) for s in series)
    best = {"score": -math.inf}
    for threshold in candidates.tolist():
        raw = 0.0
        found = outside = detections = 0
        for item, sc in zip(series, scores, strict=True):
            detected = sc >= threshold
            r, f, o = nab_raw(detected, item.windows)
            raw += r
            found += f
            outside += o
            detections += int(detected.sum())
        normalised = 100 * (raw - null) / (perfect - null)
        if normalised > best["score"]:
            windows = sum(len(s.windows) for s in series)
            best = {
                "score": normalised,
                "threshold": threshold,
                "recall": found / windows,
                "precision": (detections - outside) / detections if detections else 1.0,
            }
    return best


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=float, default=365.0, help="of each background")
    parser.add_argument("--faults", type=int, default=30, help="per series")
    parser.add_argument("--alpha", type=float, default=0.05, help="the EWMA's weight")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    series = [labelled(d, s, args.faults, rng) for d, s in backgrounds(args.days)]
    ours = [score_series(s.ts_us, s.values) for s in series]
    plain = [ewma_z(s.values, args.alpha) for s in series]
    result: dict[str, object] = {}
    for domain in [*sorted({s.domain for s in series}), "all"]:
        pick = [i for i, s in enumerate(series) if domain in ("all", s.domain)]
        result[domain] = {
            "score_series": evaluate([series[i] for i in pick], [ours[i] for i in pick]),
            "ewma_z": evaluate([series[i] for i in pick], [plain[i] for i in pick]),
        }
    result["series"] = len(series)
    result["faults"] = sum(len(s.windows) for s in series)
    result["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['faults']} labelled faults in {len(series)} real series, {args.days:g} days each\n"
    )
    print(f"{'domain':<14}{'detector':<14}{'NAB-style':>10}{'recall':>9}{'precision':>11}")
    for domain in [*sorted({s.domain for s in series}), "all"]:
        for detector in ("score_series", "ewma_z"):
            row = result[domain][detector]  # type: ignore[index]
            print(
                f"{domain:<14}{detector:<14}{row['score']:>10.1f}{row['recall']:>9.2f}"
                f"{row['precision']:>11.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
