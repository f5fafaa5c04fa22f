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
from typing import Final, Literal, Protocol

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg import sql

from edge.timestamps import PG_EPOCH_US
from history.errors import HistoryError

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


class ExportError(HistoryError, ValueError):
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
    # Keyset bounds for paging: rows from (time, stream_id) ``first`` on, before ``stop``.
    first: tuple[datetime, int] | None = None
    stop: tuple[datetime, int] | None = None

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
    for name, key, operator in (("first", selection.first, ">="), ("stop", selection.stop, "<")):
        if key is not None:
            clause += sql.SQL(" AND ({time}, stream_id) {op} (%({t})s, %({s})s)").format(
                time=time, op=sql.SQL(operator), t=sql.SQL(f"{name}_ts"), s=sql.SQL(f"{name}_id")
            )
            params[f"{name}_ts"], params[f"{name}_id"] = key
    return clause, params


def count(conn: psycopg.Connection[tuple[object, ...]], selection: Selection) -> int:
    """How many rows :func:`export` will write (for a progress bar)."""
    selection.check()
    row = conn.execute(_select(selection, sql.SQL("count(*)")), _where(selection)[1]).fetchone()
    return int(str(row[0])) if row else 0


LABELS_QUERY: Final = (
    "SELECT s.stream_id, s.device_id, d.site, s.sensor, s.metric, s.unit"
    " FROM streams s JOIN devices d USING (device_id) ORDER BY s.stream_id"
)
_LABEL_NAMES: Final = ("device", "site", "sensor", "metric", "unit")


def labels_from(rows: Sequence[Sequence[object]]) -> dict[str, np.ndarray]:
    """Per label, an array indexed by stream_id, from the rows of :data:`LABELS_QUERY`."""
    size = max((int(str(r[0])) for r in rows), default=0) + 1
    labels = {name: np.full(size, "", dtype=object) for name in _LABEL_NAMES}
    for stream_id, *texts in rows:
        for name, text in zip(_LABEL_NAMES, texts, strict=True):
            labels[name][int(str(stream_id))] = str(text)
    return labels


def _select(selection: Selection, expressions: sql.Composable) -> sql.Composed:
    where, _ = _where(selection)
    return (
        sql.SQL("SELECT {} FROM {} WHERE ").format(
            expressions, sql.Identifier(_TABLES[selection.resolution])
        )
        + where
    )


def copy_query(selection: Selection) -> tuple[sql.Composed, dict[str, object]]:
    """``COPY (the selection in key order) TO STDOUT (FORMAT BINARY)`` and its parameters."""
    selection.check()
    expressions = sql.SQL(", ").join(sql.SQL(e) for _, e, _ in _columns(selection))
    select = _select(selection, expressions) + sql.SQL(" ORDER BY 1, 2")
    return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(select), _where(selection)[1]


def probe_query(selection: Selection) -> tuple[sql.Composed, dict[str, object]]:
    """The selection with ``LIMIT 0``: the server checks every parameter, reads nothing.

    A stream cannot turn an error into a status once it has started; this runs before.
    """
    selection.check()
    return _select(selection, sql.SQL("1")) + sql.SQL(" LIMIT 0"), _where(selection)[1]


def page_end_query(selection: Selection, size: int) -> tuple[sql.Composed, dict[str, object]]:
    """The key (time, stream_id) of the first row after a page of ``size`` rows, if any.

    A page is then the selection with ``stop`` at that key, and the next page starts there.
    """
    selection.check()
    time = sql.SQL(_columns(selection)[0][1])
    keys = sql.SQL("{}, stream_id").format(time)
    query = _select(selection, keys) + sql.SQL(" ORDER BY 1, 2 OFFSET %(page_size)s LIMIT 1")
    return query, {**_where(selection)[1], "page_size": size}


_BLOCK_BYTES: Final = 8 << 20  # decode and write in blocks of about 8 MB


