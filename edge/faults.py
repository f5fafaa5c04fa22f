"""Faults injected into simulated devices, with their ground truth.

The fleet simulator wraps each device's simulated sensors so that planned faults alter what they
report: a spike, a stuck value, a slow drift, a dropout, a bin overflowing, traffic congestion;
takes whole devices offline for a while, or unsynchronises their clocks (``clock``, never drawn
by :func:`plan_faults`: scripted only). Every fault is written to a labels file (JSON
lines) so detectors can be scored against the truth.

Examples:
    >>> from datetime import datetime, timezone
    >>> at = datetime(2026, 11, 23, 8, tzinfo=timezone.utc)
    >>> fault = Fault("aq-0001", "aq", "pm2_5", "spike", at, at, 8.0)
    >>> fault.to_json()["kind"]
    'spike'
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from edge.contract import Reading, format_ts
from edge.sensors.base import Sensor

FaultKind = Literal[
    "spike", "stuck", "drift", "dropout", "offline", "overflow", "congestion", "clock"
]

# Which faults make sense for which metric (offline applies to a whole device).
_TARGETS: dict[str, tuple[FaultKind, ...]] = {
    "pm2_5": ("spike", "stuck", "drift", "dropout"),
    "no2": ("spike", "stuck", "drift"),
    "temperature": ("stuck", "drift"),
    "fill_level": ("overflow", "stuck", "dropout"),
    "speed_mean": ("congestion", "stuck", "dropout"),
    "vehicle_count": ("spike",),
}
# A typical swing of each metric: spikes and drift are sized by it, so a spike on a quiet night
# road (zero vehicles) or a drift on a noisy sensor is still a fault someone would want found.
_SCALE: dict[str, float] = {
    "pm2_5": 6.0,
    "no2": 10.0,
    "temperature": 1.5,
    "vehicle_count": 8.0,
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault.

    Attributes:
        device: Device id.
        sensor: Sensor id (empty for ``offline`` and ``clock``).
        metric: Metric affected (empty for ``offline``, ``clock`` and ``dropout``, which hit
            the sensor or the device).
        kind: What happens.
        start: First affected acquisition time.
        end: Last affected acquisition time.
        magnitude: Spike factor (at least that many typical swings), drift in typical swings
            per hour, or unused.
    """

    device: str
    sensor: str
    metric: str
    kind: FaultKind
    start: datetime
    end: datetime
    magnitude: float = 0.0

    def active(self, at: datetime) -> bool:
        """Whether ``at`` falls inside the fault."""
        return self.start <= at <= self.end

    def to_json(self) -> dict[str, object]:
        """The label as written to the labels file."""
        return {
            "device": self.device,
            "sensor": self.sensor,
            "metric": self.metric,
            "kind": self.kind,
            "start": format_ts(self.start),
            "end": format_ts(self.end),
            "magnitude": self.magnitude,
        }


def write_labels(path: Path, faults: Iterable[Fault]) -> None:
    """Write the ground truth, one JSON object per line."""
    with open(path, "w", encoding="utf-8") as handle:
        for fault in faults:
            handle.write(json.dumps(fault.to_json()) + "\n")


def plan_faults(
    devices: Sequence[tuple[str, str, Sequence[str]]],
    start: datetime,
    duration: timedelta,
    *,
    per_device_per_hour: float = 0.5,
    seed: int = 1,
) -> list[Fault]:
    """Draw faults for ``devices`` (id, sensor, metrics) over ``duration`` from ``start``."""
    rng = random.Random(seed)
    hours = duration.total_seconds() / 3600
    faults: list[Fault] = []
    for device, sensor, metrics in devices:
        for _ in range(_poisson(rng, per_device_per_hour * hours)):
            at = start + duration * rng.random()
            if rng.random() < 0.1:
                span = timedelta(minutes=rng.uniform(2, 30))
                faults.append(Fault(device, "", "", "offline", at, at + span))
                continue
            candidates = [m for m in metrics if m in _TARGETS]
            if not candidates:
                continue
            metric = rng.choice(candidates)
            kind = rng.choice(_TARGETS[metric])
            minutes = {"spike": 1.0, "drift": rng.uniform(30, 180)}.get(kind, rng.uniform(5, 60))
            span = timedelta(minutes=minutes)
            magnitude = {"spike": rng.uniform(4, 10), "drift": rng.uniform(2, 10)}.get(kind, 0.0)
            faults.append(Fault(device, sensor, metric, kind, at, at + span, magnitude))
    faults.sort(key=lambda f: f.start)
    return faults


def _poisson(rng: random.Random, lam: float) -> int:
    count, total = 0, rng.expovariate(1.0) if lam > 0 else float("inf")
    while total < lam:
        count += 1
        total += rng.expovariate(1.0)
    return count


class FaultySensor:
    """A simulated sensor whose readings are altered while one of its faults is active."""

    def __init__(self, sensor: Sensor, faults: Sequence[Fault]) -> None:
        self.name = sensor.name
        self._sensor = sensor
        self._faults = [f for f in faults if f.sensor == sensor.name]
        self._stuck: dict[Fault, float] = {}
        self._last: dict[str, float] = {}

    def read(self, now: datetime) -> list[Reading]:
        """The healthy sensor's readings, with the active faults applied."""
        readings = self._sensor.read(now)
        active = [f for f in self._faults if f.active(now)]
        if any(f.kind == "dropout" for f in active):
            return []
        altered = [self._alter(r, [f for f in active if f.metric == r.metric]) for r in readings]
        if any(f.kind == "congestion" for f in active):
            altered = [
                replace(r, value=min(95.0, max(r.value, 80.0))) if r.metric == "occupancy" else r
                for r in altered
            ]
        for reading in readings:
            self._last[reading.metric] = reading.value
        return altered

    def _alter(self, reading: Reading, faults: list[Fault]) -> Reading:
        value = reading.value
        for fault in faults:
            scale = _SCALE.get(reading.metric, 1.0)
            if fault.kind == "spike":
                value = max(value * fault.magnitude, value + fault.magnitude * scale)
            elif fault.kind == "stuck":
                value = self._stuck.setdefault(fault, self._last.get(reading.metric, value))
            elif fault.kind == "drift":
                hours = (reading.ts - fault.start).total_seconds() / 3600
                value += fault.magnitude * scale * hours
            elif fault.kind == "overflow":
                minutes = (reading.ts - fault.start).total_seconds() / 60
                value = min(100.0, max(value, 85.0 + minutes))
            elif fault.kind == "congestion":
                value *= 0.3
        return replace(reading, value=round(value, 3))
