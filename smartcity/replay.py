"""``smartcity replay``: recorded city telemetry published through MQTT as devices, at a speed-up.

Each recorded station or counter becomes a device under contract v1, publishing its readings
with QoS 1 on its own MQTT session, so the control room, the history and the alerts show a real
city through the whole platform. Sources: the shared real datasets (``beijing``, ``metro``) or any
CSV given a column mapping.

Time: readings are moved forward by whole weeks, so the replayed span ends within the week before
the replay starts (hours of day and weekdays stay what they were, and ingest's ``max_past_s``
accepts them). Every step of the data is published, and acknowledged by the broker, before the
next, so ingest receives the city in time order; run ingest with ``detection_clock =
"readings"`` so its time-driven checks follow the readings, not the wall clock.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from edge.contract import MAX_READINGS_PER_BATCH, Batch, Reading, encode_batch
from edge.metrics import FAMILIES, METRICS, Family
from edge.netloop import NetworkLoop
from edge.publisher import BrokerSettings, Publisher
from ingest.registry import DeviceRecord
from processing.streams import StreamInfo
from smartcity.datasets import RealSeries
from smartcity.errors import CommandError

log = logging.getLogger("smartcity.replay")

WEEK_US = 7 * 86_400 * 1_000_000


class ReplayError(CommandError, ValueError):
    """The replay cannot start or cannot go on: a bad source, mapping or broker."""


@dataclass(frozen=True, slots=True)
class Timeline:
    """Every reading to publish, in time order, already moved to the replay's weeks.

    Attributes:
        streams: What each stream is (device, sensor, metric, family, site).
        stream: Index into ``streams`` of each reading.
        ts_us: Acquisition time after the shift, UTC microseconds.
        values: The values (finite).
        shift_us: How far the readings were moved forward.
    """

    streams: tuple[StreamInfo, ...]
    stream: NDArray[np.int64]
    ts_us: NDArray[np.int64]
    values: NDArray[np.float64]
    shift_us: int

    def __len__(self) -> int:
        return int(self.values.size)

    def devices(self) -> list[DeviceRecord]:
        """The devices to register, one per device id."""
        seen: dict[str, DeviceRecord] = {}
        for info in self.streams:
            if info.device not in seen:
                family = cast(Family, info.family)  # checked by timeline()
                seen[info.device] = DeviceRecord(info.device, info.site, family, info.device)
        return list(seen.values())


def timeline(
    series: Sequence[RealSeries],
    *,
    start: datetime | None = None,
    days: float | None = None,
    now: datetime | None = None,
) -> Timeline:
    """The readings of ``series`` from ``start`` for ``days``, in time order, shifted by weeks.

    Missing values (NaN) are left out: a device does not send what it did not measure.

    Raises:
        ReplayError: No reading falls in the chosen span, or a metric is not in contract v1.
    """
    for item in series:
        if item.info.metric not in METRICS:
            raise ReplayError(f"metric {item.info.metric!r} is not in contract v1")
        if item.info.family not in FAMILIES:
            raise ReplayError(f"family {item.info.family!r} is not one of {FAMILIES}")
    parts = []
    for index, item in enumerate(series):
        keep = np.isfinite(item.values)
        parts.append((np.full(int(keep.sum()), index), item.ts_us[keep], item.values[keep]))
    stream = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    ts_us = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    values = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    lo = int(ts_us.min()) if ts_us.size else 0
    if start is not None:
        lo = int(start.timestamp() * 1e6)
    hi = lo + int(days * 86_400e6) if days is not None else None
    pick = ts_us >= lo
    if hi is not None:
        pick &= ts_us < hi
    if not pick.any():
        raise ReplayError("no readings in the chosen span")
    order = np.lexsort((stream[pick], ts_us[pick]))
    ts_us = ts_us[pick][order]
    moment = int((now or datetime.now(UTC)).timestamp() * 1e6)
    shift = max(0, (moment - int(ts_us[-1])) // WEEK_US) * WEEK_US
    return Timeline(
        tuple(s.info for s in series),
        stream[pick][order].astype(np.int64),
        ts_us + shift,
        values[pick][order],
        shift,
    )


def csv_series(
    path: Path,
    *,
    time_column: str,
    device_column: str | None,
    device: str | None,
    metrics: dict[str, str],
    site: str,
    family: str,
    timezone: str = "UTC",
    sensor: str = "replay",
) -> list[RealSeries]:
    """Streams from a CSV: one row per time (and device), one column per metric.

    Args:
        path: The file (``.csv`` or compressed, as pandas reads it).
        time_column: Column of acquisition times; times without an offset are in ``timezone``.
        device_column: Column naming each row's device; or None, with ``device`` for all rows.
        device: The one device, when there is no device column.
        metrics: Source column -> metric (contract v1 name).
        site: The devices' site (district).
        family: ``air``, ``traffic`` or ``waste``.
        timezone: IANA zone of times written without an offset.
        sensor: The sensor name the readings are published under.

    Raises:
        ReplayError: A column is missing or the times cannot be read.
    """
    if (device_column is None) == (device is None):
        raise ReplayError("give either a device column or one device name")
    for metric in metrics.values():
        if metric not in METRICS:
            raise ReplayError(f"metric {metric!r} is not in contract v1")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ReplayError(f"cannot read {path}: {exc}") from exc
    wanted = [time_column, *metrics, *([device_column] if device_column else [])]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ReplayError(f"{path} has no column {', '.join(map(repr, missing))}")
    try:
        times = pd.to_datetime(frame[time_column], format="mixed")
    except (ValueError, TypeError) as exc:
        raise ReplayError(f"cannot read the times in {time_column!r}: {exc}") from exc
    if times.dt.tz is None:
        times = times.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    placed = times.notna().to_numpy()
    utc = times[placed].dt.tz_convert("UTC").dt.tz_localize(None)
    ts_us = utc.to_numpy(dtype="datetime64[us]").astype(np.int64)
    frame = frame[placed]
    names = frame[device_column].astype(str).to_numpy() if device_column else None
    found: list[RealSeries] = []
    for name in sorted(set(names)) if names is not None else [str(device)]:
        rows = names == name if names is not None else np.ones(len(frame), bool)
        for column, metric in metrics.items():
            values = pd.to_numeric(frame[column][rows], errors="coerce").to_numpy(np.float64)
            info = StreamInfo(
                len(found) + 1, name, sensor, metric, METRICS[metric].unit, family, site
            )
            order = np.argsort(ts_us[rows], kind="stable")
            found.append(RealSeries(info, ts_us[rows][order], values[order]))
    return found


@dataclass
class Progress:
    """How far a replay got."""

    readings: int = 0
    messages: int = 0
    acknowledged: int = 0


class Replayer:
    """Devices publishing a :class:`Timeline` at ``speed`` times real time.

    Args:
        line: What to publish.
        broker: Where (credentials of an account allowed to publish for these devices).
        speed: Seconds of data per second of replay; ``inf`` publishes as fast as acknowledged.
        ack_timeout_s: Longest wait for the broker to acknowledge one step.
    """

    def __init__(
        self,
        line: Timeline,
        broker: BrokerSettings,
        *,
        speed: float,
        ack_timeout_s: float = 30.0,
    ) -> None:
        if not speed > 0:
            raise ReplayError("speed must be positive")
        self.line = line
        self.speed = speed
        self.ack_timeout_s = ack_timeout_s
        self.progress = Progress()
        self._wake = threading.Event()
        self._loop = NetworkLoop(name="replay-mqtt")
        devices = {info.device: info.site for info in line.streams}
        self._publishers = {
            device: Publisher(
                site=site, device=device, broker=broker, loop=self._loop, wake=self._wake
            )
            for device, site in devices.items()
        }
        # Sequence numbers keep rising from one replay to the next, as a device's would.
        self._seq = int(time.time() * 1000)

    def run(self, stop: threading.Event, connect_timeout_s: float = 30.0) -> Progress:
        """Publish everything (or until ``stop``), step by step; returns how far it got.

        Raises:
            ReplayError: The devices could not connect, or the broker stopped acknowledging.
        """
        for publisher in self._publishers.values():
            publisher.start()
        try:
            deadline = time.monotonic() + connect_timeout_s
            for device, publisher in self._publishers.items():
                if not publisher.wait_connected(max(0.0, deadline - time.monotonic())):
                    raise ReplayError(f"{device} could not connect: {publisher.last_refusal}")
                publisher.publish_status({})
            self._publish_steps(stop)
        finally:
            for publisher in self._publishers.values():
                publisher.stop()
            self._loop.stop()
        return self.progress

    def _publish_steps(self, stop: threading.Event) -> None:
        line = self.line
        if len(line) == 0:
            return
        cuts = np.flatnonzero(np.diff(line.ts_us)) + 1
        started = time.monotonic()
        first = int(line.ts_us[0])
        for lo, hi in itertools.pairwise([0, *cuts.tolist(), len(line)]):
            due = started + (int(line.ts_us[lo]) - first) / 1e6 / self.speed
            if stop.wait(max(0.0, due - time.monotonic())):
                return
            self._publish_step(range(lo, hi))

    def _publish_step(self, indices: Iterable[int]) -> None:
        line = self.line
        by_device: dict[str, list[Reading]] = {}
        for i in indices:
            info = line.streams[int(line.stream[i])]
            ts = datetime.fromtimestamp(int(line.ts_us[i]) / 1e6, UTC)
            unit = METRICS[info.metric].unit
            reading = Reading(info.sensor, info.metric, float(line.values[i]), unit, ts)
            by_device.setdefault(info.device, []).append(reading)
        waiting: dict[str, set[int]] = {}
        for device, readings in by_device.items():
            for lo in range(0, len(readings), MAX_READINGS_PER_BATCH):
                chunk = tuple(readings[lo : lo + MAX_READINGS_PER_BATCH])
                self._seq += 1
                batch = Batch(device, self._seq, chunk, datetime.now(UTC))
                mid = self._publishers[device].publish_telemetry(encode_batch(batch))
                if mid is None:
                    raise ReplayError(f"{device}: the MQTT client refused a message")
                waiting.setdefault(device, set()).add(mid)
                self.progress.messages += 1
                self.progress.readings += len(chunk)
        self._await_acks(waiting)

    def _await_acks(self, waiting: dict[str, set[int]]) -> None:
        deadline = time.monotonic() + self.ack_timeout_s
        while any(waiting.values()):
            for device, mids in waiting.items():
                for mid in self._publishers[device].drain_acks():
                    if mid in mids:
                        mids.discard(mid)
                        self.progress.acknowledged += 1
            if not any(waiting.values()):
                return
            if time.monotonic() > deadline:
                raise ReplayError(f"the broker did not acknowledge within {self.ack_timeout_s} s")
            self._wake.wait(0.05)
            self._wake.clear()
