"""A traffic counter that reports over a serial line, one checksummed sentence per interval.

The counter (an inductive-loop or radar controller) sends NMEA-style sentences::

    $TRF,<seconds>,<vehicles>,<mean speed km/h>,<occupancy %>*<XOR checksum, 2 hex digits>

The driver reads every sentence received since the last sample, skips corrupt ones (counting
them), and reports the vehicles counted, the count-weighted mean speed and the time-weighted
occupancy. A counter silent for longer than ``silence_s`` is a fault.
"""

from __future__ import annotations

import time
from datetime import datetime

from edge.contract import Reading
from edge.sensors.base import SensorError
from edge.sensors.ports import Port


def checksum(body: str) -> str:
    """XOR of the characters between ``$`` and ``*``, as two hex digits.

    Examples:
        >>> checksum("TRF,60,31,42.5,18.0")
        '4E'
    """
    value = 0
    for char in body.encode("ascii"):
        value ^= char
    return f"{value:02X}"


def sentence(seconds: int, vehicles: int, speed: float, occupancy: float) -> bytes:
    """A sentence as the counter sends it (for tests and simulators)."""
    body = f"TRF,{seconds},{vehicles},{speed:.1f},{occupancy:.1f}"
    return f"${body}*{checksum(body)}\r\n".encode("ascii")


class TrafficCounter:
    """Aggregates the counter's sentences between two samples."""

    def __init__(self, name: str, port: Port, *, silence_s: float = 300.0) -> None:
        self.name = name
        self.port = port
        self._silence_s = silence_s
        self._buffer = b""
        self._heard = time.monotonic()
        self.corrupt = 0

    def _sentences(self) -> list[tuple[int, int, float, float]]:
        while chunk := self.port.read(4096, 0.0):
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        self._buffer = self._buffer[-256:]  # a partial sentence is short; garbage is dropped
        parsed = []
        for raw in lines:
            line = raw.strip().decode("ascii", errors="replace")
            if not line:
                continue
            try:
                parsed.append(self._parse(line))
            except ValueError:
                self.corrupt += 1
        return parsed

    @staticmethod
    def _parse(line: str) -> tuple[int, int, float, float]:
        if not line.startswith("$") or "*" not in line:
            raise ValueError("not a sentence")
        body, _, given = line[1:].partition("*")
        if given.upper() != checksum(body):
            raise ValueError("checksum mismatch")
        kind, seconds, vehicles, speed, occupancy = body.split(",")
        if kind != "TRF":
            raise ValueError("unknown sentence")
        values = int(seconds), int(vehicles), float(speed), float(occupancy)
        if values[0] <= 0 or values[1] < 0 or not 0 <= values[3] <= 100 or values[2] < 0:
            raise ValueError("values out of range")
        return values

    def read(self, now: datetime) -> list[Reading]:
        """Vehicles, mean speed and occupancy since the previous sample."""
        sentences = self._sentences()
        if not sentences:
            silent = time.monotonic() - self._heard
            if silent > self._silence_s:
                raise SensorError(
                    f"counter silent for {silent:.0f}s ({self.corrupt} corrupt sentences)"
                )
            return []
        self._heard = time.monotonic()
        seconds = sum(s[0] for s in sentences)
        vehicles = sum(s[1] for s in sentences)
        speed = sum(s[1] * s[2] for s in sentences) / vehicles if vehicles else sentences[-1][2]
        occupancy = sum(s[0] * s[3] for s in sentences) / seconds
        return [
            Reading(self.name, "vehicle_count", float(vehicles), "count", now),
            Reading(self.name, "speed_mean", round(speed, 1), "km/h", now),
            Reading(self.name, "occupancy", round(occupancy, 1), "%", now),
        ]
