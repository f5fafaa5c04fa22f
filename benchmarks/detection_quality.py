"""Detection quality on the fleet simulator, scored against its labels file.

    python benchmarks/detection_quality.py            # tables for people
    python benchmarks/detection_quality.py --json     # one JSON object
    python benchmarks/detection_quality.py --markdown docs/detection-quality.md

A simulated city (``edge.fleet.plan_fleet``) runs in simulated time through the same
``DetectionStage`` ingest uses, with the missing-data and neighbour sweeps every simulated minute.

1. With faults (``plan_fleet_faults``, ground truth as written to the labels file, injected after
   the first day): for each fault kind, recall (a fault counts as found when an alert of a kind
   that describes it is open on that device, sensor and metric at some time between the fault's
   start and 15 minutes after its end: opened then, or already open, as for a bin that was truly
   full when its sensor also failed), the median delay from fault start to that alert (0 when it
   was already open), and precision (of the alerts whose kind is that fault's main symptom, the
   share that opened during an injected fault or its grace period, or that a real city event of
   the simulator explains: a bin truly over 85 % full).
2. Without faults: alerts per sensor per week that no real city event explains.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.faults import Fault, FaultySensor  # noqa: E402
from edge.fleet import plan_fleet, plan_fleet_faults  # noqa: E402
from edge.sensors.simulated import SimulatedWasteBin, simulated_sensors  # noqa: E402
from processing.hook import ReadingColumns  # noqa: E402
from processing.stage import DetectionStage  # noqa: E402
from processing.streams import StreamInfo  # noqa: E402

START = datetime(2026, 10, 5, tzinfo=UTC)  # a Monday
GRACE = timedelta(minutes=15)
LEARNING = timedelta(days=1)  # streams learn their daily pattern before faults are injected
DESCRIBES: dict[str, set[str]] = {
    "spike": {"spike", "level_shift"},
    "stuck": {"stuck"},
    "drift": {"level_shift", "spike", "neighbour"},
    "dropout": {"missing"},
    "offline": {"missing"},
    "overflow": {"overflow"},
    "congestion": {"congestion"},
}
SYMPTOM: dict[str, set[str]] = {
    "spike": {"spike"},
    "stuck": {"stuck"},
    "drift": {"level_shift", "neighbour"},
    "dropout": {"missing"},
    "offline": {"missing"},
    "overflow": {"overflow"},
    "congestion": {"congestion"},
}


@dataclass(slots=True)
class Opened:
    device: str
    sensor: str
    metric: str
    kind: str
    at: datetime
    explained_by_city: bool
    until: datetime | None = None  # when it resolved; None while open


def simulate(
    devices: int, days: float, cadence_s: int, faults_per_device_hour: float, seed: int
) -> tuple[list[Opened], list[Fault], int]:
    """Run the fleet through detection; returns the alerts opened, the labels and sensor count."""
    specs = plan_fleet(devices, seed=seed)
    duration = timedelta(days=days)
    faults = (
        plan_fleet_faults(
            specs,
            START + LEARNING,
            duration - LEARNING,
            per_device_per_hour=faults_per_device_hour,
            seed=seed,
        )
        if faults_per_device_hour > 0
        else []
    )
    by_device: dict[str, list[Fault]] = defaultdict(list)
    for fault in faults:
        by_device[fault.device].append(fault)
    stage = DetectionStage()
    ids: dict[tuple[str, str, str], int] = {}
    infos: list[StreamInfo] = []
    fleet = []
    bins: dict[str, SimulatedWasteBin] = {}
    for spec in specs:
        sensors = simulated_sensors(spec.family, seed=spec.seed)
        for sensor in sensors:
            if isinstance(sensor, SimulatedWasteBin):
                bins[spec.device] = sensor
        offline = [f for f in by_device[spec.device] if f.kind == "offline"]
        fleet.append((spec, [FaultySensor(s, by_device[spec.device]) for s in sensors], offline))
    steps = int(duration.total_seconds() // cadence_s)
    opened: list[Opened] = []
    still_open: dict[tuple[str, str, str, str], int] = {}
    last_sweep = START
    stream_key: dict[int, tuple[str, str, str]] = {}
    for step in range(steps):
        now = START + timedelta(seconds=step * cadence_s)
        sids: list[int] = []
        stamps: list[int] = []
        values: list[float] = []
        for spec, sensors, offline in fleet:
            if any(f.active(now) for f in offline):
                continue
            for sensor in sensors:
                for reading in sensor.read(now):
                    key = (spec.device, reading.sensor, reading.metric)
                    sid = ids.get(key)
                    if sid is None:
                        sid = ids[key] = len(ids)
                        stream_key[sid] = key
                        infos.append(
                            StreamInfo(
                                sid,
                                spec.device,
                                reading.sensor,
                                reading.metric,
                                "",
                                spec.family,
                                spec.site,
                            )
                        )
                        stage.describe([i for i in infos if i.device == spec.device])
                    sids.append(sid)
                    stamps.append(int(reading.ts.timestamp() * 1e6))
                    values.append(reading.value)
        stage.process(
            ReadingColumns(np.array(sids, np.int32), np.array(stamps, np.int64), np.array(values))
        )
        if now - last_sweep >= timedelta(seconds=60):
            stage.sweep(now, since=START)
            last_sweep = now
        for event in stage.drain():
            device, sensor, metric = stream_key[event.stream_id]
            key = (device, sensor, metric, event.kind.slug)
            if not event.opened:
                if key in still_open:
                    opened[still_open.pop(key)].until = event.at
                continue
            city = event.kind.slug == "overflow" and device in bins and bins[device].fill >= 85
            still_open[key] = len(opened)
            opened.append(Opened(device, sensor, metric, event.kind.slug, event.at, city))
    return opened, faults, len({(d, s) for d, s, _ in ids})


def _covers(fault: Fault, alert: Opened, *, already_open: bool = False) -> bool:
    """Whether ``alert`` is on the fault's stream and opened during it (or, with
    ``already_open``, was open at any time during it)."""
    if alert.device != fault.device or alert.at > fault.end + GRACE:
        return False
    if alert.at < fault.start and not (
        already_open and (alert.until is None or alert.until >= fault.start)
    ):
        return False
    if fault.sensor and alert.sensor != fault.sensor:
        return False
    if fault.kind == "congestion":
        return alert.metric in ("speed_mean", "occupancy")
    if fault.kind == "dropout":  # the whole sensor falls silent, whichever metric was drawn
        return True
    return not fault.metric or alert.metric == fault.metric


def score(opened: list[Opened], faults: list[Fault]) -> dict[str, dict[str, float]]:
    """Recall, precision and median delay per fault kind."""
    table: dict[str, dict[str, float]] = {}
    for kind in DESCRIBES:
        labels = [f for f in faults if f.kind == kind]
        delays = []
        for fault in labels:
            hits = [
                a
                for a in opened
                if a.kind in DESCRIBES[kind] and _covers(fault, a, already_open=True)
            ]
            if hits:
                first = min(a.at for a in hits)
                delays.append(max(0.0, (first - fault.start).total_seconds()))
        symptoms = [a for a in opened if a.kind in SYMPTOM[kind]]
        explained = [
            a for a in symptoms if a.explained_by_city or any(_covers(f, a) for f in faults)
        ]
        table[kind] = {
            "faults": len(labels),
            "recall": len(delays) / len(labels) if labels else float("nan"),
            "precision": len(explained) / len(symptoms) if symptoms else 1.0,
            "median_delay_s": statistics.median(delays) if delays else float("nan"),
            "alerts": len(symptoms),
        }
    return table


def markdown(result: dict[str, object], args: argparse.Namespace) -> str:
    faults = result["faults"]
    assert isinstance(faults, dict)
    lines = [
        "# Detection quality on the fleet simulator",
        "",
        "Printed by `python benchmarks/detection_quality.py --markdown docs/detection-quality.md`"
        f" ({args.devices} devices, {args.days} days at {args.cadence} s with"
        f" {args.rate} faults per device-hour; {args.clean_days} fault-free days at"
        f" {args.clean_cadence} s). How each figure is counted is in the benchmark's docstring.",
        "",
        "| fault kind | injected | recall | precision | median delay (s) | alerts of its kind |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, row in faults.items():
        lines.append(
            f"| {kind} | {row['faults']:.0f} | {row['recall']:.2f} | {row['precision']:.2f} |"
            f" {row['median_delay_s']:.0f} | {row['alerts']:.0f} |"
        )
    lines += [
        "",
        f"Fault-free data: **{result['false_alerts_per_sensor_week']:.2f}** unexplained alerts per"
        f" sensor per week ({result['clean_alerts']} alerts over {result['clean_sensor_weeks']:.1f}"
        " sensor-weeks; kinds: "
        f"{result['clean_alert_kinds']}).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=90)
    parser.add_argument("--days", type=float, default=4.0, help="the first is for learning")
    parser.add_argument("--cadence", type=int, default=30, help="seconds between readings")
    parser.add_argument("--rate", type=float, default=0.05, help="faults per device per hour")
    parser.add_argument("--clean-days", type=float, default=8.0, help="the first is for learning")
    parser.add_argument("--clean-cadence", type=int, default=60)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    started = time.perf_counter()
    opened, faults, _ = simulate(args.devices, args.days, args.cadence, args.rate, args.seed)
    table = score(opened, faults)
    clean, _, sensors = simulate(
        args.devices, args.clean_days, args.clean_cadence, 0.0, args.seed + 1
    )
    unexplained = [a for a in clean if not a.explained_by_city]
    clean_days = args.clean_days - LEARNING.days
    kinds: dict[str, int] = defaultdict(int)
    for alert in unexplained:
        kinds[alert.kind] += 1
    sensor_weeks = sensors * clean_days / 7
    result: dict[str, object] = {
        "faults": table,
        "false_alerts_per_sensor_week": len(unexplained) / sensor_weeks,
        "clean_alerts": len(unexplained),
        "clean_sensor_weeks": sensor_weeks,
        "clean_alert_kinds": dict(kinds),
        "seconds": time.perf_counter() - started,
    }
    if args.markdown:
        args.markdown.write_text(markdown(result, args), encoding="utf-8")
    if args.json:
        print(json.dumps(result))
        return 0
    print(markdown(result, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
