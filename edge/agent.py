"""The agent loop: sample, build batches, spool them, publish them, forget them on PUBACK.

Everything runs on one thread (the caller's): :meth:`EdgeAgent.tick` does whatever is due and
says how long it may sleep. The network thread only queues acknowledgements, connections and
remote configuration for the tick to collect.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from edge import __version__
from edge.backoff import Backoff
from edge.clock import Clock
from edge.contract import Batch, Reading, StatusValue, encode_batch
from edge.errors import ConfigError
from edge.outbox import Outbox
from edge.publisher import Publisher
from edge.remote import RemoteConfig, parse_remote
from edge.sensors.base import DutyCycled, Sensor, SensorError

log = logging.getLogger(__name__)

BatchObserver = Callable[[Batch], None]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """What the agent does and how often.

    Attributes:
        site: The device's site (a topic level).
        device: The device id.
        sample_interval_s: Seconds between two samples of a sensor, unless its own is set.
        batch_interval_s: Seconds between two batches; a batch holds every sample since the last.
        max_batch_readings: A batch is closed early when it reaches this many readings.
        max_inflight: Batches published but not yet acknowledged, at most.
        status_interval_s: Seconds between two status messages while nothing changes.
        drain_readings_per_s: Publishing rate limit for a backlog (0: as fast as acknowledged),
            to spare a metered or thin link after an outage.
        sensor_intervals: Per-sensor sampling intervals, by sensor name.
    """

    site: str
    device: str
    sample_interval_s: float = 10.0
    batch_interval_s: float = 10.0
    max_batch_readings: int = 500
    max_inflight: int = 10
    status_interval_s: float = 60.0
    drain_readings_per_s: float = 0.0
    sensor_intervals: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class SensorState:
    """One sensor's schedule and health."""

    sensor: Sensor
    interval_s: float
    enabled: bool = True
    next_due: float = 0.0
    failures: int = 0  # consecutive
    faults: int = 0  # over the agent's life
    last_error: str = ""
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=2.0, maximum=300.0))
    asleep: bool = False

    @property
    def healthy(self) -> bool:
        """Whether the last attempt succeeded."""
        return self.failures == 0

    @property
    def warmup_s(self) -> float:
        """Seconds the sensor must be awake before a sample, if it sleeps in between; else 0."""
        if not isinstance(self.sensor, DutyCycled) or self.sensor.warmup_s <= 0:
            return 0.0
        # Sleeping only pays off when the sensor would otherwise idle for longer than it warms.
        return self.sensor.warmup_s if self.interval_s > 2 * self.sensor.warmup_s else 0.0


@dataclass(slots=True)
class AgentStats:
    """Counters for status messages, diagnostics and tests."""

    readings: int = 0
    batches: int = 0
    acked: int = 0
    held: int = 0  # readings waiting for a sane clock


