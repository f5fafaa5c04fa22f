"""JSN-SR04T waterproof ultrasonic rangefinder in UART mode, measuring a bin's fill level.

In its triggered UART mode the sensor answers ``0x55`` with four bytes: ``0xFF``, the distance
in millimetres (big-endian) and a checksum ``(0xFF + high + low) & 0xFF``. The bin's calibration
(distance to the bottom when empty, and at the "full" line) turns the distance into a fill
percentage. Echoes inside the sensor's blind zone or beyond its range are refused, not guessed.
"""

from __future__ import annotations

import time
from datetime import datetime

from edge.contract import Reading
from edge.sensors.base import SensorError
from edge.sensors.ports import Port, read_exactly

TRIGGER = b"\x55"
BLIND_MM = 200
RANGE_MM = 6000


def frame(distance_mm: int) -> bytes:
    """The sensor's answer for ``distance_mm`` (for tests and simulators)."""
    high, low = distance_mm >> 8, distance_mm & 0xFF
    return bytes([0xFF, high, low, (0xFF + high + low) & 0xFF])


def fill_percent(distance_mm: float, empty_mm: float, full_mm: float) -> float:
    """Fill level from the echo distance and the bin's calibration, clamped to 0..100.

    Examples:
        >>> fill_percent(1000, empty_mm=1100, full_mm=300)
        12.5
    """
    fraction = (empty_mm - distance_mm) / (empty_mm - full_mm)
    return round(min(max(fraction, 0.0), 1.0) * 100, 1)


class JSNSR04T:
    """One rangefinder over a bin.

    Args:
        name: Sensor id.
        port: The serial port (9600 baud).
        empty_mm: Distance to the bottom of the empty bin.
        full_mm: Distance when the bin counts as full.
        tries: Echoes to attempt per sample (the median of the valid ones is used).
    """

    def __init__(
        self,
        name: str,
        port: Port,
        *,
        empty_mm: float,
        full_mm: float,
        tries: int = 3,
        timeout_s: float = 0.5,
    ) -> None:
        if not BLIND_MM <= full_mm < empty_mm <= RANGE_MM:
            raise SensorError(
                f"calibration needs {BLIND_MM} <= full_mm < empty_mm <= {RANGE_MM} (mm)"
            )
        self.name = name
        self.port = port
        self.empty_mm = empty_mm
        self.full_mm = full_mm
        self._tries = tries
        self._timeout_s = timeout_s

    def _echo(self) -> int:
        self.port.flush_input()
        self.port.write(TRIGGER)
        data = read_exactly(self.port, 4, time.monotonic() + self._timeout_s)
        if len(data) < 4:
            raise SensorError("no echo")
        if data[0] != 0xFF:
            raise SensorError(f"bad frame start 0x{data[0]:02x}")
        if (0xFF + data[1] + data[2]) & 0xFF != data[3]:
            raise SensorError("checksum mismatch")
        distance = (data[1] << 8) | data[2]
        if not BLIND_MM <= distance <= RANGE_MM:
            raise SensorError(f"echo at {distance} mm is outside {BLIND_MM}..{RANGE_MM} mm")
        return distance

    def read(self, now: datetime) -> list[Reading]:
        """Fill level from the median of a few echoes."""
        distances, errors = [], []
        for _ in range(self._tries):
            try:
                distances.append(self._echo())
            except SensorError as exc:
                errors.append(str(exc))
        if not distances:
            raise SensorError(f"no valid echo in {self._tries} tries: {errors[-1]}")
        distances.sort()
        median = distances[len(distances) // 2]
        return [
            Reading(
                self.name, "fill_level", fill_percent(median, self.empty_mm, self.full_mm), "%", now
            )
        ]
