"""Detection quality on real city data: false alerts, injected faults, and what scores mean.

    python benchmarks/detection_real.py            # tables for people
    python benchmarks/detection_real.py --json     # one JSON object
    python benchmarks/detection_real.py --markdown docs/detection-quality.md

Reads the shared real data (``smartcity.datasets``): 12 Beijing air stations x 6 metrics, one
site, city zone Asia/Shanghai; and the I-94 traffic counter as a ``vehicle_count`` stream, zone
America/Chicago. Readings are replayed through ``DetectionStage`` as ingest feeds it
(``processing.offline.replay``: hourly batches in time order, the sweeps after each batch);
missing values are readings never sent. The first ``--learn-days`` of every replay are learning
and not counted.

1. Untouched data: sensor-fault alerts (spike, level shift, stuck, neighbour, impossible) per
   stream-week, by kind. The stations' shared pollution episodes are real events, not faults.
2. Injected faults: for each kind, ``--faults`` positions spread over streams, seasons and hours
   (one replay per kind), sized in each stream's own robust scale ``s``: how far a reading
   usually strays from the better of two plain forecasts, its day's running median (24
   readings) or the same hour a week before, as 1.4826 x the median absolute deviation over the
   weeks before the fault (the smaller of the two; the weekly one divided by sqrt 2, being the
   difference of two readings). Air quality follows the weather, so its day is the better
   forecast; traffic follows the week:

   ==========  ===============================================================  ===============
   kind        what the sensor does                                             alerts that
                                                                                describe it
   ==========  ===============================================================  ===============
   spike       one reading off by 10 s                                          spike, level
                                                                                shift, neighbour,
                                                                                impossible
   stuck       repeats the fault's first reading 24 times                       stuck
   drift       drifts linearly to 12 s over 72 readings, holds 24               level shift,
                                                                                neighbour, spike
   offset      reads 8 s high (or low) for 72 readings (a calibration step)     same as drift
   dropout     the whole station sends nothing for 24 readings                  missing
   noise       adds Gaussian noise of 6 s for 12 readings                      spike, level
                                                                                shift, neighbour
   zeros       reads 0 for 24 readings (a dead sensor)                          stuck, spike,
                                                                                level shift,
                                                                                neighbour,
                                                                                impossible
   ==========  ===============================================================  ===============

   Recall: the share of faults with an alert describing it opened on that stream (dropout: on
   that station) from the fault's first reading to ``GRACE_READINGS`` after its last. Delay: from
   the first faulty reading to that opening, in seconds and in readings.

   Precision: of the alerts the injection added, the share that are right. Added: opened in the
   injected replay from a fault's first reading to ``AFTERMATH_READINGS`` after its last (so
   the return to normal is counted), on a stream the fault can reach (its own, its station's
   for a dropout, and the streams compared with it: the same metric at the same site), and
   not opened by the untouched replay on the same stream and kind within
   ``BACKGROUND_READINGS`` (a real alert that merely moved because learning saw other values
   is the same alert; after a dropout, also one that opened up to the outage's length later,
   as a silent station's air-quality averages must fill again before it can speak). Right: a
   sensor-fault alert (the kinds of figure 1; missing data for a dropout) on the faulty stream
   (station, for a dropout) within that aftermath. Air-quality alerts a fault causes, and
   alerts on its neighbours, are wrong. Alerts added anywhere else (learning perturbed weeks
   earlier by another fault changing which borderline real alerts open: detection couples no
   other streams) are reported as ``alerts_later`` and not counted: how many alerts real data
   opens on its own is figure 1.
3. Scores on untouched data: the share of readings scoring above 0.5 and above 0.9, per metric.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processing.config import DetectionSettings  # noqa: E402
from processing.offline import replay  # noqa: E402
from processing.stage import DetectionStage, Event  # noqa: E402
from processing.streams import RESOLUTION  # noqa: E402
from smartcity import datasets  # noqa: E402
from smartcity.datasets import RealSeries  # noqa: E402

FAULT_KINDS = ("spike", "level_shift", "stuck", "neighbour", "impossible")
HOUR_US = 3_600_000_000
WEEK_US = 7 * 24 * HOUR_US
GRACE_READINGS = 6  # an alert this soon after a fault's end still found it
AFTERMATH_READINGS = 48  # alerts this soon after a fault's end are the injection's doing
BACKGROUND_READINGS = 24  # an alert the untouched replay opened this close is the same alert
DESCRIBES: dict[str, frozenset[str]] = {
    "spike": frozenset({"spike", "level_shift", "neighbour", "impossible"}),
    "stuck": frozenset({"stuck"}),
    "drift": frozenset({"level_shift", "neighbour", "spike"}),
    "offset": frozenset({"level_shift", "neighbour", "spike"}),
    "dropout": frozenset({"missing"}),
    "noise": frozenset({"spike", "level_shift", "neighbour"}),
    "zeros": frozenset({"stuck", "spike", "level_shift", "neighbour", "impossible"}),
}
LENGTH = {
    "spike": 1,
    "stuck": 24,
    "drift": 96,
    "offset": 72,
    "dropout": 24,
    "noise": 12,
    "zeros": 24,
}


@dataclass(frozen=True, slots=True)
class City:
    """Streams of one city replayed together."""

    name: str
    zone: str
    series: list[RealSeries]


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: on which stream, from which reading, for how many."""

    kind: str
    stream_id: int
    device: str
    first: int  # index into the stream's readings
    length: int
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class Run:
    """What one replay opened, and each reading's score."""

    events: list[Event]
    scores: dict[int, NDArray[np.float64]]  # per stream, aligned with its readings
    counted_from_us: int


