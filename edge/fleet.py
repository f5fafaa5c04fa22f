"""Many simulated devices in one process: the demo's city and the tests' ground truth.

:func:`plan_fleet` lays out a deterministic city (devices, families, districts, positions) from a
count and a seed, so the server side can register exactly the devices the simulator will run.
:class:`Fleet` runs them: one MQTT session per device, as real devices have, and one scheduler
thread ticking every agent.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.agent import AgentSettings, EdgeAgent
from edge.clock import Clock
from edge.contract import Batch
from edge.faults import Fault, FaultySensor, plan_faults, write_labels
from edge.metrics import FAMILIES, Family
from edge.netloop import NetworkLoop
from edge.outbox import MemoryOutbox
from edge.publisher import BrokerSettings, Publisher
from edge.sensors.simulated import simulated_sensors

log = logging.getLogger(__name__)

ReadingKey = tuple[str, str, str, str]  # device, sensor, metric, ISO timestamp


@dataclass(frozen=True, slots=True)
class District:
    """A named part of the city: its id (a topic-safe site name), label and centre."""

    id: str
    name: str
    lat: float
    lon: float


# A compact demo city: six districts around a centre at 53.80 N, 1.55 W.
DEMO_DISTRICTS: tuple[District, ...] = (
    District("centre", "City Centre", 53.7997, -1.5492),
    District("north", "Northfield", 53.8250, -1.5520),
    District("south", "Southbank", 53.7760, -1.5400),
    District("east", "Eastgate", 53.8020, -1.5050),
    District("west", "Westwood", 53.8010, -1.5950),
    District("harbour", "Harbourside", 53.7880, -1.5200),
)

_PREFIX: dict[Family, str] = {"traffic": "tr", "air": "aq", "waste": "wb"}
# The sensor and metrics each simulated family reports (see edge.sensors.simulated).
FAMILY_SENSOR: dict[Family, tuple[str, tuple[str, ...]]] = {
    "traffic": ("loop", ("vehicle_count", "speed_mean", "occupancy")),
    "air": ("aq", ("pm2_5", "pm10", "no2", "temperature", "humidity")),
    "waste": ("bin", ("fill_level", "temperature")),
}


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated device as the server side registers it."""

    device: str
    site: str
    family: Family
    lat: float
    lon: float
    seed: int

    @property
    def name(self) -> str:
        """A label for people."""
        return f"{self.family.title()} {self.device.split('-')[-1]} ({self.site})"


