"""Exports stream every selected row, to CSV and Parquet, through the command line too."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from history.export import ExportError, Selection, count, export
from smartcity.cli import main
from tests.ingest.helpers import register
from tests.services.handles import Database

START = datetime(2026, 11, 20, tzinfo=UTC)
ROWS_PER_STREAM = 200_000  # over 8 MB of COPY data: rows straddle the decoding blocks


@pytest.fixture
def planted(database: Database) -> Database:
    register(database.dsn, [("aq-0001", "north"), ("tr-0001", "south")])
    with psycopg.connect(database.dsn) as conn:
        for device, sensor, metric in (
            ("aq-0001", "aq", "pm2_5"),
            ("tr-0001", "loop", "speed_mean"),
        ):
            conn.execute(
                "INSERT INTO streams (device_id, sensor, metric, unit) VALUES (%s, %s, %s, 'u')",
                (device, sensor, metric),
            )
        conn.execute(
            "INSERT INTO readings (ts, stream_id, value)"
            " SELECT %s + g * interval '10 seconds', s, g * 0.5 + s"
            " FROM generate_series(0, %s - 1) g, (VALUES (1), (2)) AS v(s)",
            (START, ROWS_PER_STREAM),
        )
        conn.execute(
            "INSERT INTO rollup_1h (stream_id, bucket, n, total, low, high, last_ts, last_value)"
            " VALUES (1, %s, 4, 10, 1, 4, %s, 4)",
            (START, START),
        )
    return database


def test_parquet_holds_every_row_with_its_labels(planted: Database, tmp_path: Path) -> None:
    selection = Selection(START, START + timedelta(days=30))
    path = tmp_path / "all.parquet"
    seen: list[int] = []
    with psycopg.connect(planted.dsn) as conn:
        assert count(conn, selection) == 2 * ROWS_PER_STREAM
        written = export(conn, selection, path, file_format="parquet", progress=seen.append)
    table = pq.read_table(path)
    assert written == table.num_rows == 2 * ROWS_PER_STREAM
    assert seen[-1] == written
    assert seen == sorted(seen)
    rows = table.slice(0, 2).to_pylist()
    assert (rows[0]["ts"], rows[0]["device"], rows[0]["metric"]) == (START, "aq-0001", "pm2_5")
    assert rows[0]["value"] == 1.0
    assert (rows[1]["device"], rows[1]["site"]) == ("tr-0001", "south")
    last = table.slice(table.num_rows - 1).to_pylist()[0]
    assert last["value"] == (ROWS_PER_STREAM - 1) * 0.5 + 2


def test_csv_and_filters_and_rollups(planted: Database, tmp_path: Path) -> None:
    path = tmp_path / "north.csv"
    selection = Selection(START, START + timedelta(hours=1), sites=["north"])
    with psycopg.connect(planted.dsn) as conn:
        written = export(conn, selection, path, file_format="csv")
        hourly = Selection(START, START + timedelta(days=1), resolution="1h")
        export(conn, hourly, tmp_path / "hourly.csv", file_format="csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert written == len(rows) == 360
    assert {row["device"] for row in rows} == {"aq-0001"}
    with open(tmp_path / "hourly.csv", newline="") as handle:
        (hour,) = list(csv.DictReader(handle))
    assert (float(hour["mean"]), hour["n"]) == (2.5, "4")


def test_an_empty_selection_is_still_a_valid_file(planted: Database, tmp_path: Path) -> None:
    selection = Selection(START - timedelta(days=9), START - timedelta(days=8))
    with psycopg.connect(planted.dsn) as conn:
        assert export(conn, selection, tmp_path / "none.parquet", file_format="parquet") == 0
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0


@pytest.mark.parametrize(
    "selection",
    [
        Selection(datetime(2026, 11, 20), datetime(2026, 11, 21)),  # no zone
        Selection(START, START),
        Selection(START, START + timedelta(days=1), resolution="5m"),  # type: ignore[arg-type]
    ],
)
def test_bad_selections_are_refused(
    planted: Database, tmp_path: Path, selection: Selection
) -> None:
    with psycopg.connect(planted.dsn) as conn, pytest.raises(ExportError):
        export(conn, selection, tmp_path / "x.csv", file_format="csv")
    assert not (tmp_path / "x.csv").exists()


def test_the_commands(
    planted: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CITY_INGEST_DATABASE_URL", planted.dsn)
    out = tmp_path / "south.parquet"
    window = ["--start", "2026-11-20T00:00Z", "--end", "2026-11-21T00:00Z"]
    assert main(["export", *window, "--site", "south", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    day = 86_400 // 10  # a reading every 10 s
    assert "100%" in captured.err
    assert f"{day:,} rows" in captured.out
    assert pq.read_table(out).num_rows == day
    assert main(["query", *window, "--bucket", "1h", "--aggregate", "count"]) == 0
    assert "north" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["query", "--start", "2026-11-20T00:00", "--end", "2026-11-21T00:00Z"])
    assert "time zone" in capsys.readouterr().err
    assert main(["export", *window, "--output", str(tmp_path / "x.txt")]) == 2