def cities(days: float | None) -> list[City]:
    """The real datasets, cut to their first ``days`` if given."""
    found = [
        City("beijing", datasets.BEIJING_ZONE, datasets.beijing()),
        City("i94", datasets.METRO_ZONE, [datasets.metro_traffic(stream_id=1000)]),
    ]
    if days is None:
        return found
    cut: list[City] = []
    for city in found:
        start = min(int(s.ts_us[0]) for s in city.series)
        stop = start + int(days * 24 * HOUR_US)
        series = [
            RealSeries(s.info, s.ts_us[s.ts_us < stop], s.values[s.ts_us < stop])
            for s in city.series
        ]
        cut.append(City(city.name, city.zone, series))
    return cut


def run(city: City, learn_days: float, settings: DetectionSettings) -> Run:
    """Replay ``city`` through a fresh stage as ingest would."""
    stage = DetectionStage(settings, capacity=len(city.series), zone=city.zone)
    stage.describe([s.info for s in city.series])
    ids, ts, values, owner, index = [], [], [], [], []
    for s in city.series:
        sent = np.flatnonzero(np.isfinite(s.values))
        ids.append(np.full(sent.size, s.info.stream_id, np.int32))
        ts.append(s.ts_us[sent])
        values.append(s.values[sent])
        owner.append(np.full(sent.size, s.info.stream_id, np.int64))
        index.append(sent)
    all_ts = np.concatenate(ts)
    order = np.argsort(all_ts, kind="stable")
    events, scores = replay(
        stage, np.concatenate(ids)[order], all_ts[order], np.concatenate(values)[order]
    )
    per_stream: dict[int, NDArray[np.float64]] = {}
    owners = np.concatenate(owner)[order]
    positions = np.concatenate(index)[order]
    for s in city.series:
        mine = owners == s.info.stream_id
        aligned = np.full(s.values.size, np.nan)
        aligned[positions[mine]] = scores[mine]
        per_stream[s.info.stream_id] = aligned
    start = min(int(s.ts_us[0]) for s in city.series)
    return Run(events, per_stream, start + int(learn_days * 24 * HOUR_US))


def untouched(runs: dict[str, Run], all_cities: list[City]) -> dict[str, object]:
    """Figure 1 and 3: alerts per stream-week by kind, and score shares per metric."""
    kinds: Counter[str] = Counter()
    weeks = 0.0
    above: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for city in all_cities:
        result = runs[city.name]
        for event in result.events:
            if event.opened and event.at.timestamp() * 1e6 >= result.counted_from_us:
                kinds[event.kind.slug] += 1
        for s in city.series:
            end = int(s.ts_us[-1])
            weeks += max(0.0, (end - result.counted_from_us) / WEEK_US)
            scores = result.scores[s.info.stream_id]
            counted = (s.ts_us >= result.counted_from_us) & np.isfinite(scores)
            tally = above[s.info.metric]
            tally[0] += int(counted.sum())
            tally[1] += int((scores[counted] > 0.5).sum())
            tally[2] += int((scores[counted] > 0.9).sum())
    faults = sum(kinds[k] for k in FAULT_KINDS)
    total = [sum(t[j] for t in above.values()) for j in range(3)]
    return {
        "fault_alerts_per_sensor_week": faults / weeks,
        "by_kind": {k: kinds[k] / weeks for k in sorted(kinds)},
        "alerts": dict(kinds),
        "sensor_weeks": weeks,
        "score_above_0_5": total[1] / total[0],
        "score_above_0_9": total[2] / total[0],
        "by_metric": {
            m: {"above_0_5": t[1] / t[0], "above_0_9": t[2] / t[0]} for m, t in above.items()
        },
    }