def plan_fleet(
    count: int, *, seed: int = 1, districts: Iterable[District] = DEMO_DISTRICTS
) -> list[DeviceSpec]:
    """Lay out ``count`` devices over the districts, families in turn, positions jittered.

    Examples:
        >>> [spec.device for spec in plan_fleet(4)]
        ['tr-0001', 'aq-0001', 'wb-0001', 'tr-0002']
    """
    if count < 0:
        raise ValueError("count must not be negative")
    zones = list(districts)
    rng = random.Random(seed)
    specs: list[DeviceSpec] = []
    numbers: dict[Family, int] = dict.fromkeys(FAMILIES, 0)
    for index in range(count):
        family = FAMILIES[index % len(FAMILIES)]
        numbers[family] += 1
        zone = zones[(index // len(FAMILIES)) % len(zones)]
        # Scatter within ~1.2 km of the district centre.
        radius, angle = 0.011 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        specs.append(
            DeviceSpec(
                device=f"{_PREFIX[family]}-{numbers[family]:04d}",
                site=zone.id,
                family=family,
                lat=round(zone.lat + radius * math.sin(angle), 6),
                lon=round(
                    zone.lon + radius * math.cos(angle) / math.cos(math.radians(zone.lat)), 6
                ),
                seed=seed * 100_003 + index,
            )
        )
    return specs


def plan_fleet_faults(
    specs: Iterable[DeviceSpec],
    start: datetime,
    duration: timedelta,
    *,
    per_device_per_hour: float = 0.5,
    seed: int = 1,
) -> list[Fault]:
    """Faults for a simulated fleet, each on a metric its device really reports."""
    devices = [(s.device, *FAMILY_SENSOR[s.family]) for s in specs]
    return plan_faults(devices, start, duration, per_device_per_hour=per_device_per_hour, seed=seed)


def _simulated_clock(faults: Sequence[Fault]) -> Callable[[], bool]:
    """A simulated device's clock state: synchronised, except during its ``clock`` faults.

    The host's own clock state says nothing of the simulated devices (a laptop without NTP
    would otherwise show every one of them needing a visit).
    """
    unsynced = [f for f in faults if f.kind == "clock"]

    def synchronised() -> bool:
        now = datetime.now(UTC)
        return not any(f.active(now) for f in unsynced)

    return synchronised


class Fleet:
    """Runs simulated devices against a real broker.

    Args:
        specs: The devices, usually from :func:`plan_fleet`.
        broker: Where to connect; every device has its own MQTT session, all driven by one
            network thread.
        sample_interval_s: Seconds between samples on each device.
        batch_interval_s: Seconds between batches on each device.
        credentials: Optional per-device (username, password) lookup.
        record: Keep the key of every reading stored for publishing (the tests' ground truth).
        faults: Faults to inject (see :func:`edge.faults.plan_faults`).
        labels: Where to write the injected faults as JSON lines.
    """

    def __init__(
        self,
        specs: Iterable[DeviceSpec],
        broker: BrokerSettings,
        *,
        sample_interval_s: float = 5.0,
        batch_interval_s: float = 10.0,
        credentials: Callable[[DeviceSpec], tuple[str, str] | None] | None = None,
        record: bool = False,
        faults: Sequence[Fault] = (),
        labels: Path | None = None,
    ) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop = NetworkLoop(name="fleet-mqtt")
        self._stopped = False
        self.published: set[ReadingKey] = set()
        self.agents: list[EdgeAgent] = []
        self.faults = list(faults)
        self._offline = [f for f in self.faults if f.kind == "offline"]
        self._away: set[str] = set()
        if labels is not None:
            write_labels(labels, self.faults)
        for spec in specs:
            device_broker = broker
            secret = credentials(spec) if credentials is not None else None
            if secret is not None:
                device_broker = replace(broker, username=secret[0], password=secret[1])
            settings = AgentSettings(
                site=spec.site,
                device=spec.device,
                sample_interval_s=sample_interval_s,
                batch_interval_s=batch_interval_s,
            )
            publisher = Publisher(
                site=spec.site,
                device=spec.device,
                broker=device_broker,
                loop=self._loop,
                wake=self._wake,
            )
            own = [f for f in self.faults if f.device == spec.device]
            sensors = [
                FaultySensor(s, own) if own else s
                for s in simulated_sensors(spec.family, seed=spec.seed)
            ]
            agent = EdgeAgent(
                settings,
                sensors,
                publisher,
                MemoryOutbox(),
                clock=Clock(synchronised=_simulated_clock(own)),
                on_batch=self._remember if record else None,
            )
            self.agents.append(agent)

    def _remember(self, batch: Batch) -> None:
        for r in batch.readings:
            self.published.add((batch.device, r.sensor, r.metric, r.ts.isoformat()))

    def start(self) -> None:
        """Connect every device and start sampling on a background thread."""
        for agent in self.agents:
            agent.publisher.start()
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)
        self._thread.start()
        log.info("fleet of %d devices started", len(self.agents))

    def wait_connected(self, timeout: float) -> bool:
        """Whether every device connected within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        return all(
            agent.publisher.wait_connected(max(0.0, deadline - time.monotonic()))
            for agent in self.agents
        )

    def stop_sampling(self) -> None:
        """Stop the scheduler thread; devices stay connected so their backlog can drain."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def drain(self, timeout: float) -> bool:
        """Flush every open batch and publish until all are acknowledged or ``timeout`` passes."""
        for agent in self.agents:
            agent.flush()
            if agent.settings.device in self._away:
                agent.publisher.come_back()
        self._away.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for agent in self.agents:
                agent.pump()
            if self.backlog() == 0:
                return True
            self._wake.wait(0.05)
            self._wake.clear()
        return self.backlog() == 0

    def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop sampling, drain for up to ``drain_timeout`` seconds and disconnect every device.

        Calling it again does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        self.stop_sampling()
        self.drain(drain_timeout)
        for agent in self.agents:
            agent.publisher.stop(agent.status_fields())
        self._loop.stop()
        log.info("fleet stopped")

    def backlog(self) -> int:
        """Batches stored on all devices and not yet acknowledged."""
        return sum(agent.backlog for agent in self.agents)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take_offline()
            delay = 1.0
            for agent in self.agents:
                delay = min(delay, agent.tick())
            self._wake.wait(delay)
            self._wake.clear()

    def _take_offline(self) -> None:
        if not self._offline:
            return
        now = datetime.now(UTC)
        away = {f.device for f in self._offline if f.active(now)}
        for agent in self.agents:
            device = agent.settings.device
            if device in away and device not in self._away:
                log.info("%s goes offline (injected)", device)
                agent.publisher.go_offline()
            elif device in self._away and device not in away:
                log.info("%s comes back (injected)", device)
                agent.publisher.come_back()
        self._away = away
