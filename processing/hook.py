"""The detection hook ingest calls inline with every committed batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol


class ReadingRow(Protocol):
    """What detection needs from a stored reading."""

    @property
    def device(self) -> str: ...  # noqa: D102

    @property
    def sensor(self) -> str: ...  # noqa: D102

    @property
    def metric(self) -> str: ...  # noqa: D102

    @property
    def ts(self) -> datetime: ...  # noqa: D102

    @property
    def value(self) -> float: ...  # noqa: D102


BatchHook = Callable[[Sequence[ReadingRow]], None]


def no_detection(rows: Sequence[ReadingRow]) -> None:
    """The hook when no detectors are configured: costs nothing, changes nothing."""
