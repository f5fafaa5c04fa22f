"""Real sensor drivers against synthetic byte streams: good frames, corrupt ones, silence."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from edge.contract import Reading
from edge.sensors.base import DutyCycled, SensorError
from edge.sensors.bme280 import BME280
from edge.sensors.pm import (
    PMS5003,
    SDS011,
    pms5003_command,
    pms5003_frame,
    sds011_command,
    sds011_frame,
)
from edge.sensors.traffic import TrafficCounter, sentence
from edge.sensors.ultrasonic import JSNSR04T, frame
from tests.edge.fakes import FakeBus, FakePort

NOW = datetime(2026, 11, 23, 8, tzinfo=UTC)


def values(readings: Sequence[Reading]) -> dict[str, float]:
    return {r.metric: r.value for r in readings}


# SDS011 ---------------------------------------------------------------------------------------


def test_sds011_reads_a_frame_after_garbage() -> None:
    port = FakePort(b"\x13\x37\xaa" + sds011_frame(12.3, 20.5))
    assert values(SDS011("pm", port, timeout_s=0.2).read(NOW)) == {"pm2_5": 12.3, "pm10": 20.5}


def test_sds011_skips_a_corrupt_frame_and_takes_the_next() -> None:
    bad = bytearray(sds011_frame(99.9, 99.9))
    bad[8] ^= 0xFF  # checksum
    port = FakePort(bytes(bad) + sds011_frame(5.0, 7.0))
    assert values(SDS011("pm", port, timeout_s=0.2).read(NOW)) == {"pm2_5": 5.0, "pm10": 7.0}


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"", "no data from the sensor"),
        (b"\x00\x01\x02" * 10, "no data from the sensor"),
        (sds011_frame(1, 1)[:-1] + b"\x00", "bad tail byte"),
        (sds011_frame(1, 1)[:8] + bytes([0x00, 0xAB]), "checksum"),
        (sds011_frame(1, 1)[:6], "truncated"),
    ],
)
def test_sds011_bad_streams_are_clear_errors(stream: bytes, message: str) -> None:
    with pytest.raises(SensorError, match=message):
        SDS011("pm", FakePort(stream), timeout_s=0.1).read(NOW)


def test_sds011_duty_cycle_commands() -> None:
    port = FakePort()
    sensor = SDS011("pm", port, warmup_s=30)
    assert isinstance(sensor, DutyCycled)
    sensor.sleep()
    sensor.wake()
    assert port.written == [sds011_command(0x06, b"\x01\x00"), sds011_command(0x06, b"\x01\x01")]
    sleep = port.written[0]
    assert (len(sleep), sleep[:3], sleep[-1]) == (19, b"\xaa\xb4\x06", 0xAB)
    assert sleep[17] == sum(sleep[2:17]) & 0xFF


# PMS5003 --------------------------------------------------------------------------------------


def test_pms5003_reads_atmospheric_values() -> None:
    port = FakePort(b"\x42" + pms5003_frame(3, 11, 17))
    assert values(PMS5003("pm", port, timeout_s=0.2).read(NOW)) == {"pm2_5": 11.0, "pm10": 17.0}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f[:2] + b"\x00\x10" + f[4:], "bad length field"),
        (lambda f: f[:-1] + bytes([(f[-1] + 1) & 0xFF]), "checksum"),
    ],
)
def test_pms5003_corrupt_frames_are_refused(mutate: object, message: str) -> None:
    corrupt = mutate(pms5003_frame(1, 2, 3))  # type: ignore[operator]
    with pytest.raises(SensorError, match=message):
        PMS5003("pm", FakePort(corrupt), timeout_s=0.1).read(NOW)


def test_pms5003_sleep_and_wake_commands() -> None:
    port = FakePort()
    sensor = PMS5003("pm", port)
    sensor.sleep()
    sensor.wake()
    assert port.written == [b"\x42\x4d\xe4\x00\x00\x01\x73", b"\x42\x4d\xe4\x00\x01\x01\x74"]
    assert port.written[0] == pms5003_command(0xE4, 0)


# BME280 ---------------------------------------------------------------------------------------

# Calibration of a real BME280 (dig_T1..dig_H6), as read from its registers.
CALIBRATION = struct.pack(
    "<HhhHhhhhhhhh",
    28_247,
    26_616,
    50,
    37_931,
    -10_599,
    3_024,
    6_587,
    -26,
    -7,
    9_900,
    -10_230,
    4_285,
)


def bme280_bus(chip: int = 0x60, busy_reads: int = 0) -> FakeBus:
    bus = FakeBus({0xD0: chip}, busy_reads=busy_reads)
    bus.load(0x88, CALIBRATION + b"\x00" + bytes([75]))  # 0xA0 unused, 0xA1 = dig_H1
    # dig_H2 = 360, dig_H3 = 0, dig_H4 = 329, dig_H5 = 0, dig_H6 = 30
    bus.load(0xE1, struct.pack("<hB", 360, 0) + bytes([329 >> 4, 329 & 0x0F, 0, 30]))
    # raw pressure, temperature, humidity as a room at about 21 °C, 1012 hPa, 45 % would give
    bus.load(0xF7, bytes([0x54, 0x7A, 0x50, 0x81, 0x5C, 0x20, 0x6B, 0x3D]))
    return bus


def test_bme280_forced_measurement_gives_plausible_values() -> None:
    bus = bme280_bus(busy_reads=2)
    readings = values(BME280("climate", bus).read(NOW))
    assert 15 < readings["temperature"] < 30
    assert 950 < readings["pressure"] < 1050
    assert 0 <= readings["humidity"] <= 100
    assert (0xF2, 0x01) in bus.writes  # humidity oversampling set before the forced mode
    assert bus.writes[-1] == (0xF4, 0b001_001_01)


def test_bme280_wrong_chip_is_refused() -> None:
    with pytest.raises(SensorError, match="not a BME280"):
        BME280("climate", bme280_bus(chip=0x58)).read(NOW)  # a BMP280


def test_bme280_stuck_measurement_times_out() -> None:
    with pytest.raises(SensorError, match="did not finish"):
        BME280("climate", bme280_bus(busy_reads=10_000), timeout_s=0.05).read(NOW)


def test_bme280_reset_values_are_refused() -> None:
    bus = bme280_bus()
    bus.load(0xF7, bytes([0x80, 0, 0, 0x80, 0, 0, 0x80, 0]))
    with pytest.raises(SensorError, match="skipped"):
        BME280("climate", bus).read(NOW)


# JSN-SR04T ------------------------------------------------------------------------------------


def echoes(*distances: int | bytes) -> FakePort:
    answers = [d if isinstance(d, bytes) else frame(d) for d in distances]
    return FakePort(respond=lambda command: answers.pop(0) if answers else b"")


def test_ultrasonic_fill_level_from_the_median_echo() -> None:
    sensor = JSNSR04T("bin", echoes(700, 705, 2000), empty_mm=1100, full_mm=300)
    assert values(sensor.read(NOW)) == {"fill_level": 49.4}  # median 705 mm
    assert sensor.port.written == [b"\x55"] * 3  # type: ignore[attr-defined]


def test_ultrasonic_survives_a_corrupt_echo() -> None:
    corrupt = bytes([0xFF, 0x02, 0xBC, 0x00])
    sensor = JSNSR04T("bin", echoes(corrupt, 700, 700), empty_mm=1100, full_mm=300)
    assert values(sensor.read(NOW)) == {"fill_level": 50.0}


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ((), "no echo"),
        ((bytes([0x00, 1, 2, 3]),) * 3, "bad frame start"),
        ((150,) * 3, "outside"),
        ((bytes([0xFF, 0x02, 0xBC, 0x00]),) * 3, "checksum"),
    ],
)
def test_ultrasonic_bad_echoes_are_clear_errors(
    answers: tuple[int | bytes, ...], message: str
) -> None:
    with pytest.raises(SensorError, match=message):
        JSNSR04T("bin", echoes(*answers), empty_mm=1100, full_mm=300, timeout_s=0.05).read(NOW)


def test_ultrasonic_calibration_is_checked() -> None:
    with pytest.raises(SensorError, match="calibration"):
        JSNSR04T("bin", FakePort(), empty_mm=300, full_mm=1100)


# Traffic counter ------------------------------------------------------------------------------


def test_traffic_counter_aggregates_sentences_since_the_last_sample() -> None:
    port = FakePort(sentence(60, 30, 40.0, 10.0) + sentence(60, 10, 60.0, 30.0))
    counter = TrafficCounter("loop", port)
    assert values(counter.read(NOW)) == {
        "vehicle_count": 40.0,
        "speed_mean": 45.0,
        "occupancy": 20.0,
    }
    assert counter.read(NOW) == []  # nothing new, not yet silent for long


def test_traffic_counter_skips_corrupt_sentences_and_partial_lines() -> None:
    good = sentence(60, 12, 50.0, 15.0)
    corrupt = good.replace(b",12,", b",99,")  # checksum no longer matches
    port = FakePort(corrupt + b"garbage\r\n$TRF,60,1*00\r\n" + good + b"$TRF,60,5,4")
    counter = TrafficCounter("loop", port)
    assert values(counter.read(NOW))["vehicle_count"] == 12.0
    assert counter.corrupt == 3
    port.feed(b"0.0,10.0" + sentence(60, 5, 40.0, 10.0)[-5:])  # completes the partial sentence
    assert values(counter.read(NOW))["vehicle_count"] == 5.0


def test_a_silent_counter_is_a_fault() -> None:
    counter = TrafficCounter("loop", FakePort(), silence_s=0.0)
    with pytest.raises(SensorError, match="silent"):
        counter.read(NOW)
