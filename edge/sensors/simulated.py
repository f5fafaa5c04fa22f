"""Simulated sensors with realistic daily and weekly patterns, for the demo and the fleet.

Each simulator is deterministic for a given seed and sequence of sample times, so tests and fault
injection have a known ground truth. Patterns follow local time in the city's time zone.

Examples:
    >>> from datetime import datetime, timezone
    >>> sensor = SimulatedWasteBin("bin", seed=7)
    >>> [r.metric for r in sensor.read(datetime(2026, 11, 23, 8, tzinfo=timezone.utc))]
    ['fill_level', 'temperature']
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from edge.contract import Reading
from edge.metrics import METRICS, Family
from edge.sensors.base import Sensor

DEFAULT_TZ = "Europe/London"


def _reading(sensor: str, metric: str, value: float, ts: datetime, ndigits: int = 1) -> Reading:
    spec = METRICS[metric]
    clamped = min(max(value, spec.low), spec.high)
    return Reading(sensor, metric, round(clamped, ndigits), spec.unit, ts)


def _hour_of_day(now: datetime, zone: tzinfo) -> tuple[float, bool]:
    local = now.astimezone(zone)
    hour = local.hour + local.minute / 60 + local.second / 3600
    return hour, local.weekday() >= 5


def _bump(hour: float, centre: float, width: float) -> float:
    """A smooth daily peak around ``centre`` o'clock, 1 at the centre."""
    distance = min(abs(hour - centre), 24 - abs(hour - centre))
    return math.exp(-0.5 * (distance / width) ** 2)


def traffic_intensity(hour: float, weekend: bool) -> float:
    """Relative traffic flow (0..1) by local hour: weekday rush hours, a flatter weekend."""
    if weekend:
        return 0.08 + 0.55 * _bump(hour, 13.5, 3.5)
    return (
        0.06
        + 0.9 * _bump(hour, 8.0, 1.2)
        + 0.8 * _bump(hour, 17.5, 1.5)
        + 0.45 * _bump(hour, 12.5, 3.0)
    )


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class _Simulated:
    """Shared state: a seeded generator, the local zone, and the last sample time."""

    def __init__(self, name: str, seed: int, tz: str) -> None:
        self.name = name
        self._rng = random.Random(seed)
        self._zone = ZoneInfo(tz)
        self._last: datetime | None = None

    def _elapsed_s(self, now: datetime, default: float) -> float:
        elapsed = default if self._last is None else (now - self._last).total_seconds()
        self._last = now
        return max(elapsed, 0.0)


class SimulatedTraffic(_Simulated):
    """An inductive-loop counter: vehicles per interval, mean speed and lane occupancy."""

    def __init__(
        self,
        name: str,
        *,
        seed: int,
        capacity_per_hour: float = 1_800,
        free_speed_kmh: float = 50,
        tz: str = DEFAULT_TZ,
    ) -> None:
        super().__init__(name, seed, tz)
        self.capacity_per_hour = capacity_per_hour
        self.free_speed_kmh = free_speed_kmh

    def read(self, now: datetime) -> list[Reading]:
        """Count the vehicles since the last sample and derive speed and occupancy."""
        interval_s = self._elapsed_s(now, 60.0)
        hour, weekend = _hour_of_day(now, self._zone)
        load = traffic_intensity(hour, weekend) * self._rng.uniform(0.85, 1.15)
        count = _poisson(self._rng, load * self.capacity_per_hour * interval_s / 3600)
        # Speed falls off as the road fills (a simple fundamental-diagram shape), down to a
        # crawl that still varies from one interval to the next.
        speed = self.free_speed_kmh * (1 - 0.75 * load**3) + self._rng.gauss(0, 2)
        if speed < 5.0:
            speed = 5.0 * self._rng.uniform(0.4, 1.0)
        occupancy = 100 * min(0.95, 0.9 * load**1.5) + self._rng.gauss(0, 1)
        return [
            _reading(self.name, "vehicle_count", count, now, 0),
            _reading(self.name, "speed_mean", speed, now),
            _reading(self.name, "occupancy", occupancy, now),
        ]


class CityWeather:
    """Pollution episodes the whole city shares: a smooth, seeded function of time.

    Weather moves particulates across a city together, so every station sees the same episodes;
    each station adds only a small local wander of its own.

    Examples:
        >>> from datetime import datetime, timezone
        >>> at = datetime(2026, 11, 23, 8, tzinfo=timezone.utc)
        >>> CityWeather(seed=1).at(at) == CityWeather(seed=1).at(at)
        True
    """

    def __init__(self, seed: int = 0) -> None:
        rng = random.Random(seed)
        # A few waves of 8 hours to 3 days: episodes build and clear over hours, not minutes.
        self._waves = [
            (rng.uniform(0.4, 0.9), rng.uniform(8, 72) * 3600, rng.uniform(0, 2 * math.pi))
            for _ in range(4)
        ]

    def at(self, now: datetime) -> float:
        """The episode strength at ``now`` (about -2.5..2.5; 0 is a typical day)."""
        t = now.timestamp()
        return sum(
            a * math.sin(2 * math.pi * t / period + phase) for a, period, phase in self._waves
        )


