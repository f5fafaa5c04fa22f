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

from processing import seasonal, tails  # noqa: E402
from processing.config import DetectionSettings  # noqa: E402
from processing.hook import ReadingColumns  # noqa: E402
from processing.stage import DetectionStage  # noqa: E402
from processing.state import StreamState  # noqa: E402
from processing.streams import StreamInfo  # noqa: E402
from processing.zones import offset_table  # noqa: E402
from tests.processing.naive import NaiveStream  # noqa: E402

T0 = 1_795_000_000_000_000
# Warm-up counted in readings only, so the streams reach steady state within the benchmark.
STEADY = DetectionSettings(warmup_s=0.0)
UTC_ZONE = offset_table(0.0)
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
    infos: list[StreamInfo] = []
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
        seasonal.baseline_kernel(
            rows,
            batch.ts_us,
            batch.values,
            state.core,
            state.slots,
            state.params,
            cfg,
            UTC_ZONE,
            out,
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
    settled = np.zeros(streams, dtype=bool)
    slots = np.zeros((streams, 48, 3))
    z_out = np.empty(ids.size)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2))
    hour = 3_600_000_000
    floor = 1e-9

    def slot_of_hour(hours: np.ndarray) -> np.ndarray:
        slot: np.ndarray = hours % 24 + 24 * (((hours // 24 + 3) % 7) >= 5)
        return slot

    def view(s: np.ndarray, slot: np.ndarray, sp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        other = np.where(slot < 24, slot + 24, slot - 24)
        own, twin = slots[s, slot], slots[s, other]
        own_warm, twin_warm = own[:, 2] >= cfg.slot_warm, twin[:, 2] >= cfg.slot_warm
        offset = np.where(own_warm, own[:, 0], np.where(twin_warm, twin[:, 0], 0.0))
        borrowed = 2 * np.maximum(twin[:, 1], sp)
        typical = np.where(own_warm, own[:, 1], np.where(twin_warm, borrowed, sp))
        return offset, typical

    for r in range(rank.max() + 1):
        pick = by_rank[bounds[r] : bounds[r + 1]]
        s, x, ts_i = ids[pick], batch.values[pick].copy(), batch.ts_us[pick]
        ts = ts_i.astype(np.float64)
        gap = (ts - last[s]) / 1e6
        seen = n[s] > 0
        c = np.where(
            cadence[s] == 0,
            gap,
            cadence[s] + 0.05 * (np.minimum(gap, 10 * cadence[s]) - cadence[s]),
        )
        cadence[s] = np.where(seen & (ts > last[s]), c, cadence[s])
        level[s] = np.where(seen, level[s], x)
        spread[s] = np.where(seen, spread[s], 0.0)
        warm = n[s] >= cfg.warmup_readings
        # Settle the streams whose warm-up ends now: hour means become offsets from the mean.
        ending = s[warm & ~settled[s]]
        if ending.size:
            block = slots[ending]
            seen = block[:, :, 2] > 0
            block[:, :, 0] -= np.where(seen, level[ending, None], 0.0)
            counts = np.where(block[:, :, 2] >= cfg.slot_warm, block[:, :, 2], 0.0)
            total = counts.sum(axis=1)
            mean_spread = (counts * block[:, :, 1]).sum(axis=1) / np.maximum(total, 1)
            spread[ending] = np.where(total > 0, mean_spread, spread[ending])
            slots[ending] = block
            settled[ending] = True

        # Warm-up rows: plain means (with the absurd-reading guard).
        cold = ~warm
        if cold.any():
            sc_, xc, nc = s[cold], x[cold], n[s][cold]
            lv = level[sc_]
            limit = 20 * np.maximum(1.2533 * spread[sc_], floor)
            xc = np.where(nc >= 5, np.clip(xc, lv - limit, lv + limit), xc)
            slot = slot_of_hour(ts_i[cold] // hour)
            cnt = slots[sc_, slot, 2]
            lv = lv + (xc - lv) / (nc + 1)
            level[sc_] = lv
            spread[sc_] += (np.abs(xc - lv) - spread[sc_]) / (nc + 1)
            mean = np.where(
                cnt == 0, xc, slots[sc_, slot, 0] + (xc - slots[sc_, slot, 0]) / (cnt + 1)
            )
            slots[sc_, slot, 1] += (np.abs(xc - mean) - slots[sc_, slot, 1]) / (cnt + 1)
            slots[sc_, slot, 0] = mean
            slots[sc_, slot, 2] = cnt + 1

        # Warm rows: interpolated seasonal expectation, robust z, protected learning.
        if warm.any():
            sw, xw, nw, tw = s[warm], x[warm], n[s][warm], ts_i[warm]
            lv, sp, cad = level[sw], spread[sw], cadence[sw]
            local = tw - hour // 2
            hours = local // hour
            wb = (local - hours * hour) / hour
            wa = 1 - wb
            sa, sb = slot_of_hour(hours), slot_of_hour(hours + 1)
            oa, ta = view(sw, sa, sp)
            ob, tb = view(sw, sb, sp)
            offset = wa * oa + wb * ob
            typical = wa * ta + wb * tb
            expected = lv + offset
            sigma = np.maximum(1.2533 * typical, floor)
            z = (xw - expected) / sigma
            # The main detector alone never learns its tail: it keeps the prior's "1 in 3,000".
            q, m = tails.SPIKE_PRIOR
            usual = max(cfg.sustain_z, q + tails.excess_at(cfg.calm_score) * m)
            weight = np.where(np.abs(z) > usual, cfg.protect, 1.0)
            a = np.minimum(1 / cfg.level_readings, cad / cfg.level_tau_s)
            a = np.maximum(1 / (nw + 1), a) * weight
            g_sigma = np.maximum(1.2533 * sp, floor)
            d = np.clip(xw - offset - lv, -3 * g_sigma, 3 * g_sigma)
            level[sw] = lv + a * d
            spread[sw] = sp + a * (np.abs(d) - sp)
            err = np.clip(xw - expected, -3 * sigma, 3 * sigma)
            rate = np.minimum(0.5, cad / cfg.slot_tau_s)
            for slot, w, o, t in ((sa, wa, oa, ta), (sb, wb, ob, tb)):
                cnt = slots[sw, slot, 2]
                fresh = cnt == 0
                slots[sw, slot, 0] = np.where(fresh, o, slots[sw, slot, 0])
                slots[sw, slot, 1] = np.where(fresh, np.maximum(t, sp), slots[sw, slot, 1])
                step = np.maximum(1 / (cnt + 1), rate) * weight * w
                slots[sw, slot, 0] += step * err
                slots[sw, slot, 1] += step * (np.abs(err) - slots[sw, slot, 1])
                slots[sw, slot, 2] = cnt + w
            z_out[pick[warm]] = z
        z_out[pick[cold]] = 0.0
        n[s] += 1
        last[s] = np.maximum(last[s], ts)
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
            model.score_one(features)  # type: ignore[no-untyped-call]
            model.learn_one(features)  # type: ignore[no-untyped-call]

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
