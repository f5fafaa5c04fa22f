"""Sensor drivers behind one small interface, :class:`~edge.sensors.base.Sensor`."""

from edge.sensors.base import Sensor, SensorError
from edge.sensors.simulated import (
    SimulatedAirQuality,
    SimulatedTraffic,
    SimulatedWasteBin,
    simulated_sensors,
)

__all__ = [
    "Sensor",
    "SensorError",
    "SimulatedAirQuality",
    "SimulatedTraffic",
    "SimulatedWasteBin",
    "simulated_sensors",
]