class EdgeAgent:
    """One device: its sensors, its spool and its MQTT session.

    Args:
        settings: Device identity and timings.
        sensors: The drivers to sample.
        publisher: The device's MQTT session.
        outbox: Where batches wait for their PUBACK (the on-disk spool on a device).
        clock: Wall clock with sanity checks.
        on_batch: Called with every batch as it is stored (the fleet's ground truth).
    """

    def __init__(
        self,
        settings: AgentSettings,
        sensors: Sequence[Sensor],
        publisher: Publisher,
        outbox: Outbox,
        *,
        clock: Clock | None = None,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self._outbox = outbox
        self._clock = clock or Clock()
        self._on_batch = on_batch
        self._started = time.monotonic()
        self.sensors = {
            s.name: SensorState(
                s,
                settings.sensor_intervals.get(s.name, settings.sample_interval_s),
                # Spread first samples over a second so sensors do not all fire at once.
                next_due=self._started
                + random.uniform(0, 1) * min(1.0, settings.sample_interval_s),  # noqa: S311
            )
            for s in sensors
        }
        self._batch_interval_s = settings.batch_interval_s
        self._next_batch = self._started + settings.batch_interval_s
        self._next_status = self._started
        self._pending: list[Reading] = []
        self._pending_synced = True
        self._held: list[
            tuple[float, list[Reading]]
        ] = []  # (monotonic, readings) on an insane clock
        self._inflight: dict[int, int] = {}  # MQTT message id -> outbox entry id
        self._last_handed_out = 0
        self._tokens = 0.0
        self._tokens_at = self._started
        self._last_status: dict[str, StatusValue] = {}
        self.config_version: str | None = None
        self.config_error: str | None = None
        self.stats = AgentStats()

    @property
    def backlog(self) -> int:
        """Batches stored and not yet acknowledged."""
        return self._outbox.depth()

    def status_fields(self) -> dict[str, StatusValue]:
        """The health figures published in the retained status message."""
        failing = [
            f"{name}: {state.last_error}"[:80]
            for name, state in self.sensors.items()
            if state.enabled and not state.healthy
        ]
        fields: dict[str, StatusValue] = {
            "software": __version__,
            "uptime_s": round(time.monotonic() - self._started),
            "backlog": self._outbox.depth(),
            "dropped": self._outbox.dropped(),
            "clock_synced": self._clock.synchronised(),
            "sensors_ok": sum(1 for s in self.sensors.values() if s.enabled and s.healthy),
            "sensors_failing": "; ".join(failing) or None,
            "sensor_faults": sum(s.faults for s in self.sensors.values()),
            "readings": self.stats.readings,
            "held_readings": self.stats.held,
            "config_version": self.config_version,
            "config_error": self.config_error,
        }
        recovered = getattr(self._outbox, "recovered", None)
        if recovered:
            fields["spool_set_aside"] = ", ".join(recovered)
        return fields

    # the loop -------------------------------------------------------------------------------

    def tick(self) -> float:
        """Do whatever is due now; returns the seconds until something is due again."""
        now = time.monotonic()
        self._apply_remote_configs()
        self._sample_due(now)
        if now >= self._next_batch or len(self._pending) >= self.settings.max_batch_readings:
            self.flush()
            self._next_batch = now + self._batch_interval_s
        if self.publisher.take_reconnect():
            self._next_status = now  # announce ourselves on every (re)connection
        if self.publisher.connected:
            fields = self.status_fields()
            if now >= self._next_status or _changed(self._last_status, fields):
                self.publisher.publish_status(fields)
                self._last_status = fields
                self._next_status = now + self.settings.status_interval_s
        self.pump()
        due = [self._next_batch]
        if self.publisher.connected:  # offline, the status waits for the (re)connection's wake-up
            due.append(self._next_status)
        due.extend(
            s.next_due - (s.warmup_s if s.asleep else 0.0)
            for s in self.sensors.values()
            if s.enabled
        )
        return max(0.0, min(due) - time.monotonic())

    def flush(self) -> None:
        """Close the open batch now, if it has readings, and store it."""
        self._release_held()
        limit = self.settings.max_batch_readings
        while self._pending:
            readings, self._pending = self._pending[:limit], self._pending[limit:]
            seq = self._outbox.next_seq()
            batch = Batch(
                self.settings.device, seq, tuple(readings), self._sent_at(), self._pending_synced
            )
            self._outbox.put(seq, encode_batch(batch), readings=len(readings))
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
        self._outbox.flush()
        self.publisher.stop(self.status_fields())

    def pump(self) -> None:
        """Forget acknowledged batches and hand stored ones to paho, within the window and rate."""
        self._collect_acks()
        self._publish_stored()

    # sampling -------------------------------------------------------------------------------

    def _sample_due(self, now: float) -> None:
        for state in self.sensors.values():
            if not state.enabled:
                continue
            if state.asleep and now >= state.next_due - state.warmup_s:
                self._duty(state, wake=True)
            if now < state.next_due:
                continue
            if not self._sample(state, now):
                # Retry sooner than the schedule would, but back off from a sensor that stays down.
                state.next_due = now + min(state.interval_s, max(state.backoff.next_delay(), 0.5))
                continue
            state.next_due += state.interval_s
            if state.next_due < now:  # fell behind (suspended, overloaded): skip, don't burst
                state.next_due = now + state.interval_s
            if state.warmup_s:
                self._duty(state, wake=False)

    def _duty(self, state: SensorState, *, wake: bool) -> None:
        sensor = state.sensor
        if not isinstance(sensor, DutyCycled):
            return
        try:
            sensor.wake() if wake else sensor.sleep()
        except SensorError as exc:  # the next read will tell whether it matters
            log.warning("%s sensor %s: %s", self.settings.device, sensor.name, exc)
        state.asleep = not wake

    def _sample(self, state: SensorState, now: float) -> bool:
        wall = self._clock.now()
        try:
            readings = state.sensor.read(wall)
        except SensorError as exc:
            self._fault(state, exc)
            return False
        except Exception as exc:  # a driver bug must not stop the other sensors
            log.exception(
                "%s sensor %s failed unexpectedly", self.settings.device, state.sensor.name
            )
            self._fault(state, exc)
            return False
        if state.failures:
            log.info("%s sensor %s is back", self.settings.device, state.sensor.name)
        state.failures = 0
        state.backoff.reset()
        state.last_error = ""
        self.stats.readings += len(readings)
        if not self._clock.sane(wall):
            # Stamped before this software existed: hold until the clock is set, then re-stamp.
            self._held.append((now, readings))
            self.stats.held += len(readings)
            return True
        self._release_held()  # older readings first, so sequence order stays time order
        synced = self._clock.synchronised()
        if synced != self._pending_synced and self._pending:
            self.flush()  # a batch carries one clock state
        self._pending_synced = synced
        self._pending.extend(readings)
        return True

    def _fault(self, state: SensorState, exc: Exception) -> None:
        state.failures += 1
        state.faults += 1
        state.last_error = str(exc) or type(exc).__name__
        log.warning("%s sensor %s: %s", self.settings.device, state.sensor.name, state.last_error)

    def _release_held(self) -> None:
        if not self._held or not self._clock.sane():
            return
        wall, mono = self._clock.now(), time.monotonic()
        restamped = [
            replace(reading, ts=wall - timedelta(seconds=mono - taken))
            for taken, readings in self._held
            for reading in readings
        ]
        log.info("clock is set: re-stamped %d held readings", len(restamped))
        self._held.clear()
        self.stats.held = 0
        if self._pending and self._pending_synced:
            self.flush()
        self._pending_synced = False  # derived from the monotonic clock, not from a time source
        self._pending = restamped + self._pending

    def _sent_at(self) -> datetime:
        return self._clock.now() if self._clock.sane() else self._clock.built

    # remote configuration -------------------------------------------------------------------

    def _apply_remote_configs(self) -> None:
        for payload in self.publisher.drain_configs():
            if not payload:
                continue  # a cleared retained message
            try:
                remote = parse_remote(payload, self.sensors)
            except ConfigError as exc:
                self.config_error = str(exc)[:200]
                log.warning("%s refused a remote config: %s", self.settings.device, exc)
                continue
            if remote.version == self.config_version:
                continue
            self._apply(remote)

    def _apply(self, remote: RemoteConfig) -> None:
        now = time.monotonic()
        if remote.batch_interval_s is not None:
            self._batch_interval_s = remote.batch_interval_s
            self._next_batch = min(self._next_batch, now + remote.batch_interval_s)
        for name, override in remote.sensors.items():
            state = self.sensors[name]
            if override.enabled is not None:
                state.enabled = override.enabled
            if override.interval_s is not None:
                state.interval_s = override.interval_s
                state.next_due = min(state.next_due, now + override.interval_s)
        self.config_version = remote.version
        self.config_error = None
        log.info("%s applied remote config %s", self.settings.device, remote.version)

    # publishing -----------------------------------------------------------------------------

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
        rate = self.settings.drain_readings_per_s
        if rate > 0:
            now = time.monotonic()
            self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
        for entry in self._outbox.after(self._last_handed_out, room):
            if rate > 0:
                if self._tokens < min(entry.readings, rate):
                    return
                self._tokens -= entry.readings
            mid = self.publisher.publish_telemetry(entry.payload)
            if mid is None:
                return
            self._inflight[mid] = entry.id
            self._last_handed_out = entry.id


_VOLATILE = frozenset({"uptime_s", "readings", "backlog", "held_readings"})


def _changed(before: dict[str, StatusValue], after: dict[str, StatusValue]) -> bool:
    """Whether anything worth telling happened (counters that always move do not count)."""
    return any(after.get(k) != before.get(k) for k in after.keys() - _VOLATILE)
