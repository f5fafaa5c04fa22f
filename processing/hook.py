"""The detection hook ingest calls inline with every committed batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class ReadingColumns:
    """A committed batch as contiguous columns, one element per reading, in arrival order.

    Attributes:
        stream_ids: ``streams.stream_id`` of each reading (int32).
        ts_us: Acquisition time in microseconds since the Unix epoch (int64).
        values: The measured values (float64).
    """

    stream_ids: NDArray[np.int32]
    ts_us: NDArray[np.int64]
    values: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.values.size)


BatchHook = Callable[[ReadingColumns], None]


def no_detection(batch: ReadingColumns) -> None:
    """The hook when no detectors are configured: costs nothing, changes nothing."""
