"""Optical particulate sensors on a serial line: Nova SDS011 and Plantower PMS5003.

Both stream frames once a second while awake; their lasers and fans wear out, so the drivers
support duty cycling: the agent wakes them ``warmup_s`` before a sample and puts them to sleep
after it (see :class:`~edge.sensors.base.DutyCycled`). A frame with a bad header, length or
checksum is skipped; no valid frame within the timeout is a :class:`SensorError` naming why.
"""

from __future__ import annotations

import struct
import time
from datetime import datetime

from edge.contract import Reading
from edge.sensors.base import SensorError
from edge.sensors.ports import Port, read_exactly

SDS011_FRAME = 10
PMS5003_FRAME = 32


def sds011_checksum(data: bytes) -> int:
    """The SDS011 checksum: the low byte of the sum of the data bytes."""
    return sum(data) & 0xFF


def sds011_command(command: int, data: bytes = b"", device: int = 0xFFFF) -> bytes:
    """A 19-byte SDS011 command frame (``0xAA 0xB4 ... checksum 0xAB``)."""
    payload = bytes([command]) + data.ljust(12, b"\x00") + device.to_bytes(2, "big")
    return b"\xaa\xb4" + payload + bytes([sds011_checksum(payload), 0xAB])


def sds011_frame(pm25: float, pm10: float, device: int = 0x1234) -> bytes:
    """A data frame as the sensor sends it (for tests and simulators)."""
    data = struct.pack("<HH", round(pm25 * 10), round(pm10 * 10)) + device.to_bytes(2, "big")
    return b"\xaa\xc0" + data + bytes([sds011_checksum(data), 0xAB])


def pms5003_command(command: int, value: int) -> bytes:
    """A PMS5003 command (``0x42 0x4D cmd data_h data_l`` plus the 16-bit sum)."""
    body = bytes([0x42, 0x4D, command]) + value.to_bytes(2, "big")
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


def pms5003_frame(pm1: int, pm25: int, pm10: int) -> bytes:
    """A data frame as the sensor sends it (atmospheric values in words 4-6)."""
    words = [pm1, pm25, pm10, pm1, pm25, pm10] + [0] * 7
    body = b"\x42\x4d" + (2 * 13 + 2).to_bytes(2, "big") + struct.pack(">13H", *words)
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


class _Streaming:
    """Frame hunting shared by both sensors: find the header, read the rest, check it."""

    header: bytes
    frame_size: int

    def __init__(
        self, name: str, port: Port, *, warmup_s: float = 30.0, timeout_s: float = 3.0
    ) -> None:
        self.name = name
        self.port = port
        self.warmup_s = warmup_s
        self._timeout_s = timeout_s

    def _check(self, frame: bytes) -> str | None:
        raise NotImplementedError

    def _frame(self) -> bytes:
        self.port.flush_input()  # a fresh frame, not one queued while we were not looking
        deadline = time.monotonic() + self._timeout_s
        problem = ""
        window = b""
        while time.monotonic() < deadline:
            byte = read_exactly(self.port, 1, deadline)
            if not byte:
                break
            window = (window + byte)[-len(self.header) :]
            if window != self.header:
                continue
            window = b""
            rest = read_exactly(self.port, self.frame_size - len(self.header), deadline)
            if len(rest) < self.frame_size - len(self.header):
                problem = "truncated frame"
                break
            frame = self.header + rest
            problem = self._check(frame) or ""
            if not problem:
                return frame
        if problem:
            raise SensorError(f"no valid frame in {self._timeout_s:g}s: last one had a {problem}")
        raise SensorError(f"no data from the sensor in {self._timeout_s:g}s")


class SDS011(_Streaming):
    """Nova Fitness SDS011: PM2.5 and PM10 at 0.1 µg/m³ resolution, 9600 baud."""

    header = b"\xaa\xc0"
    frame_size = SDS011_FRAME

    def _check(self, frame: bytes) -> str | None:
        if frame[9] != 0xAB:
            return "bad tail byte"
        if sds011_checksum(frame[2:8]) != frame[8]:
            return "checksum mismatch"
        return None

    def read(self, now: datetime) -> list[Reading]:
        """One sample of PM2.5 and PM10."""
        frame = self._frame()
        pm25, pm10 = struct.unpack_from("<HH", frame, 2)
        return [
            Reading(self.name, "pm2_5", pm25 / 10, "ug/m3", now),
            Reading(self.name, "pm10", pm10 / 10, "ug/m3", now),
        ]

    def wake(self) -> None:
        """Start the fan and laser."""
        self.port.write(sds011_command(0x06, b"\x01\x01"))

    def sleep(self) -> None:
        """Stop the fan and laser until the next sample."""
        self.port.write(sds011_command(0x06, b"\x01\x00"))


class PMS5003(_Streaming):
    """Plantower PMS5003: PM1.0, PM2.5 and PM10 (atmospheric), 9600 baud."""

    header = b"\x42\x4d"
    frame_size = PMS5003_FRAME

    def _check(self, frame: bytes) -> str | None:
        if int.from_bytes(frame[2:4], "big") != PMS5003_FRAME - 4:
            return "bad length field"
        if sum(frame[:-2]) & 0xFFFF != int.from_bytes(frame[-2:], "big"):
            return "checksum mismatch"
        return None

    def read(self, now: datetime) -> list[Reading]:
        """One sample of PM2.5 and PM10 (atmospheric environment values)."""
        frame = self._frame()
        words = struct.unpack_from(">13H", frame, 4)
        return [
            Reading(self.name, "pm2_5", float(words[4]), "ug/m3", now),
            Reading(self.name, "pm10", float(words[5]), "ug/m3", now),
        ]

    def wake(self) -> None:
        """Leave sleep mode."""
        self.port.write(pms5003_command(0xE4, 1))

    def sleep(self) -> None:
        """Enter sleep mode (fan off)."""
        self.port.write(pms5003_command(0xE4, 0))
