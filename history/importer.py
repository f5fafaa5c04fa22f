"""Backfill from CSV: the columns ``smartcity export`` writes for raw readings, read back.

Required columns: ``ts`` (ISO-8601 with a zone), ``device``, ``sensor``, ``metric``, ``unit`` and
``value``; others (``site``, ``stream_id``) are ignored. Devices must be registered. Each chunk
is one transaction: readings go through a staging table with ``ON CONFLICT DO NOTHING`` (an
import run twice stores nothing twice) and their minutes are marked for the rollups. A bad line
is reported with its number and reason, and every good line is still imported.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import psycopg

from edge.timestamps import to_us
from history.errors import HistoryError
from ingest import rollups
from ingest.columns import Columns

REQUIRED: Final = ("ts", "device", "sensor", "metric", "unit", "value")
CHUNK_ROWS: Final = 50_000


class BackfillError(HistoryError, ValueError):
    """The file cannot be imported at all (unreadable, or the wrong columns)."""


@dataclass(slots=True)
class Imported:
    """What an import did."""

    inserted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def import_csv(
    conn: psycopg.Connection[tuple[object, ...]],
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> Imported:
    """Import ``path``; ``progress`` gets the lines read so far."""
    result = Imported()
    devices = {str(r[0]) for r in conn.execute("SELECT device_id FROM devices").fetchall()}
    streams: dict[tuple[str, str, str], int] = {}
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS readings_import (LIKE readings) ON COMMIT DELETE ROWS"
    )
    conn.commit()
    lines = 1
    for chunk in _chunks(path, result, devices):
        wanted = {(d, s, m): u for _, d, s, m, u, _ in chunk if (d, s, m) not in streams}
        if wanted:
            streams.update(_streams(conn, wanted))
        columns = Columns()
        for _, device, sensor, metric, _, (ts_us, value) in chunk:
            columns.append(streams[(device, sensor, metric)], ts_us, value)
        stored = _store(conn, columns)
        result.inserted += stored
        result.duplicates += len(columns) - stored
        lines = chunk[-1][0]
        if progress is not None:
            progress(lines)
    return result


_Row = tuple[int, str, str, str, str, tuple[int, float]]


def _chunks(path: Path, result: Imported, devices: set[str]) -> Iterator[list[_Row]]:
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115  # closed below
    except OSError as exc:
        raise BackfillError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise BackfillError(f"{path}: missing column(s) {', '.join(missing)}")
        chunk: list[_Row] = []
        for row in reader:
            line = reader.line_num
            parsed = _parse(row, devices)
            if isinstance(parsed, str):
                result.rejected.append((line, parsed))
                continue
            chunk.append((line, row["device"], row["sensor"], row["metric"], row["unit"], parsed))
            if len(chunk) >= CHUNK_ROWS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _parse(row: dict[str, str | None], devices: set[str]) -> tuple[int, float] | str:  # noqa: PLR0911
    """(µs, value), or why the line is refused."""
    if any(row.get(c) in (None, "") for c in REQUIRED):
        return "a required field is empty"
    try:
        ts = datetime.fromisoformat(str(row["ts"]))
    except ValueError:
        return f"ts {row['ts']!r} is not an ISO-8601 time"
    if ts.tzinfo is None:
        return f"ts {row['ts']!r} has no time zone"
    try:
        value = float(str(row["value"]))
    except ValueError:
        return f"value {row['value']!r} is not a number"
    if not math.isfinite(value):
        return f"value {row['value']!r} is not finite"
    if row["device"] not in devices:
        return f"device {row['device']!r} is not registered"
    return to_us(ts), value


def _streams(
    conn: psycopg.Connection[tuple[object, ...]], wanted: dict[tuple[str, str, str], str]
) -> dict[tuple[str, str, str], int]:
    keys = list(wanted)
    with conn.transaction():
        conn.execute(
            "INSERT INTO streams (device_id, sensor, metric, unit)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
            " ON CONFLICT (device_id, sensor, metric) DO NOTHING",
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                list(wanted.values()),
            ),
        )
        rows = conn.execute(
            "SELECT device_id, sensor, metric, stream_id FROM streams"
            " WHERE (device_id, sensor, metric) IN"
            " (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
        ).fetchall()
    return {(str(d), str(s), str(m)): int(str(i)) for d, s, m, i in rows}


def _store(conn: psycopg.Connection[tuple[object, ...]], columns: Columns) -> int:
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(
            "COPY readings_import (ts, stream_id, value) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(columns.copy_buffer())
        cur.execute(
            "INSERT INTO readings (ts, stream_id, value) SELECT ts, stream_id, value"
            " FROM readings_import ON CONFLICT DO NOTHING"
        )
        stored = cur.rowcount
        # The minutes it wrote, for the rollups, in the same transaction (as ingest does).
        cur.execute(rollups.MARK_DIRTY, (rollups.dirty_minutes(columns.arrays().ts_us),))
    return stored