CITY_WEATHER = CityWeather()


class SimulatedAirQuality(_Simulated):
    """An air-quality station: PM2.5, PM10, NO2 with traffic-driven peaks, temperature, humidity."""

    def __init__(
        self,
        name: str,
        *,
        seed: int,
        background_pm25: float = 8.0,
        weather: CityWeather = CITY_WEATHER,
        tz: str = DEFAULT_TZ,
    ) -> None:
        super().__init__(name, seed, tz)
        self.background_pm25 = background_pm25
        self.weather = weather
        self._local = 0.0  # the station's own slow wander around the city's episodes

    def read(self, now: datetime) -> list[Reading]:
        """Sample particulates, NO2 and climate."""
        interval_s = self._elapsed_s(now, 60.0)
        hour, weekend = _hour_of_day(now, self._zone)
        step = min(interval_s / 3600, 1.0)
        self._local = self._local * (1 - 0.1 * step) + self._rng.gauss(0, 0.2 * math.sqrt(step))
        traffic = traffic_intensity(hour, weekend)
        episode = self.weather.at(now) + self._local
        pm25 = self.background_pm25 * math.exp(0.25 * episode) + 14 * traffic
        pm25 *= self._rng.uniform(0.92, 1.08)
        pm10 = pm25 * self._rng.uniform(1.4, 1.8)
        no2 = 12 + 45 * traffic + self._rng.gauss(0, 3)
        temperature = 10 + 5 * math.cos(2 * math.pi * (hour - 15) / 24) + self._rng.gauss(0, 0.2)
        humidity = 75 - 15 * math.cos(2 * math.pi * (hour - 15) / 24) + self._rng.gauss(0, 1)
        return [
            _reading(self.name, "pm2_5", pm25, now),
            _reading(self.name, "pm10", pm10, now),
            _reading(self.name, "no2", no2, now),
            _reading(self.name, "temperature", temperature, now, 2),
            _reading(self.name, "humidity", humidity, now),
        ]


class SimulatedWasteBin(_Simulated):
    """An ultrasonic bin sensor: fill level rising by day, emptied on collection rounds."""

    def __init__(
        self,
        name: str,
        *,
        seed: int,
        percent_per_day: float | None = None,
        collection_hours: Sequence[int] = (6,),
        tz: str = DEFAULT_TZ,
    ) -> None:
        super().__init__(name, seed, tz)
        rng = self._rng
        self.percent_per_day = percent_per_day or rng.uniform(25, 70)
        self.collection_hours = tuple(collection_hours)
        self.fill = rng.uniform(5, 60)

    def _collected_between(self, start: datetime, end: datetime) -> bool:
        # A round empties the bin when it is worth it: above 60 % at one of the collection hours.
        local = start.astimezone(self._zone).replace(minute=0, second=0, microsecond=0)
        while local <= end:
            if local > start and local.hour in self.collection_hours and self.fill >= 60:
                return True
            local += timedelta(hours=1)
        return False

    def read(self, now: datetime) -> list[Reading]:
        """Advance the fill level since the last sample and report it."""
        previous = self._last
        interval_s = self._elapsed_s(now, 60.0)
        if previous is not None and self._collected_between(previous, now):
            self.fill = self._rng.uniform(0, 4)
        hour, _ = _hour_of_day(now, self._zone)
        daytime = 0.4 + 1.2 * _bump(hour, 14, 4)
        self.fill = min(100.0, self.fill + self.percent_per_day * daytime * interval_s / 86_400)
        measured = self.fill + self._rng.gauss(0, 0.8)  # ultrasonic echo jitter
        temperature = 9 + 4 * math.cos(2 * math.pi * (hour - 15) / 24) + self._rng.gauss(0, 0.3)
        return [
            _reading(self.name, "fill_level", measured, now),
            _reading(self.name, "temperature", temperature, now, 2),
        ]


def simulated_sensors(family: Family, *, seed: int, tz: str = DEFAULT_TZ) -> list[Sensor]:
    """The sensors a simulated device of ``family`` carries.

    Examples:
        >>> [s.name for s in simulated_sensors("air", seed=1)]
        ['aq']
    """
    match family:
        case "traffic":
            rng = random.Random(seed)
            return [
                SimulatedTraffic(
                    "loop",
                    seed=seed,
                    capacity_per_hour=rng.choice([900, 1_800, 3_600]),
                    free_speed_kmh=rng.choice([30, 50, 70]),
                    tz=tz,
                )
            ]
        case "air":
            return [SimulatedAirQuality("aq", seed=seed, tz=tz)]
        case "waste":
            return [SimulatedWasteBin("bin", seed=seed, tz=tz)]
    raise ValueError(f"unknown family {family!r}")
