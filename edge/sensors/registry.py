"""Driver names as written in ``edge.toml``, with their options and how to build them."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.sensors.base import Sensor
from edge.sensors.bme280 import BME280
from edge.sensors.pm import PMS5003, SDS011
from edge.sensors.ports import LazyI2CBus, LazySerialPort
from edge.sensors.simulated import (
    DEFAULT_TZ,
    SimulatedAirQuality,
    SimulatedTraffic,
    SimulatedWasteBin,
)
from edge.sensors.traffic import TrafficCounter
from edge.sensors.ultrasonic import JSNSR04T


@dataclass(frozen=True, slots=True)
class SimulatedOptions:
    """Options of the simulated drivers.

    Attributes:
        seed: Random seed (default: derived from the sensor name, so it is stable).
        tz: Time zone of the daily patterns.
    """

    seed: int | None = None
    tz: str = DEFAULT_TZ


@dataclass(frozen=True, slots=True)
class ParticulateOptions:
    """SDS011 and PMS5003.

    Attributes:
        port: Serial device, e.g. ``/dev/ttyUSB0`` or ``/dev/serial0``.
        baud: Line speed (the sensors use 9600).
        duty_cycle: Sleep between samples when the interval allows (saves the laser).
        warmup_s: Seconds awake before a sample, for the fan to fill the chamber.
        timeout_s: Seconds to wait for a valid frame.
    """

    port: str
    baud: int = 9600
    duty_cycle: bool = True
    warmup_s: float = 30.0
    timeout_s: float = 3.0


@dataclass(frozen=True, slots=True)
class BME280Options:
    """BME280.

    Attributes:
        bus: I2C bus number (1 on a Raspberry Pi's header).
        address: 0x76 or 0x77 (SDO pin).
    """

    bus: int = 1
    address: int = 0x76


@dataclass(frozen=True, slots=True)
class UltrasonicOptions:
    """JSN-SR04T in UART mode over a bin.

    Attributes:
        port: Serial device.
        empty_mm: Distance from the sensor to the bottom of the empty bin.
        full_mm: Distance at which the bin counts as full.
        baud: Line speed.
        tries: Echoes per sample (the median is used).
    """

    port: str
    empty_mm: float
    full_mm: float
    baud: int = 9600
    tries: int = 3


@dataclass(frozen=True, slots=True)
class TrafficSerialOptions:
    """A counter sending ``$TRF`` sentences.

    Attributes:
        port: Serial device.
        baud: Line speed.
        silence_s: Seconds without a sentence before the counter counts as failed.
    """

    port: str
    baud: int = 9600
    silence_s: float = 300.0


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """One ``[[sensors]]`` entry, validated."""

    name: str
    driver: str
    interval_s: float | None
    options: Any


@dataclass(frozen=True, slots=True)
class Driver:
    """A driver's option schema and its factory."""

    options: type[Any]
    build: Callable[[str, Any], Sensor]
    description: str


def _seed(name: str, options: SimulatedOptions) -> int:
    return options.seed if options.seed is not None else zlib.crc32(name.encode())


DRIVERS: dict[str, Driver] = {
    "simulated-traffic": Driver(
        SimulatedOptions,
        lambda n, o: SimulatedTraffic(n, seed=_seed(n, o), tz=o.tz),
        "simulated loop counter (vehicles, speed, occupancy)",
    ),
    "simulated-air": Driver(
        SimulatedOptions,
        lambda n, o: SimulatedAirQuality(n, seed=_seed(n, o), tz=o.tz),
        "simulated air-quality station (PM2.5, PM10, NO2, temperature, humidity)",
    ),
    "simulated-waste": Driver(
        SimulatedOptions,
        lambda n, o: SimulatedWasteBin(n, seed=_seed(n, o), tz=o.tz),
        "simulated bin (fill level, temperature)",
    ),
    "sds011": Driver(
        ParticulateOptions,
        lambda n, o: SDS011(
            n,
            LazySerialPort(o.port, o.baud),
            warmup_s=o.warmup_s if o.duty_cycle else 0.0,
            timeout_s=o.timeout_s,
        ),
        "Nova SDS011 particulate sensor (serial)",
    ),
    "pms5003": Driver(
        ParticulateOptions,
        lambda n, o: PMS5003(
            n,
            LazySerialPort(o.port, o.baud),
            warmup_s=o.warmup_s if o.duty_cycle else 0.0,
            timeout_s=o.timeout_s,
        ),
        "Plantower PMS5003 particulate sensor (serial)",
    ),
    "bme280": Driver(
        BME280Options,
        lambda n, o: BME280(n, LazyI2CBus(o.bus), o.address),
        "Bosch BME280 temperature, humidity, pressure (I2C)",
    ),
    "jsnsr04t": Driver(
        UltrasonicOptions,
        lambda n, o: JSNSR04T(
            n, LazySerialPort(o.port, o.baud), empty_mm=o.empty_mm, full_mm=o.full_mm, tries=o.tries
        ),
        "JSN-SR04T ultrasonic bin fill level (serial, UART mode)",
    ),
    "traffic-serial": Driver(
        TrafficSerialOptions,
        lambda n, o: TrafficCounter(n, LazySerialPort(o.port, o.baud), silence_s=o.silence_s),
        "traffic counter sending $TRF sentences (serial)",
    ),
}


def build_sensor(spec: SensorSpec) -> Sensor:
    """The driver instance for a configured sensor (hardware is opened on first use)."""
    return DRIVERS[spec.driver].build(spec.name, spec.options)
