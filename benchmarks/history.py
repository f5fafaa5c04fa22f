"""History queries with and without rollups, and Parquet export, on generated minute data.

    python benchmarks/history.py                 # 1 year of minute data for 200 sensors (105M rows)
    python benchmarks/history.py --days 30       # quicker, same queries
    python benchmarks/history.py --json          # one JSON object

Starts its own PostgreSQL + TimescaleDB (as the test suite does), generates one reading a
minute per sensor (200 sensors in 10 districts of 20), builds the rollups, then measures, as
medians of ``--repeat`` runs:

1. ``district_year_hourly_ms``: hourly means over the whole range for one district, through
   ``history.query.aggregate`` (which reads the 1-hour rollups);
2. ``district_year_raw_ms``: the same answer computed from the raw readings, the simplest
   alternative;
3. ``sensor_day_raw_ms``: one day of raw readings for one sensor;
4. ``parquet_rows_per_s``: ``history.export`` of ``--export-rows`` raw rows to a Parquet file;
5. ``api_parquet_rows_per_s``: the same rows streamed as Parquet by the planner API (the real
   server on loopback, read by an HTTP client as it arrives).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from history.export import Selection, export  # noqa: E402
from history.query import aggregate  # noqa: E402
from ingest.schema import migrate  # noqa: E402
from tests.api.city import serving  # noqa: E402
from tests.services.postgres import PostgresServer, create_database, replace_dbname  # noqa: E402

END = datetime(2026, 11, 1, tzinfo=UTC)
DISTRICTS = 10
PER_DISTRICT = 20

RAW_HOURLY = """
SELECT date_bin('1 hour', r.ts, %(start)s) AS slot, avg(r.value)
FROM readings r JOIN streams s USING (stream_id) JOIN devices d USING (device_id)
WHERE d.site = %(site)s AND r.ts >= %(start)s AND r.ts < %(end)s
GROUP BY 1 ORDER BY 1
"""
SENSOR_DAY = (
    "SELECT ts, value FROM readings WHERE stream_id = %s AND ts >= %s AND ts < %s ORDER BY ts"
)


def log(message: str) -> None:
    print(f"[history] {message}", file=sys.stderr, flush=True)


def generate(dsn: str, start: datetime) -> int:
    """Devices, streams, a reading a minute per sensor, and every rollup level."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, site, family)"
            " SELECT 'aq-' || lpad(g::text, 4, '0'), 'district-' || ((g - 1) / %s), 'air'"
            " FROM generate_series(1, %s) g",
            (PER_DISTRICT, DISTRICTS * PER_DISTRICT),
        )
        conn.execute(
            "INSERT INTO streams (device_id, sensor, metric, unit)"
            " SELECT device_id, 'aq', 'pm2_5', 'ug/m3' FROM devices ORDER BY device_id"
        )
        conn.commit()
        day = start
        while day < END:  # a day at a time: steady memory, and a visible pace
            conn.execute(
                "INSERT INTO readings (ts, stream_id, value)"
                " SELECT t, s.stream_id,"
                "   12 + 6 * sin(extract(epoch FROM t) / 13751) + (s.stream_id %% 7)"
                " FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute',"
                "   interval '1 minute') t, streams s",
                (day, min(day + timedelta(days=1), END)),
            )
            conn.commit()
            day += timedelta(days=1)
        log("readings written; building rollups")
        for table, unit, source in (
            ("rollup_1m", "minute", None),
            ("rollup_1h", "hour", "rollup_1m"),
            ("rollup_1d", "day", "rollup_1h"),
        ):
            if source is None:
                conn.execute(
                    f"INSERT INTO {table} SELECT stream_id, date_trunc(%s, ts, 'UTC'), count(*),"  # noqa: S608
                    " sum(value), min(value), max(value), max(ts),"
                    " (array_agg(value ORDER BY ts DESC))[1] FROM readings GROUP BY 1, 2",
                    (unit,),
                )
            else:
                conn.execute(
                    f"INSERT INTO {table} SELECT stream_id, date_trunc(%s, bucket, 'UTC'), sum(n),"  # noqa: S608
                    " sum(total), min(low), max(high), max(last_ts),"
                    f" (array_agg(last_value ORDER BY last_ts DESC))[1] FROM {source} GROUP BY 1, 2",
                    (unit,),
                )
            conn.commit()
        conn.execute("ANALYZE")
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(str(row[0])) if row else 0


