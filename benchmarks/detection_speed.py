"""Detection throughput: the numba kernels beside numpy, plain Python and River, in one run.

    python benchmarks/detection_speed.py            # a table for people
    python benchmarks/detection_speed.py --json     # one JSON object

1. kernel: the main detector alone (seasonal robust baseline, ``baseline_kernel``) over a shuffled
   fleet of ``--streams`` streams, one core;
2. stage: the whole detection stage as ingest runs it: ``DetectionStage.process`` on 10,000-reading
   batches of a mixed fleet (air, traffic, bins, so every domain rule runs), every detector and the
   alert conditions included, plus draining the transitions;
3. numpy: the main detector's work vectorised across streams (one round per reading rank);
4. python: the main detector in plain Python (the test suite's reference implementation);
5. river: ``river.anomaly.HalfSpaceTrees`` learning and scoring one reading at a time, the
   library a user would reach for.

Figures are medians over ``--repeat`` runs; slow alternatives run on a slice and are scaled.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processing import _kernels as k  # noqa: E402
from processing.config import DetectionSettings  # noqa: E402
from processing.hook import ReadingColumns  # noqa: E402
from processing.stage import DetectionStage  # noqa: E402
from processing.state import StreamState  # noqa: E402
from processing.streams import StreamInfo  # noqa: E402
from tests.processing.naive import NaiveStream  # noqa: E402

T0 = 1_795_000_000_000_000
# Warm-up counted in readings only, so the streams reach steady state within the benchmark.
STEADY = DetectionSettings(warmup_s=0.0)
MIX = (
    ("air", "aq", ("pm2_5", "pm10", "no2", "temperature", "humidity")),
    ("traffic", "loop", ("vehicle_count", "speed_mean", "occupancy")),
    ("waste", "bin", ("fill_level", "temperature")),
)


def fleet_readings(streams: int, per_stream: int, seed: int = 1) -> ReadingColumns:
    """``per_stream`` readings a minute apart for each stream, interleaved as ingest sees them."""
    rng = np.random.default_rng(seed)
    ids = np.tile(np.arange(streams, dtype=np.int32), per_stream)
    step = np.repeat(np.arange(per_stream, dtype=np.int64), streams)
    ts = T0 + step * 60_000_000 + rng.integers(0, 1_000_000, ids.size)
    values = 40 + 10 * np.sin(step / 240.0) + rng.normal(0, 2, ids.size) + ids % 17
    spikes = rng.random(ids.size) < 1e-4
    values[spikes] += 200
    return ReadingColumns(ids, ts.astype(np.int64), values)


def describe_mix(stage: DetectionStage, streams: int) -> None:
    infos = []
    device = 0
    while len(infos) < streams:
        family, sensor, metrics = MIX[device % len(MIX)]
        for metric in metrics:
            if len(infos) < streams:
                site = f"d{device % 12}"
                infos.append(
                    StreamInfo(len(infos), f"dev{device}", sensor, metric, "", family, site)
                )
        device += 1
    stage.describe(infos)


def timed(run, repeat: int) -> float:  # type: ignore[no-untyped-def]
    laps = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        laps.append(time.perf_counter() - started)
    return statistics.median(laps)


def bench_kernel(batch: ReadingColumns, streams: int, repeat: int) -> float:
    cfg = STEADY.as_array()
    rows = batch.stream_ids.astype(np.int64)
    out = np.empty(len(batch))

    def run() -> None:
        state = StreamState(streams)
        k.baseline_kernel(
            rows, batch.ts_us, batch.values, state.core, state.slots, state.params, cfg, out
        )

    run()  # compile
    return len(batch) / timed(run, repeat)


def bench_stage(batch: ReadingColumns, streams: int, repeat: int) -> float:
    size = 10_000

    def run() -> None:
        stage = DetectionStage(capacity=streams)
        describe_mix(stage, streams)
        for lo in range(0, len(batch), size):
            stage.process(
                ReadingColumns(
                    batch.stream_ids[lo : lo + size],
                    batch.ts_us[lo : lo + size],
                    batch.values[lo : lo + size],
                )
            )
            stage.drain()

    run()
    return len(batch) / timed(run, repeat)


def numpy_baseline(batch: ReadingColumns, streams: int) -> np.ndarray:
    """The baseline's arithmetic, vectorised across streams: round r takes each stream's r-th reading."""
    cfg = STEADY
    ids = batch.stream_ids.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    counts = np.bincount(ids, minlength=streams)
    rank = np.empty(ids.size, dtype=np.int64)
    rank[order] = np.arange(ids.size) - np.repeat(np.cumsum(counts) - counts, counts)
    n = np.zeros(streams)
    level, spread, cadence, last = (np.zeros(streams) for _ in range(4))
    slot_level, slot_spread, slot_n = (np.zeros((streams, 48)) for _ in range(3))
    z_out = np.empty(ids.size)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2))
    for r in range(rank.max() + 1):
        pick = by_rank[bounds[r] : bounds[r + 1]]
        s, x, ts = ids[pick], batch.values[pick], batch.ts_us[pick].astype(np.float64)
        seconds = np.floor(ts / 1e6)
        slot = ((seconds // 3600) % 24 + 24 * (((seconds // 86400 + 3) % 7) >= 5)).astype(np.int64)
        gap = (ts - last[s]) / 1e6
        seen = n[s] > 0
        c = np.where(
            cadence[s] == 0,
            gap,
            cadence[s] + 0.05 * (np.minimum(gap, 10 * cadence[s]) - cadence[s]),
        )
        cadence[s] = np.where(seen & (ts > last[s]), c, cadence[s])
        first = ~seen
        level[s] = np.where(first, x, level[s])
        spread[s] = np.where(first, 0.0, spread[s])
        lv, sp = level[s], spread[s]
        so, ss, sc = slot_level[s, slot], slot_spread[s, slot], slot_n[s, slot]
        warm_slot = sc >= cfg.slot_warm
        offset = np.where(warm_slot, so, 0.0)
        expected = lv + offset
        typical = np.where(warm_slot, ss, sp)
        sigma = np.maximum(1.2533 * typical, 1e-9 + 0.01 * np.abs(expected))
        z = (x - expected) / sigma
        warm = n[s] >= cfg.warmup_readings
        weight = np.where(warm & (np.abs(z) > cfg.sustain_z), cfg.protect, 1.0)
        a = np.maximum(1 / (n[s] + 1), np.minimum(0.5, cadence[s] / cfg.level_tau_s)) * weight
        g_sigma = np.maximum(1.2533 * sp, 1e-9 + 0.01 * np.abs(lv))
        d = np.where(warm, np.clip(x - offset - lv, -3 * g_sigma, 3 * g_sigma), x - offset - lv)
        level[s] = lv + a * d
        spread[s] = sp + a * (np.abs(d) - sp)
        so = np.where(sc == 0, x - lv, so)
        ss = np.where(sc == 0, sp, ss)
        b = np.maximum(1 / (sc + 1), np.minimum(0.5, cadence[s] / cfg.slot_tau_s)) * weight
        s_sigma = np.maximum(1.2533 * ss, 1e-9 + 0.01 * np.abs(lv + so))
        sd = np.where(warm_slot, np.clip(x - lv - so, -3 * s_sigma, 3 * s_sigma), x - lv - so)
        slot_level[s, slot] = so + b * sd
        slot_spread[s, slot] = ss + b * (np.abs(sd) - ss)
        slot_n[s, slot] = sc + 1
        n[s] += 1
        last[s] = np.maximum(last[s], ts)
        z_out[pick] = np.where(warm, z, 0.0)
    return z_out


def bench_numpy(batch: ReadingColumns, streams: int, repeat: int) -> float:
    return len(batch) / timed(lambda: numpy_baseline(batch, streams), repeat)


def bench_python(batch: ReadingColumns, limit: int) -> float:
    ids, ts, values = batch.stream_ids[:limit], batch.ts_us[:limit], batch.values[:limit]
    references: dict[int, NaiveStream] = {}

    def run() -> None:
        for stream, t, x in zip(ids.tolist(), ts.tolist(), values.tolist(), strict=True):
            reference = references.get(stream)
            if reference is None:
                reference = references[stream] = NaiveStream()

            reference.baseline(float(t), x)

    return limit / timed(run, 1)


def bench_river(batch: ReadingColumns, limit: int) -> float:
    from river.anomaly import HalfSpaceTrees

    model = HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=42)
    values = ((batch.values[:limit] - 0) / 300).clip(0, 1).tolist()

    def run() -> None:
        for x in values:
            features = {"x": x}
            model.score_one(features)
            model.learn_one(features)

    return limit / timed(run, 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--per-stream", type=int, default=400, help="readings per stream")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    batch = fleet_readings(args.streams, args.per_stream)
    small = fleet_readings(min(args.streams, 500), 40)
    figures = {
        "kernel_readings_per_s": bench_kernel(batch, args.streams, args.repeat),
        "stage_readings_per_s": bench_stage(batch, args.streams, args.repeat),
        "numpy_readings_per_s": bench_numpy(batch, args.streams, max(1, args.repeat // 2)),
        "python_readings_per_s": bench_python(small, len(small)),
        "river_readings_per_s": bench_river(small, min(len(small), 10_000)),
    }
    river = figures["river_readings_per_s"]
    figures["kernel_vs_river"] = figures["kernel_readings_per_s"] / river
    figures["stage_vs_river"] = figures["stage_readings_per_s"] / river
    figures["kernel_vs_numpy"] = figures["kernel_readings_per_s"] / figures["numpy_readings_per_s"]
    figures["kernel_vs_python"] = (
        figures["kernel_readings_per_s"] / figures["python_readings_per_s"]
    )
    figures["readings"] = len(batch)
    figures["streams"] = args.streams
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"{len(batch):,} readings over {args.streams:,} streams, medians of {args.repeat} runs\n")
    print(f"{'what':<42}{'readings/s':>16}{'vs River':>12}")
    rows = (
        ("main detector kernel (numba, 1 core)", "kernel_readings_per_s"),
        ("whole detection stage with alert logic", "stage_readings_per_s"),
        ("main detector, vectorised numpy", "numpy_readings_per_s"),
        ("main detector, plain Python", "python_readings_per_s"),
        ("River HalfSpaceTrees learn+score", "river_readings_per_s"),
    )
    for label, key in rows:
        print(f"{label:<42}{figures[key]:>16,.0f}{figures[key] / river:>11,.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
