"""Fake serial ports and I2C buses fed with recorded or synthetic bytes."""

from __future__ import annotations

from collections.abc import Callable


class FakePort:
    """A serial port whose incoming bytes are scripted; writes are recorded.

    ``respond`` maps a written command to bytes the device then sends (like a real sensor
    answering a trigger).
    """

    def __init__(
        self, incoming: bytes = b"", respond: Callable[[bytes], bytes] | None = None
    ) -> None:
        self.incoming = bytearray(incoming)
        self.written: list[bytes] = []
        self.flushes = 0
        self._respond = respond

    def feed(self, data: bytes) -> None:
        self.incoming += data

    def read(self, size: int, timeout: float) -> bytes:
        chunk = bytes(self.incoming[:size])
        del self.incoming[:size]
        return chunk

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self._respond is not None:
            self.incoming += self._respond(data)

    def flush_input(self) -> None:
        self.flushes += 1  # stale bytes stay: the scripts put the fresh ones in already

    def close(self) -> None:
        pass


class FakeBus:
    """An I2C device's register file."""

    def __init__(self, registers: dict[int, int], busy_reads: int = 0) -> None:
        self.registers = dict(registers)
        self.writes: list[tuple[int, int]] = []
        self.busy_reads = busy_reads  # status reads that still say "measuring"

    def load(self, start: int, data: bytes) -> None:
        for offset, byte in enumerate(data):
            self.registers[start + offset] = byte

    def read_block(self, address: int, register: int, length: int) -> bytes:
        if register == 0xF3 and self.busy_reads:
            self.busy_reads -= 1
            return b"\x08"
        return bytes(self.registers.get(register + i, 0) for i in range(length))

    def write_byte(self, address: int, register: int, value: int) -> None:
        self.writes.append((register, value))
