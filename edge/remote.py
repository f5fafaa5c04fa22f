"""Remote configuration: a retained JSON document on the device's ``config`` topic.

An operator or the platform publishes, retained, on ``city/v1/{site}/{device}/config``::

    {"version": 7, "batch_interval_s": 30,
     "sensors": {"pm": {"interval_s": 60}, "climate": {"enabled": false}}}

The agent validates the whole document before applying any of it; an invalid one is refused
with a reason (reported in the device status) and the previous configuration stays.

Examples:
    >>> remote = parse_remote(b'{"version": 2, "sensors": {"pm": {"interval_s": 5}}}', {"pm"})
    >>> remote.version, remote.sensors["pm"].interval_s
    ('2', 5.0)
    >>> parse_remote(b'{"version": 2, "sensors": {"co": {}}}', {"pm"})
    Traceback (most recent call last):
    ...
    edge.errors.ConfigError: remote config 2: sensor 'co' is not on this device (pm)
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field

from edge.errors import ConfigError

MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 86_400.0
_TOP = frozenset({"version", "batch_interval_s", "sensors"})
_SENSOR = frozenset({"enabled", "interval_s"})


@dataclass(frozen=True, slots=True)
class SensorOverride:
    """What the remote configuration changes for one sensor (None: leave as it is)."""

    enabled: bool | None = None
    interval_s: float | None = None


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """A validated remote configuration."""

    version: str
    batch_interval_s: float | None = None
    sensors: dict[str, SensorOverride] = field(default_factory=dict)


def _interval(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number of seconds")
    if not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S:
        raise ConfigError(f"{where} must be within {MIN_INTERVAL_S:g}..{MAX_INTERVAL_S:g} s")
    return float(value)


def parse_remote(payload: bytes, sensors: Collection[str]) -> RemoteConfig:
    """Validate a remote configuration against this device's sensors.

    Raises:
        ConfigError: Not JSON, unknown keys or sensors, or values out of range.
    """
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"remote config is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ConfigError("remote config must be a JSON object")
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int | str) or version == "":
        raise ConfigError("remote config needs a version (a number or a string)")
    prefix = f"remote config {version}"
    unknown = set(body) - _TOP
    if unknown:
        raise ConfigError(f"{prefix}: unknown key(s) {sorted(unknown)}")
    batch_interval = body.get("batch_interval_s")
    if batch_interval is not None:
        batch_interval = _interval(batch_interval, f"{prefix}: batch_interval_s")
    raw_sensors = body.get("sensors", {})
    if not isinstance(raw_sensors, dict):
        raise ConfigError(f"{prefix}: sensors must be an object")
    overrides: dict[str, SensorOverride] = {}
    for name, raw in raw_sensors.items():
        if name not in sensors:
            known = ", ".join(sorted(sensors))
            raise ConfigError(f"{prefix}: sensor {name!r} is not on this device ({known})")
        if not isinstance(raw, dict) or set(raw) - _SENSOR:
            raise ConfigError(f"{prefix}: sensor {name!r} takes only enabled and interval_s")
        enabled = raw.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise ConfigError(f"{prefix}: sensors.{name}.enabled must be true or false")
        interval = raw.get("interval_s")
        if interval is not None:
            interval = _interval(interval, f"{prefix}: sensors.{name}.interval_s")
        overrides[name] = SensorOverride(enabled, interval)
    return RemoteConfig(str(version), batch_interval, overrides)
