"""A week of the demo city before its first minute: history, learned detectors, past alerts.

On a new data directory the demo writes seven days of its simulated fleet (the same devices
and sensors the live simulator runs, with labelled faults) through ingest's own writer: the
readings, their minutes marked for the rollups, and detection's feed, in one transaction per
hour of data. Ingest then rolls them up and its detectors learn from them and open and resolve
the week's alerts at the times they happened, exactly as for live data. A demo operator has
worked through some of those alerts (:func:`work_alerts`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

from dashboard import accounts, alert_actions
from edge.faults import FaultySensor, write_labels
from edge.fleet import DeviceSpec, plan_fleet_faults
from edge.sensors.simulated import simulated_sensors
from edge.timestamps import to_us
from ingest.columns import Columns
from ingest.writer import LiveState, PostgresStore, WriteBatch, prepare_connection
from processing.alerts import AlertError
from processing.feed import PartitionMap

DAYS = 7.0
INTERVAL_S = 60.0  # a reading a minute: the week's shape, in a fraction of the live volume
FAULTS_PER_DEVICE_HOUR = 0.01  # about a hundred faults over the week of a 60-device city
OPERATOR = "demo-operator"


@dataclass(frozen=True, slots=True)
class Backfilled:
    """What the backfill wrote."""

    readings: int
    faults: int
    seconds: float


def backfill(
    dsn: str,
    specs: Sequence[DeviceSpec],
    *,
    end: datetime,
    days: float = DAYS,
    interval_s: float = INTERVAL_S,
    seed: int = 1,
    labels: Path | None = None,
    progress: Callable[[float], None] = lambda _: None,
) -> Backfilled:
    """Write ``days`` of the fleet's readings up to ``end`` through ingest's writer.

    ``progress`` is called with the share done (0 to 1) after each hour of data. Readings
    already stored (a backfill interrupted and run again) are recognised and not stored twice.
    """
    return asyncio.run(_backfill(dsn, specs, end, days, interval_s, seed, labels, progress))


async def _backfill(  # noqa: PLR0917  # the arguments of backfill(), passed on
    dsn: str,
    specs: Sequence[DeviceSpec],
    end: datetime,
    days: float,
    interval_s: float,
    seed: int,
    labels: Path | None,
    progress: Callable[[float], None],
) -> Backfilled:
    started = time.monotonic()
    start = end - timedelta(days=days)
    faults = plan_fleet_faults(
        specs, start, end - start, per_device_per_hour=FAULTS_PER_DEVICE_HOUR, seed=seed
    )
    if labels is not None:
        write_labels(labels, faults)
    devices = []
    for spec in specs:
        own = [f for f in faults if f.device == spec.device]
        sensors = [FaultySensor(s, own) if own else s
                   for s in simulated_sensors(spec.family, seed=spec.seed)]  # fmt: skip
        away = [f for f in own if f.kind == "offline"]
        devices.append((spec, sensors, away))
    partitions = PartitionMap()
    streams: dict[tuple[str, str, str], int] = {}
    written = 0
    steps = int((end - start).total_seconds() // interval_s)
    per_hour = max(1, int(3600 // interval_s))
    async with AsyncConnectionPool(
        dsn, min_size=1, max_size=2, configure=prepare_connection, open=False
    ) as pool:
        store = PostgresStore(pool, timeout_s=30.0)
        newest: Columns | None = None
        for first in range(0, steps, per_hour):
            columns = Columns()
            for step in range(first, min(first + per_hour, steps)):
                at = start + timedelta(seconds=(step + 1) * interval_s)
                ts_us = to_us(at)
                for spec, sensors, away in devices:
                    if any(f.active(at) for f in away):
                        continue  # an offline device sends nothing
                    for sensor in sensors:
                        for reading in sensor.read(at):
                            key = (spec.device, reading.sensor, reading.metric)
                            stream = streams.get(key)
                            if stream is None:
                                found = await store.streams({key: reading.unit})
                                stream = streams[key] = found[key]
                                partitions.assign([stream], spec.site)
                            columns.append(stream, ts_us, reading.value)
            if len(columns):
                ids = columns.arrays().stream_ids
                result = await store.write(WriteBatch(columns, partitions=partitions.of(ids)))
                written += result.inserted
                newest = columns
            progress(min(1.0, (first + per_hour) / steps))
        if newest is not None:  # the overview's latest values, until live ones replace them
            await store.flush_live(LiveState(readings=[newest.arrays()]))
    return Backfilled(written, len(faults), time.monotonic() - started)


def work_alerts(
    dsn: str,
    *,
    stop: Callable[[], bool],
    acknowledge: int = 3,
    resolve: int = 2,
    poll_s: float = 0.5,
    timeout_s: float = 300.0,
) -> tuple[int, int]:
    """Have the demo operator work through open alerts while detection judges the week.

    Acknowledges ``acknowledge`` alerts and resolves ``resolve`` others, each with a comment, as
    an operator on the Alerts page would; an alert the detectors resolve first is passed over.
    Returns (acknowledged, resolved) once done, stopped or out of time.
    """
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT 1 FROM users WHERE name = %s", (OPERATOR,)).fetchone() is None:
            accounts.create(conn, OPERATOR, "operator")
    acknowledged = resolved = 0
    deadline = time.monotonic() + timeout_s
    while acknowledged + resolved < acknowledge + resolve and time.monotonic() < deadline:
        if stop():
            break
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT alert_id, kind FROM alerts WHERE state = 'open' ORDER BY opened_at"
            ).fetchall()
        for alert_id, kind in rows:
            action: alert_actions.Action = (
                "acknowledge" if acknowledged < acknowledge else "resolve"
            )
            notes = _ACKNOWLEDGED if action == "acknowledge" else _RESOLVED
            try:
                alert_actions.act(dsn, action, int(alert_id), OPERATOR, notes.get(str(kind), _ANY))
            except AlertError:
                continue  # resolved by the detectors meanwhile
            acknowledged += action == "acknowledge"
            resolved += action == "resolve"
            if acknowledged + resolved >= acknowledge + resolve:
                break
        time.sleep(poll_s)
    return acknowledged, resolved


_ANY = "Looked at it with the field team."
_ACKNOWLEDGED = {
    "spike": "One odd reading; watching whether it comes back.",
    "stuck": "Technician booked to look at the sensor.",
    "level_shift": "Asked the field team to check the calibration.",
    "overflow": "Collection crew diverted.",
    "missing": "Device silent: checking its power and network.",
}
_RESOLVED = {
    "spike": "Single glitch, not repeated: closed.",
    "stuck": "Sensor reset on site; readings moving again.",
    "level_shift": "Recalibrated on site.",
    "overflow": "Bin emptied.",
    "missing": "Power restored; the device sent its backlog.",
}


def bar(share: float, width: int = 30) -> str:
    """A text progress bar.

    Examples:
        >>> bar(0.5, 10)
        '[#####.....]  50 %'
    """
    done = round(share * width)
    return f"[{'#' * done}{'.' * (width - done)}] {100 * share:3.0f} %"
