"""Detection's feed of committed batches: the partition of a site, and the rows ingest writes.

Every stream of a site is in one partition, so the detectors that compare neighbours see the whole
site on one worker. Ingest writes a committed batch's readings as one ``detection_feed`` row per
partition, in the batch's own transaction (migration 010); the partition's owner reads them back
in order (:mod:`processing.partitioned`). The columns travel as raw little-endian arrays: no
per-reading encoding on either side.

Examples:
    >>> import numpy as np
    >>> batch = ReadingColumns(
    ...     np.array([3, 4, 3], np.int32), np.array([10, 20, 30], np.int64), np.array([1.0, 2, 3])
    ... )
    >>> rows = feed_rows(batch, np.array([5, 1, 5], np.int16))
    >>> [(partition, decode(*blobs).ts_us.tolist()) for partition, *blobs in rows]
    [(1, [20]), (5, [10, 30])]
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Final

import numpy as np
from numpy.typing import NDArray

from processing.hook import ReadingColumns

PARTITIONS: Final = 16  # the rows of detection_partitions that migration 010 creates
INSERT_FEED: Final = (
    "INSERT INTO detection_feed (partition, stream_ids, ts_us, vals) VALUES (%s, %s, %s, %s)"
)
_IDS, _TS, _VALUES = np.dtype("<i4"), np.dtype("<i8"), np.dtype("<f8")

FeedRow = tuple[int, bytes, bytes, bytes]


def partition_of(site: str) -> int:
    """The partition of every stream of ``site`` (stable across processes and versions)."""
    return zlib.crc32(site.encode()) % PARTITIONS


class PartitionMap:
    """Stream id to partition, as ingest learns which site each stream is at.

    Examples:
        >>> streams = PartitionMap()
        >>> streams.assign([2, 7], "north")
        >>> streams.of(np.array([7, 2], np.int32)).tolist() == [partition_of("north")] * 2
        True
    """

    def __init__(self) -> None:
        self._of = np.zeros(1024, dtype=np.int16)

    def assign(self, stream_ids: Iterable[int], site: str) -> None:
        """Place these streams in ``site``'s partition (again, when their device moved)."""
        ids = np.fromiter(stream_ids, dtype=np.int64)
        if ids.size == 0:
            return
        top = int(ids.max()) + 1
        if top > self._of.size:
            self._of = np.resize(self._of, max(top, 2 * self._of.size))
        self._of[ids] = partition_of(site)

    def of(self, stream_ids: NDArray[np.int32]) -> NDArray[np.int16]:
        """The partition of each reading's stream."""
        return self._of[stream_ids]


def feed_rows(batch: ReadingColumns, partitions: NDArray[np.int16]) -> list[FeedRow]:
    """One row per partition present, each keeping its readings in the batch's order."""
    order = np.argsort(partitions, kind="stable")
    present, starts = np.unique(partitions[order], return_index=True)
    bounds = [*starts.tolist(), order.size]
    rows: list[FeedRow] = []
    for i, partition in enumerate(present.tolist()):
        take = order[bounds[i] : bounds[i + 1]]
        rows.append(
            (
                int(partition),
                batch.stream_ids[take].astype(_IDS).tobytes(),
                batch.ts_us[take].astype(_TS).tobytes(),
                batch.values[take].astype(_VALUES).tobytes(),
            )
        )
    return rows


def in_time_order(parts: list[ReadingColumns]) -> ReadingColumns:
    """Feed rows merged by acquisition time (stable: a stream's ties keep their commit order).

    Examples:
        >>> a = ReadingColumns(np.array([1, 1], np.int32), np.array([10, 30]), np.array([1.0, 3]))
        >>> b = ReadingColumns(np.array([1], np.int32), np.array([20]), np.array([2.0]))
        >>> in_time_order([a, b]).values.tolist()
        [1.0, 2.0, 3.0]
    """
    if len(parts) == 1:
        return parts[0]
    ts_us = np.concatenate([p.ts_us for p in parts])
    order = np.argsort(ts_us, kind="stable")
    return ReadingColumns(
        np.concatenate([p.stream_ids for p in parts])[order],
        ts_us[order],
        np.concatenate([p.values for p in parts])[order],
    )


def decode(stream_ids: bytes, ts_us: bytes, values: bytes) -> ReadingColumns:
    """The readings of one feed row, as the detectors take them."""
    return ReadingColumns(
        np.frombuffer(stream_ids, dtype=_IDS).astype(np.int32),
        np.frombuffer(ts_us, dtype=_TS).astype(np.int64),
        np.frombuffer(values, dtype=_VALUES).astype(np.float64),
    )
