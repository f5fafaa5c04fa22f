"""The metrics a device may report, with canonical unit, family and physical range.

Units on the wire are ASCII so every device can type them; :attr:`Metric.display_unit` is what
people read. The physical range is what the instrument can measure at all: a value outside it is
a fault, not an event, and ingest rejects it.

Examples:
    >>> METRICS["pm2_5"].unit
    'ug/m3'
    >>> METRICS["pm2_5"].contains(1500.0)
    False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Family = Literal["traffic", "air", "waste"]
FAMILIES: Final[tuple[Family, ...]] = ("traffic", "air", "waste")


@dataclass(frozen=True, slots=True)
class Metric:
    """One measured quantity.

    Attributes:
        name: Wire name, e.g. ``pm2_5``.
        unit: Canonical wire unit; readings in any other unit are rejected.
        display_unit: The unit as people write it.
        low: Lowest value the instruments can physically report.
        high: Highest value the instruments can physically report.
        label: Short human name.
    """

    name: str
    unit: str
    display_unit: str
    low: float
    high: float
    label: str

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies inside the physical range (bounds included)."""
        return self.low <= value <= self.high


def _catalogue(*metrics: Metric) -> dict[str, Metric]:
    return {metric.name: metric for metric in metrics}


METRICS: Final[dict[str, Metric]] = _catalogue(
    # traffic: inductive loops, radar and camera counters, per reporting interval
    Metric("vehicle_count", "count", "vehicles", 0, 10_000, "Vehicles"),
    Metric("speed_mean", "km/h", "km/h", 0, 250, "Mean speed"),
    Metric("occupancy", "%", "%", 0, 100, "Lane occupancy"),
    # air quality: optical PM, electrochemical gas and climate sensors
    Metric("pm2_5", "ug/m3", "µg/m³", 0, 1_000, "PM2.5"),
    Metric("pm10", "ug/m3", "µg/m³", 0, 2_000, "PM10"),
    Metric("no2", "ug/m3", "µg/m³", 0, 2_000, "NO₂"),
    Metric("o3", "ug/m3", "µg/m³", 0, 1_000, "O₃"),
    Metric("co2", "ppm", "ppm", 0, 40_000, "CO₂"),
    Metric("temperature", "degC", "°C", -60, 125, "Temperature"),
    Metric("humidity", "%", "%", 0, 100, "Relative humidity"),
    Metric("pressure", "hPa", "hPa", 300, 1_100, "Air pressure"),
    # waste bins: ultrasonic fill level, fire-risk temperature, tilt and lid events
    Metric("fill_level", "%", "%", 0, 100, "Fill level"),
    Metric("tilt", "deg", "°", 0, 180, "Tilt"),
    Metric("lid_open", "bool", "", 0, 1, "Lid open"),
)
