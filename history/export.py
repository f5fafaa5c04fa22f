"""Streaming export of raw readings or rollups to CSV or Parquet, with no row cap.

PostgreSQL sends the rows with ``COPY ... TO STDOUT (FORMAT BINARY)``; each chunk is decoded
with numpy (every column is fixed-width), labelled with its device, sensor, metric and site
(dictionary-encoded, from the small ``streams`` table) and written by pyarrow as it arrives, so
memory stays flat however many rows there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg import sql

from ingest.columns import PG_EPOCH_US

Resolution = Literal["raw", "1m", "1h", "1d"]
Format = Literal["csv", "parquet"]
RESOLUTIONS: Final[tuple[Resolution, ...]] = ("raw", "1m", "1h", "1d")

_SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00"
# (column, PostgreSQL expression, numpy type of its binary form)
_RAW: Final = (("ts", "ts", ">i8"), ("stream_id", "stream_id", ">i4"), ("value", "value", ">f8"))
_ROLLUP: Final = (
    ("bucket", "bucket", ">i8"),
    ("stream_id", "stream_id", ">i4"),
    ("n", "n", ">i8"),
    ("mean", "total / n", ">f8"),
    ("low", "low", ">f8"),
    ("high", "high", ">f8"),
    ("last_value", "last_value", ">f8"),
)
_TABLES: Final = {"raw": "readings", "1m": "rollup_1m", "1h": "rollup_1h", "1d": "rollup_1d"}


class ExportError(ValueError):
    """An export that cannot be made as asked."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which rows: a time range and optional filters (None: all)."""

    start: datetime
    end: datetime
    resolution: Resolution = "raw"
    sites: Sequence[str] | None = None
    devices: Sequence[str] | None = None
    metrics: Sequence[str] | None = None

    def check(self) -> None:
        """Refuse a selection that cannot be answered."""
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ExportError("start and end need a time zone (e.g. 2026-11-23T00:00Z)")
        if self.end <= self.start:
            raise ExportError("end must come after start")
        if self.resolution not in RESOLUTIONS:
            raise ExportError(f"resolution must be one of {', '.join(RESOLUTIONS)}")


def _columns(selection: Selection) -> tuple[tuple[str, str, str], ...]:
    return _RAW if selection.resolution == "raw" else _ROLLUP


def _where(selection: Selection) -> tuple[sql.Composable, dict[str, object]]:
    time = sql.Identifier(_columns(selection)[0][1])
    clause = sql.SQL(
        "{time} >= %(start)s AND {time} < %(end)s AND stream_id IN ("
        " SELECT s.stream_id FROM streams s JOIN devices d USING (device_id)"
        " WHERE (%(sites)s::text[] IS NULL OR d.site = ANY(%(sites)s))"
        " AND (%(devices)s::text[] IS NULL OR d.device_id = ANY(%(devices)s))"
        " AND (%(metrics)s::text[] IS NULL OR s.metric = ANY(%(metrics)s)))"
    ).format(time=time)
    params: dict[str, object] = {
        "start": selection.start,
        "end": selection.end,
        "sites": list(selection.sites) if selection.sites is not None else None,
        "devices": list(selection.devices) if selection.devices is not None else None,
        "metrics": list(selection.metrics) if selection.metrics is not None else None,
    }
    return clause, params


def count(conn: psycopg.Connection[tuple[object, ...]], selection: Selection) -> int:
    """How many rows :func:`export` will write (for a progress bar)."""
    selection.check()
    where, params = _where(selection)
    query = (
        sql.SQL("SELECT count(*) FROM {} WHERE ").format(
            sql.Identifier(_TABLES[selection.resolution])
        )
        + where
    )
    row = conn.execute(query, params).fetchone()
    return int(str(row[0])) if row else 0


def _labels(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, np.ndarray]:
    rows = conn.execute(
        "SELECT s.stream_id, s.device_id, d.site, s.sensor, s.metric, s.unit"
        " FROM streams s JOIN devices d USING (device_id) ORDER BY s.stream_id"
    ).fetchall()
    size = max((int(str(r[0])) for r in rows), default=0) + 1
    labels = {
        name: np.full(size, "", dtype=object)
        for name in ("device", "site", "sensor", "metric", "unit")
    }
    for stream_id, *texts in rows:
        for name, text in zip(("device", "site", "sensor", "metric", "unit"), texts, strict=True):
            labels[name][int(str(stream_id))] = str(text)
    return labels


def _record_batches(
    conn: psycopg.Connection[tuple[object, ...]], selection: Selection
) -> Iterator[pa.RecordBatch]:
    columns = _columns(selection)
    dtype = np.dtype(
        [("fields", ">i2")]
        + [item for name, _, kind in columns for item in ((f"len_{name}", ">i4"), (name, kind))]
    )
    where, params = _where(selection)
    select = (
        sql.SQL("SELECT {} FROM {} WHERE ").format(
            sql.SQL(", ").join(sql.SQL(expression) for _, expression, _ in columns),
            sql.Identifier(_TABLES[selection.resolution]),
        )
        + where
        + sql.SQL(" ORDER BY 1, 2")
    )
    query = sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(select)
    labels = _labels(conn)
    with conn.cursor() as cur:
        yield from _decoded(cur, query, params, (dtype, columns), labels)


