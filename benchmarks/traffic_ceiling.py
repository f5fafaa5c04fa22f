"""How detectable detection_real's traffic faults are at all, by any forecast of the counter.

    python benchmarks/traffic_ceiling.py            # tables for people
    python benchmarks/traffic_ceiling.py --json     # one JSON object

``benchmarks/detection_real.py`` sizes its faults in a stream's robust scale ``s``, one number
per fault pooled over every hour of the day. The I-94 counter carries 300 vehicles an hour at
night and 5,000 to 7,000 by day, so ``10 s`` is a fraction of the day's own swings and many
times the night's. This benchmark asks what recall any detector of single readings could have
on it: it replays the untouched counter through two forecasts,

1. ``detector``: the seasonal baseline's own expectation and sigma (``DetectionStage``, one
   reading at a time, read back after each);
2. ``profile_x_ratio``: the simplest better model of traffic, an hour-of-day profile
   (weekdays, weekends) scaled by the day's running ratio to it, with each hour's own spread;

and, for ``--positions`` random readings after the first 28 days, adds the benchmark's spike
(``10 s``, ``s`` from ``detection_real.robust_scale``) to the forecast's residual. A spike is
detectable at a false-alert rate when its |z| exceeds the threshold the untouched counter
passes that often: ``spike_recall_at`` maps false alerts per week to that share (the ceiling
of any detector thresholding that forecast's |z|), and ``by_hours`` splits it by local time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from detection_real import robust_scale  # noqa: E402

from processing import layout  # noqa: E402
from processing.config import DetectionSettings  # noqa: E402
from processing.hook import ReadingColumns  # noqa: E402
from processing.stage import DetectionStage  # noqa: E402
from smartcity import datasets  # noqa: E402

LEARN_HOURS = 28 * 24
FALSE_PER_WEEK = (0.03, 0.2, 1.0)
HOUR_BANDS = ((0, 6), (6, 10), (10, 15), (15, 19), (19, 24))


def detector_forecast(
    series: datasets.RealSeries, grid: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The baseline's expectation and sigma for each hour of ``grid`` that has a reading."""
    stage = DetectionStage(DetectionSettings(), capacity=1, zone=datasets.METRO_ZONE)
    stage.describe([series.info])
    expected = np.full(grid.size, np.nan)
    sigma = np.full(grid.size, np.nan)
    where = np.searchsorted(grid, series.ts_us)
    ids = np.array([series.info.stream_id], np.int32)
    for i in np.flatnonzero(np.isfinite(series.values)):
        one = slice(i, i + 1)
        stage.process(ReadingColumns(ids, series.ts_us[one], series.values[one]))
        expected[where[i]] = stage.state.core[0, layout.C_EXPECTED]
        sigma[where[i]] = stage.state.core[0, layout.C_SIGMA]
    return expected, sigma


