"""The interface every sensor driver implements."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from edge.contract import Reading
from edge.errors import EdgeError


class SensorError(EdgeError):
    """A driver could not produce a reading this time (timeout, bad frame, bus error).

    The agent reports it in the device status and tries again later; other sensors carry on.
    """


@runtime_checkable
class Sensor(Protocol):
    """A source of readings.

    Attributes:
        name: The sensor's id on its device; becomes :attr:`Reading.sensor`.
    """

    name: str

    def read(self, now: datetime) -> list[Reading]:
        """Take one sample of every metric this sensor measures, stamped ``now``.

        Raises:
            SensorError: The hardware did not answer with a valid sample.
        """
        ...


@runtime_checkable
class DutyCycled(Protocol):
    """A sensor that should sleep between samples (laser and fan wear, power).

    The agent calls :meth:`wake` ``warmup_s`` before a sample and :meth:`sleep` after it, when
    the sampling interval leaves room for that.
    """

    warmup_s: float

    def wake(self) -> None:
        """Start warming up."""
        ...

    def sleep(self) -> None:
        """Stop until the next wake."""
        ...