_BLOCK_BYTES: Final = 8 << 20  # decode and write in blocks of about 8 MB


def _decoded(
    cur: psycopg.Cursor[tuple[object, ...]],
    query: sql.Composed,
    params: dict[str, object],
    layout: tuple[np.dtype, tuple[tuple[str, str, str], ...]],
    labels: dict[str, np.ndarray],
) -> Iterator[pa.RecordBatch]:
    dtype, columns = layout
    # libpq hands COPY data over about a row at a time: gather blocks before decoding.
    parts: list[bytes] = []
    size = 0
    leftover = b""
    header_done = False
    with cur.copy(query, params) as copy:
        for chunk in copy:
            parts.append(bytes(chunk))
            size += len(chunk)
            if size < _BLOCK_BYTES:
                continue
            block, leftover, header_done = _take_rows(
                leftover + b"".join(parts), dtype, header_done
            )
            parts, size = [], 0
            if block is not None:
                yield _batch(block, columns, labels)
    block, _, _ = _take_rows(leftover + b"".join(parts), dtype, header_done)
    if block is not None:
        yield _batch(block, columns, labels)


def _take_rows(
    data: bytes, dtype: np.dtype, header_done: bool
) -> tuple[np.ndarray | None, bytes, bool]:
    """The complete rows in ``data``, what is left of it, and whether the header is past."""
    if not header_done:
        if len(data) < 19:
            return None, data, False
        if not data.startswith(_SIGNATURE):
            raise ExportError("unexpected COPY stream from the server")
        data = data[19 + int.from_bytes(data[15:19], "big") :]
    # Complete rows only; the 2-byte trailer, shorter than any row, is never decoded.
    whole = len(data) // dtype.itemsize
    if whole == 0:
        return None, data, True
    rows = np.frombuffer(data, dtype=dtype, count=whole)
    return rows, data[whole * dtype.itemsize :], True


def _batch(
    rows: np.ndarray, columns: tuple[tuple[str, str, str], ...], labels: dict[str, np.ndarray]
) -> pa.RecordBatch:
    time_name = columns[0][0]
    micros = rows[time_name].astype(np.int64) + PG_EPOCH_US
    stream_ids = rows["stream_id"].astype(np.int32)
    arrays: dict[str, pa.Array] = {
        time_name: pa.array(micros, type=pa.timestamp("us", tz="UTC")),
    }
    # A stream created after the labels were read (during a long export) has none: its rows
    # still go out, with their stream_id, and empty labels.
    known = labels["device"].size
    indices = pa.array(np.where(stream_ids < known, stream_ids, known))
    for name in ("device", "site", "sensor", "metric", "unit"):
        dictionary = pa.array([*labels[name].tolist(), ""], type=pa.string())
        arrays[name] = pa.DictionaryArray.from_arrays(indices, dictionary)
    for name, _, kind in columns[1:]:
        arrays[name] = pa.array(rows[name].astype(np.dtype(kind).newbyteorder("=")))
    return pa.RecordBatch.from_pydict(arrays)


def export(
    conn: psycopg.Connection[tuple[object, ...]],
    selection: Selection,
    path: Path,
    *,
    file_format: Format,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the selected rows to ``path``; returns how many. ``progress`` gets rows so far."""
    selection.check()
    if file_format not in ("csv", "parquet"):
        raise ExportError("format must be csv or parquet")
    written = 0
    writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
    try:
        for batch in _record_batches(conn, selection):
            if writer is None:
                if file_format == "parquet":
                    writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
                else:
                    writer = pa_csv.CSVWriter(path, _plain(batch).schema)
            writer.write_batch(batch if file_format == "parquet" else _plain(batch))
            written += batch.num_rows
            if progress is not None:
                progress(written)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # nothing selected: still a valid, empty file
        _write_empty(path, selection, file_format)
    return written


def _plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    # CSV has no dictionaries: the labels go out as text.
    return pa.RecordBatch.from_arrays(
        [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns],
        names=batch.schema.names,
    )


def _write_empty(path: Path, selection: Selection, file_format: Format) -> None:
    columns = _columns(selection)
    fields = [pa.field(columns[0][0], pa.timestamp("us", tz="UTC"))]
    fields += [
        pa.field(name, pa.string()) for name in ("device", "site", "sensor", "metric", "unit")
    ]
    fields += [
        pa.field(name, pa.from_numpy_dtype(np.dtype(kind).newbyteorder("=")))
        for name, _, kind in columns[1:]
    ]
    table = pa.Table.from_pylist([], schema=pa.schema(fields))
    if file_format == "parquet":
        pq.write_table(table, path)
    else:
        pa_csv.write_csv(table, path)