def profile_forecast(
    x: NDArray[np.float64], slot: NDArray[np.int64], rate: float = 0.05, day_rate: float = 0.2
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Hour-of-day profile (48 slots) times the day's running ratio to it; each slot's spread."""
    profile = np.full(48, np.nan)
    spread = np.full(48, np.nan)
    forecast = np.full(x.size, np.nan)
    sigma = np.full(x.size, np.nan)
    ratio = 1.0
    for t in range(x.size):
        s = slot[t]
        usual = profile[s]
        if np.isfinite(usual):
            forecast[t] = usual * ratio
            sigma[t] = 1.4826 * 0.8 * spread[s]  # mean absolute error to a normal sigma
        value = x[t]
        if not np.isfinite(value):
            continue
        if not np.isfinite(usual):
            profile[s] = value
            continue
        error = value - forecast[t]
        spread[s] = (
            abs(error)
            if not np.isfinite(spread[s])
            else spread[s] + rate * (abs(error) - spread[s])
        )
        ratio += day_rate * (min(max(value / max(usual, 50.0), 0.3), 3.0) - ratio)
        profile[s] += rate * (value / ratio - usual)
    return forecast, sigma


def ceiling(
    x: NDArray[np.float64],
    forecast: NDArray[np.float64],
    sigma: NDArray[np.float64],
    *,
    positions: NDArray[np.int64],
    sizes: NDArray[np.float64],
    hours: NDArray[np.int64],
) -> dict[str, object]:
    """Share of spikes beyond the untouched |z| passed at each false-alert rate, and by hour."""
    residual = x - forecast
    z = np.abs(residual / sigma)
    counted = np.isfinite(z)
    counted[:LEARN_HOURS] = False
    untouched = z[counted]
    weeks = untouched.size / 168
    spike = np.abs(residual[positions] + sizes) / sigma[positions]
    found: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    for rate in FALSE_PER_WEEK:
        threshold = float(np.quantile(untouched, 1 - min(1.0, rate * weeks / untouched.size)))
        thresholds[f"{rate:g}"] = threshold
        found[f"{rate:g}"] = float(np.mean(spike > threshold))
    strict = thresholds[f"{FALSE_PER_WEEK[0]:g}"]
    by_hours = {}
    for lo, hi in HOUR_BANDS:
        band = (hours[positions] >= lo) & (hours[positions] < hi)
        by_hours[f"{lo:02d}-{hi:02d}"] = {
            "spikes": int(band.sum()),
            "median_spike_z": float(np.median(spike[band])),
            "recall_at_strictest": float(np.mean(spike[band] > strict)),
            "median_sigma": float(np.median(sigma[positions][band])),
        }
    return {
        "spike_recall_at": found,
        "threshold_z_at": thresholds,
        "median_sigma": float(np.nanmedian(sigma[counted])),
        "by_hours": by_hours,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--positions", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    series = datasets.metro_traffic(stream_id=1000)
    start = int(series.ts_us[0])
    grid = np.arange(start, int(series.ts_us[-1]) + 1, 3_600_000_000, dtype=np.int64)
    x = np.full(grid.size, np.nan)
    x[np.searchsorted(grid, series.ts_us)] = series.values
    local = pd.to_datetime(grid, unit="us", utc=True).tz_convert(datasets.METRO_ZONE)
    hours = local.hour.to_numpy()
    slot = hours + np.where(local.day_of_week.to_numpy() >= 5, 24, 0)

    rng = np.random.default_rng(args.seed)
    sent = np.flatnonzero(np.isfinite(x))
    positions = np.sort(rng.choice(sent[sent > LEARN_HOURS], args.positions, replace=False))
    firsts = np.searchsorted(series.ts_us, grid[positions])
    sizes = np.array([10 * robust_scale(series.ts_us, series.values, int(f), 1.0) for f in firsts])

    spikes = {"positions": positions, "sizes": sizes, "hours": hours}
    result = {
        "spikes": int(positions.size),
        "median_spike_vehicles": float(np.median(sizes)),
        "detector": ceiling(x, *detector_forecast(series, grid), **spikes),
        "profile_x_ratio": ceiling(x, *profile_forecast(x, slot), **spikes),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['spikes']} spikes of 10 s (median {result['median_spike_vehicles']:.0f}"
        " vehicles) added to the untouched I-94 counter"
    )
    print()
    rates = " | ".join(f"recall at {r:g}/week" for r in FALSE_PER_WEEK)
    print(f"| forecast | median sigma | {rates} |")
    print("|---|---:|" + "---:|" * len(FALSE_PER_WEEK))
    for name in ("detector", "profile_x_ratio"):
        row = result[name]
        assert isinstance(row, dict)
        shares = " | ".join(f"{v:.2f}" for v in row["spike_recall_at"].values())
        print(f"| {name} | {row['median_sigma']:.0f} | {shares} |")
    print()
    print(f"By local hour, at {FALSE_PER_WEEK[0]:g} false alerts per week:")
    print()
    print("| forecast | hours | spikes | median sigma | median spike z | recall |")
    print("|---|---|---:|---:|---:|---:|")
    for name in ("detector", "profile_x_ratio"):
        row = result[name]
        assert isinstance(row, dict)
        for band, cell in row["by_hours"].items():
            print(
                f"| {name} | {band} | {cell['spikes']} | {cell['median_sigma']:.0f} |"
                f" {cell['median_spike_z']:.1f} | {cell['recall_at_strictest']:.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