def robust_scale(
    ts_us: NDArray[np.int64], values: NDArray[np.float64], first: int, resolution: float
) -> float:
    """The spread of the readings before ``first`` around the better of two plain forecasts:
    the running median of their last 24 hours (over the week before) or the same hour a week
    earlier (over the three weeks before).

    Both look back in time, not in positions: a series with gaps (the traffic counter misses
    hours) would otherwise compare readings that are not a day or a week apart.
    """

    def spread(deviation: NDArray[np.float64]) -> float:
        deviation = deviation[np.isfinite(deviation)]
        if deviation.size == 0:
            return math.inf
        return 1.4826 * float(np.median(np.abs(deviation - np.median(deviation))))

    now = int(ts_us[first])
    day = slice(int(np.searchsorted(ts_us, now - 8 * 24 * HOUR_US)), first)
    recent = pd.Series(values[day], index=pd.to_datetime(ts_us[day], unit="us"))
    median = recent.rolling("24h", min_periods=12).median()
    counted = recent.index >= recent.index[0] + pd.Timedelta(hours=24) if recent.size else []
    by_day = spread((recent - median).to_numpy()[counted])
    weeks = slice(int(np.searchsorted(ts_us, now - 4 * WEEK_US)), first)
    t, x = ts_us[weeks], values[weeks]
    earlier = np.searchsorted(t, t - WEEK_US)
    paired = (earlier < t.size) & (t[np.minimum(earlier, t.size - 1)] == t - WEEK_US)
    by_week = spread(x[paired] - x[earlier[paired]]) / math.sqrt(2)
    scale = min(by_day, by_week)
    return max(scale, resolution) if math.isfinite(scale) else resolution


def plan(
    kind: str, city: City, count: int, learn_days: float, rng: np.random.Generator
) -> list[Fault]:
    """``count`` faults of ``kind`` spread over streams, seasons and hours of ``city``."""
    length = LENGTH[kind]
    start = min(int(s.ts_us[0]) for s in city.series) + int(learn_days * 24 * HOUR_US)
    candidates = city.series
    if kind == "dropout":  # a station goes quiet: one fault per device
        seen: dict[str, RealSeries] = {}
        for s in city.series:
            seen.setdefault(s.info.device, s)
        candidates = list(seen.values())
    faults: list[Fault] = []
    for j in range(count):
        s = candidates[j % len(candidates)]
        # Positions walk through the whole span (seasons), each at a random hour.
        lo = int(np.searchsorted(s.ts_us, start)) + 168
        hi = s.ts_us.size - length - GRACE_READINGS
        slot = lo + (hi - lo) * (j + rng.uniform(0.1, 0.9)) / count
        first = int(slot)
        if not np.isfinite(s.values[first : first + length]).all():
            # Inject into sent readings only: move to the next stretch without gaps.
            ok = np.isfinite(s.values)
            for candidate in range(first, hi):
                if ok[candidate : candidate + length].all():
                    first = candidate
                    break
        start_us, end_us = int(s.ts_us[first]), int(s.ts_us[first + length - 1])
        faults.append(Fault(kind, s.info.stream_id, s.info.device, first, length, start_us, end_us))
    return faults


