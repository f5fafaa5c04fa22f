"""Bosch BME280 on I2C: temperature, humidity and pressure, with the datasheet's compensation.

Each sample is a forced-mode measurement (the sensor sleeps in between, drawing under 1 µA);
the factory calibration is read once, and the raw values are compensated with the floating-point
formulas of the BME280 datasheet (section 8.1).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from datetime import datetime

from edge.contract import Reading
from edge.sensors.base import SensorError
from edge.sensors.ports import Bus

CHIP_ID = 0x60
_ID, _RESET, _CTRL_HUM, _STATUS, _CTRL_MEAS, _DATA = 0xD0, 0xE0, 0xF2, 0xF3, 0xF4, 0xF7
_MEASURING = 0x08


@dataclass(frozen=True, slots=True)
class Calibration:
    """The factory trimming parameters (``dig_*`` in the datasheet)."""

    t1: int
    t2: int
    t3: int
    p: tuple[int, ...]  # dig_P1 .. dig_P9
    h1: int
    h2: int
    h3: int
    h4: int
    h5: int
    h6: int

    @classmethod
    def parse(cls, block1: bytes, block2: bytes) -> Calibration:
        """From registers 0x88-0xA1 (26 bytes) and 0xE1-0xE7 (7 bytes)."""
        t1, t2, t3, *p = struct.unpack_from("<HhhHhhhhhhhh", block1, 0)
        h1 = block1[25]
        h2, h3 = struct.unpack_from("<hB", block2, 0)
        e4, e5, e6 = block2[3], block2[4], block2[5]
        h4 = _signed12((e4 << 4) | (e5 & 0x0F))
        h5 = _signed12((e6 << 4) | (e5 >> 4))
        h6 = struct.unpack_from("<b", block2, 6)[0]
        return cls(t1, t2, t3, tuple(p), h1, h2, h3, h4, h5, h6)


def _signed12(value: int) -> int:
    return value - 4096 if value & 0x800 else value


def compensate(cal: Calibration, adc_t: int, adc_p: int, adc_h: int) -> tuple[float, float, float]:
    """Temperature (°C), pressure (hPa) and relative humidity (%) from raw values.

    Examples:
        The datasheet's worked example (BMP280, same temperature and pressure formulas):

        >>> cal = Calibration(27504, 26435, -1000, (36477, -10685, 3024, 2855, 140, -7, 15500,
        ...                   -14600, 6000), 75, 362, 0, 313, 50, 30)
        >>> t, p, _ = compensate(cal, 519888, 415148, 30000)
        >>> round(t, 2), round(p * 100, 2)
        (25.08, 100653.27)
    """
    var1 = (adc_t / 16384.0 - cal.t1 / 1024.0) * cal.t2
    var2 = ((adc_t / 131072.0 - cal.t1 / 8192.0) ** 2) * cal.t3
    t_fine = var1 + var2
    temperature = t_fine / 5120.0

    p1, p2, p3, p4, p5, p6, p7, p8, p9 = cal.p
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    if var1 == 0:
        raise SensorError("pressure compensation failed (calibration reads zero)")
    pressure = 1048576.0 - adc_p
    pressure = (pressure - var2 / 4096.0) * 6250.0 / var1
    pressure += (p9 * pressure * pressure / 2147483648.0 + pressure * p8 / 32768.0 + p7) / 16.0

    h = t_fine - 76800.0
    h = (adc_h - (cal.h4 * 64.0 + cal.h5 / 16384.0 * h)) * (
        cal.h2 / 65536.0 * (1.0 + cal.h6 / 67108864.0 * h * (1.0 + cal.h3 / 67108864.0 * h))
    )
    humidity = min(max(h * (1.0 - cal.h1 * h / 524288.0), 0.0), 100.0)
    return temperature, pressure / 100.0, humidity


class BME280:
    """One BME280 at ``address`` (0x76 or 0x77) on ``bus``."""

    def __init__(self, name: str, bus: Bus, address: int = 0x76, timeout_s: float = 0.5) -> None:
        self.name = name
        self._bus = bus
        self._address = address
        self._timeout_s = timeout_s
        self._calibration: Calibration | None = None

    def _calibrate(self) -> Calibration:
        chip = self._bus.read_block(self._address, _ID, 1)[0]
        if chip != CHIP_ID:
            raise SensorError(f"chip id 0x{chip:02x} at 0x{self._address:02x} is not a BME280")
        block1 = self._bus.read_block(self._address, 0x88, 26)
        block2 = self._bus.read_block(self._address, 0xE1, 7)
        return Calibration.parse(block1, block2)

    def read(self, now: datetime) -> list[Reading]:
        """One forced-mode measurement."""
        if self._calibration is None:
            self._calibration = self._calibrate()
        bus, address = self._bus, self._address
        bus.write_byte(address, _CTRL_HUM, 0x01)  # humidity oversampling x1 (before ctrl_meas)
        bus.write_byte(address, _CTRL_MEAS, 0b001_001_01)  # temp x1, pressure x1, forced mode
        deadline = time.monotonic() + self._timeout_s
        while bus.read_block(address, _STATUS, 1)[0] & _MEASURING:
            if time.monotonic() > deadline:
                raise SensorError("measurement did not finish")
            time.sleep(0.002)
        raw = bus.read_block(address, _DATA, 8)
        adc_p = (raw[0] << 12) | (raw[1] << 4) | (raw[2] >> 4)
        adc_t = (raw[3] << 12) | (raw[4] << 4) | (raw[5] >> 4)
        adc_h = (raw[6] << 8) | raw[7]
        if adc_t == 0x80000 or adc_p == 0x80000:
            raise SensorError("measurement skipped (sensor returned its reset value)")
        temperature, pressure, humidity = compensate(self._calibration, adc_t, adc_p, adc_h)
        return [
            Reading(self.name, "temperature", round(temperature, 2), "degC", now),
            Reading(self.name, "humidity", round(humidity, 1), "%", now),
            Reading(self.name, "pressure", round(pressure, 2), "hPa", now),
        ]