def timed(run: Callable[[], object], repeat: int) -> float:
    laps = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        laps.append(time.perf_counter() - started)
    return statistics.median(laps) * 1000


def api_export_seconds(dsn: str, selection: Selection) -> float:
    """Seconds for the planner API to stream ``selection`` as Parquet to an HTTP client."""
    with serving(dsn) as city:
        params = {"start": selection.start.isoformat(), "end": selection.end.isoformat(),
                  "format": "parquet"}  # fmt: skip
        began = time.perf_counter()
        size = 0
        with httpx.stream("GET", f"{city.url}/v1/export", params=params,
                          headers=city.auth("planner"), timeout=600) as response:  # fmt: skip
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                size += len(chunk)
        seconds = time.perf_counter() - began
    log(f"API streamed {size / 1e6:,.0f} MB of Parquet in {seconds:.1f} s")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=365, help="days of minute data (default 365)")
    parser.add_argument("--export-rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    start = END - timedelta(days=args.days)
    server = PostgresServer("max_wal_size = 8GB\nshared_buffers = 2GB\nwork_mem = 256MB\n")
    server.start()
    try:
        create_database(server.dsn(), "history")
        dsn = replace_dbname(server.dsn(), "history")
        migrate(dsn, timescaledb="require")
        began = time.perf_counter()
        rows = generate(dsn, start)
        log(f"{rows:,} readings and rollups in {time.perf_counter() - began:.0f} s")

        async def hourly() -> None:
            async with await psycopg.AsyncConnection.connect(dsn) as conn:
                answer = await aggregate(
                    conn, start=start, end=END, bucket=timedelta(hours=1),
                    group_by="site", sites=["district-3"],
                )  # fmt: skip
                assert len(answer.rows) == args.days * 24

        def raw_hourly() -> None:
            with psycopg.connect(dsn) as conn:
                params = {"site": "district-3", "start": start, "end": END}
                assert len(conn.execute(RAW_HOURLY, params).fetchall()) == args.days * 24

        def sensor_day() -> None:
            with psycopg.connect(dsn) as conn:
                day = END - timedelta(days=2)
                got = conn.execute(SENSOR_DAY, (42, day, day + timedelta(days=1))).fetchall()
                assert len(got) == 1440

        figures: dict[str, float | int] = {
            "readings": rows,
            "district_year_hourly_ms": timed(lambda: asyncio.run(hourly()), args.repeat),
            "district_year_raw_ms": timed(raw_hourly, max(1, args.repeat // 2)),
            "sensor_day_raw_ms": timed(sensor_day, args.repeat),
        }
        export_rows = min(args.export_rows, rows)
        minutes = export_rows // (DISTRICTS * PER_DISTRICT)
        selection = Selection(END - timedelta(minutes=minutes), END)
        with tempfile.TemporaryDirectory() as scratch, psycopg.connect(dsn) as conn:
            began = time.perf_counter()
            written = export(conn, selection, Path(scratch) / "x.parquet", file_format="parquet")
            figures["parquet_rows_per_s"] = written / (time.perf_counter() - began)
            figures["parquet_rows"] = written
        figures["api_parquet_rows_per_s"] = written / api_export_seconds(dsn, selection)
    finally:
        server.cleanup()
    figures["hourly_vs_raw"] = figures["district_year_raw_ms"] / figures["district_year_hourly_ms"]
    figures["days"] = args.days
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"{rows:,} minute readings, {args.days} days x 200 sensors; medians of {args.repeat}\n")
    print(f"{'what':<52}{'figure':>16}")
    print(f"{'hourly means, one district (20 sensors), rollups':<52}"
          f"{figures['district_year_hourly_ms']:>13,.1f} ms")  # fmt: skip
    print(f"{'the same from raw readings':<52}{figures['district_year_raw_ms']:>13,.1f} ms")
    print(f"{'one day of raw readings, one sensor':<52}{figures['sensor_day_raw_ms']:>13,.1f} ms")
    print(f"{'Parquet export (' + format(figures['parquet_rows'], ',') + ' rows)':<52}"
          f"{figures['parquet_rows_per_s']:>11,.0f} rows/s")  # fmt: skip
    print(f"{'the same through the planner API (HTTP stream)':<52}"
          f"{figures['api_parquet_rows_per_s']:>11,.0f} rows/s")  # fmt: skip
    print(f"\nrollups are {figures['hourly_vs_raw']:,.0f}x faster than raw for the district query")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