def inject(city: City, faults: list[Fault], rng: np.random.Generator) -> City:
    """A copy of ``city`` with ``faults`` written into its readings."""
    by_id = {s.info.stream_id: s for s in city.series}
    changed = {sid: s.values.copy() for sid, s in by_id.items()}
    for fault in faults:
        s = by_id[fault.stream_id]
        x = changed[fault.stream_id]
        part = slice(fault.first, fault.first + fault.length)
        scale = robust_scale(s.ts_us, s.values, fault.first, RESOLUTION.get(s.info.metric, 0.1))
        # Pollutants and counts go up when they go wrong near zero; climate either way.
        sign = 1.0 if s.info.metric not in ("temperature", "pressure") else rng.choice([-1.0, 1.0])
        match fault.kind:
            case "spike":
                x[part] += sign * 10 * scale
            case "stuck":
                x[part] = x[fault.first]
            case "drift":
                ramp = np.minimum(np.arange(1, fault.length + 1) / 72, 1.0)
                x[part] += sign * 12 * scale * ramp
            case "offset":
                x[part] += sign * 8 * scale
            case "dropout":
                for other in city.series:
                    if other.info.device == fault.device:
                        changed[other.info.stream_id][part] = np.nan
            case "noise":
                x[part] += rng.normal(0, 6 * scale, fault.length)
            case "zeros":
                x[part] = 0.0
        if s.info.metric not in ("temperature", "pressure"):
            np.maximum(x, 0.0, out=x)
    series = [RealSeries(s.info, s.ts_us, changed[s.info.stream_id]) for s in city.series]
    return City(city.name, city.zone, series)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one injected replay compares with the untouched one."""

    found: list[tuple[float, float] | None]  # per fault: (delay s, delay readings), or missed
    added: int  # alerts the injection added, within AFTERMATH_READINGS of a fault
    right: int  # of those, a sensor-fault alert on the faulty stream (or station, for dropout)
    shifted: int  # alerts that only moved (same stream and kind within BACKGROUND_READINGS)
    later: int  # added alerts no fault reaches in its aftermath: perturbed learning, not counted


def judge(kind: str, faults: list[Fault], injected: Run, clean: Run, city: City) -> Verdict:
    """Recall and delay per fault; the added alerts, and how many of them are right."""
    describes = DESCRIBES[kind]
    device_of = {s.info.stream_id: s.info.device for s in city.series}
    group_of = {s.info.stream_id: (s.info.site, s.info.metric) for s in city.series}
    ts_of = {s.info.stream_id: s.ts_us for s in city.series}
    cadence = {sid: float(np.median(np.diff(ts))) for sid, ts in ts_of.items()}
    background: dict[tuple[int, str], list[float]] = defaultdict(list)
    for e in clean.events:
        if e.opened:
            background[e.stream_id, e.kind.slug].append(e.at.timestamp() * 1e6)

    def shifted(event: Event) -> bool:
        at = event.at.timestamp() * 1e6
        tolerance = BACKGROUND_READINGS * cadence[event.stream_id]
        # A station back from an outage speaks again only once its averages have filled.
        delay = LENGTH[kind] * cadence[event.stream_id] if kind == "dropout" else 0.0
        return any(
            -tolerance <= at - t <= tolerance + delay
            for t in background[event.stream_id, event.kind.slug]
        )

    def on_fault(fault: Fault, event: Event) -> bool:
        if kind == "dropout":
            return device_of[event.stream_id] == fault.device
        return event.stream_id == fault.stream_id

    def reaches(fault: Fault, event: Event) -> bool:
        # A fault reaches its own stream (its station's, for a dropout) and the streams
        # compared with it: the same metric at the same site. Detection couples nothing else.
        return on_fault(fault, event) or group_of[event.stream_id] == group_of[fault.stream_id]

    def within(fault: Fault, event: Event, after: int) -> bool:
        ts = ts_of[fault.stream_id]
        last = min(fault.first + fault.length - 1 + after, ts.size - 1)
        return fault.start_us <= event.at.timestamp() * 1e6 <= int(ts[last])

    opened = [e for e in injected.events if e.opened]
    found: list[tuple[float, float] | None] = []
    for fault in faults:
        hits = [
            e
            for e in opened
            if e.kind.slug in describes and on_fault(fault, e) and within(fault, e, GRACE_READINGS)
        ]
        if not hits:
            found.append(None)
            continue
        at = min(e.at.timestamp() * 1e6 for e in hits)
        readings = int(np.searchsorted(ts_of[fault.stream_id], at)) - fault.first
        found.append(((at - fault.start_us) / 1e6, float(readings)))
    fault_kinds = {*FAULT_KINDS, "missing"} if kind == "dropout" else set(FAULT_KINDS)
    exact = {(e.stream_id, e.kind.slug, e.at) for e in clean.events if e.opened}
    added = right = moved = later = 0
    for event in opened:
        if (event.stream_id, event.kind.slug, event.at) in exact:
            continue
        if shifted(event):
            moved += 1
        elif not any(within(f, event, AFTERMATH_READINGS) and reaches(f, event) for f in faults):
            later += 1
        else:
            added += 1
            right += event.kind.slug in fault_kinds and any(
                on_fault(f, event) and within(f, event, AFTERMATH_READINGS) for f in faults
            )
    return Verdict(found, added, right, moved, later)


def injected_figures(
    all_cities: list[City], clean: dict[str, Run], args: argparse.Namespace,
    settings: DetectionSettings,
) -> dict[str, dict[str, object]]:  # fmt: skip
    """Figure 2: recall (also per city), precision and delay per injected kind."""
    table: dict[str, dict[str, object]] = {}
    for kind in LENGTH:
        rng = np.random.default_rng(args.seed + len(kind))
        found: list[tuple[float, float] | None] = []
        by_city: dict[str, float] = {}
        added = right = moved = later = 0
        for city in all_cities:
            share = args.faults if city.name == "beijing" else args.traffic_faults
            faults = plan(kind, city, share, args.learn_days, rng)
            faulty = inject(city, faults, rng)
            result = run(faulty, args.learn_days, settings)
            verdict = judge(kind, faults, result, clean[city.name], faulty)
            found += verdict.found
            by_city[city.name] = sum(f is not None for f in verdict.found) / len(verdict.found)
            added += verdict.added
            right += verdict.right
            moved += verdict.shifted
            later += verdict.later
        hits = [f for f in found if f is not None]
        table[kind] = {
            "injected": len(found),
            "recall": len(hits) / len(found),
            "recall_by_city": by_city,
            "precision": right / added if added else 1.0,
            "median_delay_s": statistics.median(h[0] for h in hits) if hits else float("nan"),
            "median_delay_readings": statistics.median(h[1] for h in hits)
            if hits
            else float("nan"),
            "alerts_added": added,
            "alerts_shifted": moved,
            "alerts_later": later,
        }
    return table


def markdown(result: dict[str, object], args: argparse.Namespace) -> str:
    """The tables for people (and for docs/detection-quality.md)."""
    real = result["real"]
    assert isinstance(real, dict)
    lines = [
        "## Real city data",
        "",
        "Printed by `python benchmarks/detection_real.py --markdown docs/detection-quality.md`"
        f" ({args.days or 'all'} days of each dataset, first {args.learn_days:g} for learning;"
        f" {args.faults} faults per kind in the air stations and {args.traffic_faults} in the"
        " traffic counter). The method is in the benchmark's docstring.",
        "",
        f"Untouched data: **{real['fault_alerts_per_sensor_week']:.3f}** sensor-fault alerts per"
        f" stream-week over {real['sensor_weeks']:.0f} stream-weeks; all alerts opened:"
        f" {real['alerts']}.",
        "",
        "| injected fault | faults | recall | (air / traffic) | precision | median delay (s) |"
        " (readings) | alerts added | moved | later |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    injected = result["injected"]
    assert isinstance(injected, dict)
    for kind, row in injected.items():
        lines.append(
            f"| {kind} | {row['injected']} | {row['recall']:.2f} |"
            f" {' / '.join(f'{v:.2f}' for v in row['recall_by_city'].values())} |"
            f" {row['precision']:.2f} |"
            f" {row['median_delay_s']:.0f} | {row['median_delay_readings']:.0f} |"
            f" {row['alerts_added']} | {row['alerts_shifted']} | {row['alerts_later']} |"
        )
    lines += ["", "| metric | score > 0.5 | score > 0.9 |", "|---|---:|---:|"]
    by_metric = real["by_metric"]
    assert isinstance(by_metric, dict)
    for metric, shares in sorted(by_metric.items()):
        lines.append(
            f"| {metric} | {100 * shares['above_0_5']:.3f} % | {100 * shares['above_0_9']:.3f} % |"
        )
    lines.append(
        f"| all | {100 * float(result['score_above_0_5']):.3f} % |"  # type: ignore[arg-type]
        f" {100 * float(result['score_above_0_9']):.3f} % |"  # type: ignore[arg-type]
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--days", type=float, default=None, help="cut each dataset (all by default)"
    )
    parser.add_argument("--learn-days", type=float, default=14.0)
    parser.add_argument("--faults", type=int, default=36, help="per kind, in the air stations")
    parser.add_argument("--traffic-faults", type=int, default=12, help="per kind, in the counter")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--settings", default="{}", help="detection settings to change, as JSON")
    parser.add_argument("--skip-injected", action="store_true", help="untouched data only")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--markdown", type=Path, help="also append the tables to this file")
    args = parser.parse_args()

    started = time.perf_counter()
    settings = replace(DetectionSettings(), **json.loads(args.settings))
    all_cities = cities(args.days)
    clean = {city.name: run(city, args.learn_days, settings) for city in all_cities}
    real = untouched(clean, all_cities)
    injected = {} if args.skip_injected else injected_figures(all_cities, clean, args, settings)
    result: dict[str, object] = {
        "real": real,
        "injected": injected,
        "score_above_0_5": real["score_above_0_5"],
        "score_above_0_9": real["score_above_0_9"],
        "seconds": time.perf_counter() - started,
    }
    if args.markdown:
        with args.markdown.open("a", encoding="utf-8") as out:
            out.write("\n" + markdown(result, args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(markdown(result, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
