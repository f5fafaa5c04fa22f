"""Readings as three growing columns, and their binary COPY encoding.

The hot path appends three numbers per reading to typed arrays (no object per reading); the
batch is encoded for ``COPY ... (FORMAT BINARY)`` in one vectorised numpy step and handed to
detection as contiguous arrays.
"""

from __future__ import annotations

from array import array

import numpy as np
from numpy.typing import NDArray

from edge.timestamps import PG_EPOCH_US
from processing.hook import ReadingColumns

_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_TRAILER = b"\xff\xff"
_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("len_ts", ">i4"),
        ("ts", ">i8"),
        ("len_id", ">i4"),
        ("stream_id", ">i4"),
        ("len_value", ">i4"),
        ("value", ">f8"),
    ]
)


class Columns:
    """Stream id, timestamp (µs since the Unix epoch) and value of many readings.

    Examples:
        >>> columns = Columns()
        >>> columns.append(7, 1_000_000, 12.5)
        >>> len(columns), columns.slice(0, 1).values.tolist()
        (1, [12.5])
    """

    __slots__ = ("stream_ids", "ts_us", "values")

    def __init__(self) -> None:
        self.stream_ids = array("i")
        self.ts_us = array("q")
        self.values = array("d")

    def __len__(self) -> int:
        return len(self.values)

    def append(self, stream_id: int, ts_us: int, value: float) -> None:
        """Add one reading."""
        self.stream_ids.append(stream_id)
        self.ts_us.append(ts_us)
        self.values.append(value)

    def extend(self, other: Columns) -> None:
        """Add every reading of ``other``."""
        self.stream_ids.extend(other.stream_ids)
        self.ts_us.extend(other.ts_us)
        self.values.extend(other.values)

    def slice(self, start: int, stop: int) -> Columns:
        """The readings ``start:stop`` as a new :class:`Columns`."""
        part = Columns()
        part.stream_ids = self.stream_ids[start:stop]
        part.ts_us = self.ts_us[start:stop]
        part.values = self.values[start:stop]
        return part

    def arrays(self) -> ReadingColumns:
        """The columns as numpy arrays (sharing memory, no copy)."""
        return ReadingColumns(
            np.frombuffer(self.stream_ids, dtype=np.int32),
            np.frombuffer(self.ts_us, dtype=np.int64),
            np.frombuffer(self.values, dtype=np.float64),
        )

    def copy_buffer(self) -> bytes:
        """The readings as a complete ``COPY readings (ts, stream_id, value)`` binary stream."""
        return encode_copy(self.arrays())


def encode_copy(columns: ReadingColumns) -> bytes:
    """Readings as a ``COPY readings (ts, stream_id, value) ... (FORMAT BINARY)`` stream."""
    rows = np.empty(len(columns), dtype=_ROW)
    rows["fields"] = 3
    rows["len_ts"], rows["len_id"], rows["len_value"] = 8, 4, 8
    rows["ts"] = columns.ts_us - PG_EPOCH_US
    rows["stream_id"] = columns.stream_ids
    rows["value"] = columns.values
    return _HEADER + rows.tobytes() + _TRAILER


def newest_per_stream(
    columns: ReadingColumns,
) -> tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.float64]]:
    """The newest reading of each stream in ``columns``: (stream_ids, ts_us, values).

    Examples:
        >>> c = Columns()
        >>> for sid, ts, v in [(1, 5, 1.0), (2, 1, 2.0), (1, 9, 3.0), (1, 7, 4.0)]:
        ...     c.append(sid, ts, v)
        >>> [a.tolist() for a in newest_per_stream(c.arrays())]
        [[1, 2], [9, 1], [3.0, 2.0]]
    """
    if len(columns) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty.astype(np.int32), empty, empty.astype(np.float64)
    order = np.lexsort((columns.ts_us, columns.stream_ids))
    ids = columns.stream_ids[order]
    last = np.append(ids[1:] != ids[:-1], True)
    picked = order[last]
    return columns.stream_ids[picked], columns.ts_us[picked], columns.values[picked]
