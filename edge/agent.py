"""The agent loop: sample, build batches, store them, publish them, forget them on PUBACK.

Everything runs on one thread (the caller's): :meth:`EdgeAgent.tick` does whatever is due and says
how long it may sleep. paho's network thread only queues acknowledgements for the tick to collect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edge import __version__
from edge.contract import Batch, Reading, StatusValue, encode_batch
from edge.outbox import Outbox
from edge.publisher import Publisher
from edge.sensors.base import Sensor, SensorError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
BatchObserver = Callable[[Batch], None]


def utc_now() -> datetime:
    """The wall clock in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """What the agent does and how often.

    Attributes:
        site: The device's site (a topic level).
        device: The device id.
        sample_interval_s: Seconds between two samples of every sensor.
        batch_interval_s: Seconds between two batches; a batch holds every sample since the last.
        max_batch_readings: A batch is closed early when it reaches this many readings.
        max_inflight: Batches published but not yet acknowledged, at most.
        status_interval_s: Seconds between two status messages while connected.
    """

    site: str
    device: str
    sample_interval_s: float = 10.0
    batch_interval_s: float = 10.0
    max_batch_readings: int = 500
    max_inflight: int = 10
    status_interval_s: float = 60.0


@dataclass(slots=True)
class AgentStats:
    """Counters for status messages, diagnostics and tests."""

    readings: int = 0
    batches: int = 0
    acked: int = 0
    sensor_faults: dict[str, int] = field(default_factory=dict)


class EdgeAgent:
    """One device: its sensors, its outbox and its MQTT session.

    Args:
        settings: Device identity and timings.
        sensors: The drivers to sample.
        publisher: The device's MQTT session.
        outbox: Where batches wait for their PUBACK.
        clock: Wall clock for reading timestamps (the fleet passes a simulated one).
        on_batch: Called with every batch as it is stored (the fleet's ground truth).
    """

    def __init__(
        self,
        settings: AgentSettings,
        sensors: Sequence[Sensor],
        publisher: Publisher,
        outbox: Outbox,
        *,
        clock: Clock = utc_now,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.settings = settings
        self._sensors = list(sensors)
        self.publisher = publisher
        self._outbox = outbox
        self._clock = clock
        self._on_batch = on_batch
        self._started = time.monotonic()
        self._next_sample = self._started
        self._next_batch = self._started + settings.batch_interval_s
        self._next_status = self._started
        self._pending: list[Reading] = []
        self._inflight: dict[int, int] = {}  # MQTT message id -> outbox entry id
        self._last_handed_out = 0
        self.stats = AgentStats()

    @property
    def backlog(self) -> int:
        """Batches stored and not yet acknowledged."""
        return self._outbox.depth()

    def status_fields(self) -> dict[str, StatusValue]:
        """The health figures published in the retained status message."""
        faults = sum(self.stats.sensor_faults.values())
        return {
            "software": __version__,
            "uptime_s": round(time.monotonic() - self._started),
            "backlog": self._outbox.depth(),
            "dropped": self._outbox.dropped(),
            "sensor_faults": faults,
            "readings": self.stats.readings,
        }

    def tick(self) -> float:
        """Do whatever is due now; returns the seconds until something is due again."""
        now = time.monotonic()
        if now >= self._next_sample:
            self._sample()
            self._next_sample += self.settings.sample_interval_s
            if self._next_sample < now:  # fell behind (suspended, overloaded): skip, don't burst
                self._next_sample = now + self.settings.sample_interval_s
        if now >= self._next_batch or len(self._pending) >= self.settings.max_batch_readings:
            self.flush()
            self._next_batch = now + self.settings.batch_interval_s
        if self.publisher.take_reconnect():
            # paho resends what was in flight; anything never handed to paho goes out below.
            self._next_status = now
        if self.publisher.connected and now >= self._next_status:
            self.publisher.publish_status(self.status_fields())
            self._next_status = now + self.settings.status_interval_s
        self.pump()
        return max(
            0.0, min(self._next_sample, self._next_batch, self._next_status) - time.monotonic()
        )

    def flush(self) -> None:
        """Close the open batch now, if it has readings, and store it."""
        limit = self.settings.max_batch_readings
        while self._pending:
            readings, self._pending = self._pending[:limit], self._pending[limit:]
            batch = Batch(
                self.settings.device, self._outbox.next_seq(), tuple(readings), self._clock()
            )
            self._outbox.put(encode_batch(batch))
            self.stats.batches += 1
            if self._on_batch is not None:
                self._on_batch(batch)

    def run(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """Run until ``stop`` is set, then flush, publish what it can and say goodbye."""
        self.publisher.start()
        try:
            while not stop.is_set():
                delay = self.tick()
                if wake is not None:
                    wake.wait(min(delay, 1.0))
                    wake.clear()
                else:
                    stop.wait(min(delay, 1.0))
        finally:
            self.close()

    def close(self, drain_timeout_s: float = 5.0) -> None:
        """Store the open batch, give in-flight batches a moment to be acknowledged, disconnect."""
        self.flush()
        deadline = time.monotonic() + drain_timeout_s
        while self.publisher.connected and self._outbox.depth() and time.monotonic() < deadline:
            self.pump()
            time.sleep(0.05)
        self._collect_acks()
        self.publisher.stop(self.status_fields())

    def _sample(self) -> None:
        now = self._clock()
        for sensor in self._sensors:
            try:
                readings = sensor.read(now)
            except SensorError as exc:
                self._fault(sensor.name, exc)
                continue
            except Exception as exc:  # a driver bug must not stop the other sensors
                log.exception("%s sensor %s failed unexpectedly", self.settings.device, sensor.name)
                self._fault(sensor.name, exc)
                continue
            self._pending.extend(readings)
            self.stats.readings += len(readings)

    def _fault(self, sensor: str, exc: Exception) -> None:
        faults = self.stats.sensor_faults
        faults[sensor] = faults.get(sensor, 0) + 1
        log.warning("%s sensor %s: %s", self.settings.device, sensor, exc)

    def pump(self) -> None:
        """Forget acknowledged batches and hand stored ones to paho, within the in-flight window."""
        self._collect_acks()
        self._publish_stored()

    def _collect_acks(self) -> None:
        for mid in self.publisher.drain_acks():
            entry_id = self._inflight.pop(mid, None)
            if entry_id is not None:  # status messages are acknowledged too; they are not stored
                self._outbox.ack(entry_id)
                self.stats.acked += 1

    def _publish_stored(self) -> None:
        room = self.settings.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for entry in self._outbox.after(self._last_handed_out, room):
            mid = self.publisher.publish_telemetry(entry.payload)
            if mid is None:
                return
            self._inflight[mid] = entry.id
            self._last_handed_out = entry.id
