"""Byte-level access to serial (UART) and I2C devices with the standard library only.

:class:`SerialPort` configures a TTY raw at a given speed with ``termios``; :class:`I2CBus`
talks to ``/dev/i2c-N`` with the ``I2C_SLAVE`` ioctl. Drivers depend on the small protocols
:class:`Port` and :class:`Bus`, so tests drive them with recorded or synthetic bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import termios
import time
import tty
from typing import Protocol

from edge.sensors.base import SensorError

_BAUD = {
    1200: termios.B1200,
    2400: termios.B2400,
    4800: termios.B4800,
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
}
_I2C_SLAVE = 0x0703


class Port(Protocol):
    """A byte stream to a serial device."""

    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes, waiting at most ``timeout`` seconds for the first ones."""
        ...

    def write(self, data: bytes) -> None:
        """Send ``data``."""
        ...

    def flush_input(self) -> None:
        """Discard whatever was received and not yet read."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


class Bus(Protocol):
    """Register access on an I2C bus (the subset of SMBus that sensors use)."""

    def read_block(self, address: int, register: int, length: int) -> bytes:
        """Read ``length`` bytes starting at ``register``."""
        ...

    def write_byte(self, address: int, register: int, value: int) -> None:
        """Write one byte to ``register``."""
        ...


class SerialPort:
    """A TTY in raw mode (8N1, no flow control) at ``baud``."""

    def __init__(self, path: str, baud: int = 9600) -> None:
        if baud not in _BAUD:
            raise SensorError(f"unsupported baud rate {baud}")
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise SensorError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            tty.setraw(self._fd)
            attrs = termios.tcgetattr(self._fd)
            attrs[4] = attrs[5] = _BAUD[baud]  # input and output speed
            attrs[2] &= ~(termios.CSTOPB | termios.PARENB | termios.CRTSCTS)
            attrs[2] |= termios.CLOCAL | termios.CREAD | termios.CS8
            termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        except termios.error as exc:
            os.close(self._fd)
            raise SensorError(f"{path} is not a serial port: {exc}") from exc
        self.path = path

    def read(self, size: int, timeout: float) -> bytes:  # noqa: D102
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self._fd, size)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise SensorError(f"reading {self.path}: {exc.strerror}") from exc

    def write(self, data: bytes) -> None:  # noqa: D102
        try:
            os.write(self._fd, data)
        except OSError as exc:
            raise SensorError(f"writing {self.path}: {exc.strerror}") from exc

    def flush_input(self) -> None:  # noqa: D102
        termios.tcflush(self._fd, termios.TCIFLUSH)

    def close(self) -> None:  # noqa: D102
        os.close(self._fd)


class I2CBus:
    """``/dev/i2c-<number>`` through the kernel's i2c-dev interface."""

    def __init__(self, number: int) -> None:
        path = f"/dev/i2c-{number}"
        try:
            self._fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise SensorError(f"cannot open {path}: {exc.strerror} (is I2C enabled?)") from exc
        self.path = path
        self._address: int | None = None

    def _select(self, address: int) -> None:
        if address != self._address:
            fcntl.ioctl(self._fd, _I2C_SLAVE, address)
            self._address = address

    def read_block(self, address: int, register: int, length: int) -> bytes:  # noqa: D102
        try:
            self._select(address)
            os.write(self._fd, bytes([register]))
            data = os.read(self._fd, length)
        except OSError as exc:
            raise SensorError(f"I2C 0x{address:02x} on {self.path}: {exc.strerror}") from exc
        if len(data) != length:
            raise SensorError(f"I2C 0x{address:02x}: short read ({len(data)} of {length})")
        return data

    def write_byte(self, address: int, register: int, value: int) -> None:  # noqa: D102
        try:
            self._select(address)
            os.write(self._fd, bytes([register, value]))
        except OSError as exc:
            raise SensorError(f"I2C 0x{address:02x} on {self.path}: {exc.strerror}") from exc


def read_exactly(port: Port, size: int, deadline: float) -> bytes:
    """Read exactly ``size`` bytes, or fewer if the monotonic ``deadline`` passes."""
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        data += port.read(size - len(data), left)
    return data


class LazySerialPort:
    """A :class:`SerialPort` opened on first use and reopened after a failure.

    A device unplugged at boot or in use must not stop the agent: the driver reports the error,
    and the next sample tries again.
    """

    def __init__(self, path: str, baud: int = 9600) -> None:
        self.path = path
        self._baud = baud
        self._port: SerialPort | None = None

    def _open(self) -> SerialPort:
        if self._port is None:
            self._port = SerialPort(self.path, self._baud)
        return self._port

    def _failed(self) -> None:
        if self._port is not None:
            with contextlib.suppress(OSError):
                self._port.close()
            self._port = None

    def read(self, size: int, timeout: float) -> bytes:  # noqa: D102
        try:
            return self._open().read(size, timeout)
        except SensorError:
            self._failed()
            raise

    def write(self, data: bytes) -> None:  # noqa: D102
        try:
            self._open().write(data)
        except SensorError:
            self._failed()
            raise

    def flush_input(self) -> None:  # noqa: D102
        try:
            self._open().flush_input()
        except termios.error as exc:
            self._failed()
            raise SensorError(f"{self.path}: {exc}") from exc

    def close(self) -> None:  # noqa: D102
        self._failed()


class LazyI2CBus:
    """An :class:`I2CBus` opened on first use and reopened after a failure."""

    def __init__(self, number: int) -> None:
        self.number = number
        self._bus: I2CBus | None = None

    def read_block(self, address: int, register: int, length: int) -> bytes:  # noqa: D102
        try:
            if self._bus is None:
                self._bus = I2CBus(self.number)
            return self._bus.read_block(address, register, length)
        except SensorError:
            self._bus = None
            raise

    def write_byte(self, address: int, register: int, value: int) -> None:  # noqa: D102
        try:
            if self._bus is None:
                self._bus = I2CBus(self.number)
            self._bus.write_byte(address, register, value)
        except SensorError:
            self._bus = None
            raise