class Decoder:
    """Binary COPY data in, labelled Arrow record batches out, a block of about 8 MB at a time.

    It only decodes; whoever reads the COPY stream (sync or async) feeds it the chunks.
    """

    def __init__(self, selection: Selection, labels: dict[str, np.ndarray]) -> None:
        self._columns = _columns(selection)
        self._dtype = np.dtype(
            [("fields", ">i2")]
            + [
                item
                for name, _, kind in self._columns
                for item in ((f"len_{name}", ">i4"), (name, kind))
            ]
        )
        self._labels = labels
        # libpq hands COPY data over about a row at a time: gather blocks before decoding.
        self._parts: list[bytes] = []
        self._size = 0
        self._leftover = b""
        self._header_done = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> pa.RecordBatch | None:
        """Take a chunk; return a batch once a block has gathered."""
        self._parts.append(bytes(chunk))
        self._size += len(chunk)
        return self._block() if self._size >= _BLOCK_BYTES else None

    def finish(self) -> pa.RecordBatch | None:
        """The rows still gathered, at the end of the stream."""
        return self._block()

    def _block(self) -> pa.RecordBatch | None:
        data = self._leftover + b"".join(self._parts)
        self._parts, self._size = [], 0
        rows, self._leftover, self._header_done = _take_rows(data, self._dtype, self._header_done)
        return None if rows is None else _batch(rows, self._columns, self._labels)


def record_batches(
    conn: psycopg.Connection[tuple[object, ...]], selection: Selection
) -> Iterator[pa.RecordBatch]:
    """The selection as labelled record batches of about 8 MB, read by binary COPY."""
    query, params = copy_query(selection)
    decoder = Decoder(selection, labels_from(conn.execute(LABELS_QUERY).fetchall()))
    with conn.cursor() as cur, cur.copy(query, params) as copy:
        for chunk in copy:
            batch = decoder.feed(chunk)
            if batch is not None:
                yield batch
    batch = decoder.finish()
    if batch is not None:
        yield batch


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


class Sink(Protocol):
    """Where an encoder writes: a file, or a buffer an HTTP response drains."""

    def write(self, data: bytes, /) -> int:
        """Take ``data``; return how many bytes were taken."""


class Encoder:
    """Record batches in, a CSV or Parquet file out, written to ``sink`` as they come.

    ``sink`` is anything with ``write(bytes)``: an open file, or a buffer an HTTP response
    drains after each batch.
    """

    def __init__(self, sink: Sink, selection: Selection, file_format: Format) -> None:
        if file_format not in ("csv", "parquet"):
            raise ExportError("format must be csv or parquet")
        self._sink = sink
        self._selection = selection
        self._format = file_format
        self._writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Write one batch."""
        if self._format == "csv":
            batch = _plain(batch)  # CSV has no dictionaries: the labels go out as text
        if self._writer is None:
            if self._format == "parquet":
                self._writer = pq.ParquetWriter(self._sink, batch.schema, compression="zstd")
            else:
                self._writer = pa_csv.CSVWriter(self._sink, batch.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        """Finish the file (an empty selection still makes a valid file with its columns)."""
        if self._writer is not None:
            self._writer.close()
            return
        table = pa.Table.from_pylist([], schema=_empty_schema(self._selection))
        if self._format == "parquet":
            pq.write_table(table, self._sink)
        else:
            pa_csv.write_csv(table, self._sink)


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
    with path.open("wb") as sink:
        encoder = Encoder(sink, selection, file_format)
        for batch in record_batches(conn, selection):
            encoder.add(batch)
            if progress is not None:
                progress(encoder.rows)
        encoder.close()
    return encoder.rows


def _plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns],
        names=batch.schema.names,
    )


def _empty_schema(selection: Selection) -> pa.Schema:
    columns = _columns(selection)
    fields = [pa.field(columns[0][0], pa.timestamp("us", tz="UTC"))]
    fields += [pa.field(name, pa.string()) for name in _LABEL_NAMES]
    fields += [
        pa.field(name, pa.from_numpy_dtype(np.dtype(kind).newbyteorder("=")))
        for name, _, kind in columns[1:]
    ]
    return pa.schema(fields)
