"""Backfill from CSV: a round trip through export, bad lines refused by number, nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from history.export import Selection, export
from history.importer import BackfillError, import_csv
from smartcity.cli import main
from tests.ingest.helpers import register
from tests.services.handles import Database

START = datetime(2026, 10, 1, tzinfo=UTC)
HEADER = "ts,device,site,sensor,metric,unit,stream_id,value\n"


@pytest.fixture
def planted(database: Database) -> Database:
    register(database.dsn, [("aq-0001", "north"), ("wb-0001", "south")])
    with psycopg.connect(database.dsn) as conn:
        conn.execute(
            "INSERT INTO streams (device_id, sensor, metric, unit)"
            " VALUES ('aq-0001', 'aq', 'pm2_5', 'ug/m3'), ('wb-0001', 'bin', 'fill_level', '%')"
        )
        conn.execute(
            "INSERT INTO readings (ts, stream_id, value)"
            " SELECT %s + g * interval '30 seconds', s, g / 4.0"
            " FROM generate_series(0, 2999) g, (VALUES (1), (2)) v(s)",
            (START,),
        )
    return database


def _readings(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT ts, stream_id, value FROM readings ORDER BY 1, 2").fetchall()


def test_an_export_imports_back_exactly_and_only_once(planted: Database, tmp_path: Path) -> None:
    path = tmp_path / "all.csv"
    before = _readings(planted.dsn)
    with psycopg.connect(planted.dsn) as conn:
        export(conn, Selection(START, START + timedelta(days=5)), path, file_format="csv")
        conn.execute("DELETE FROM readings")
        conn.commit()
        first = import_csv(conn, path)
        again = import_csv(conn, path)
        dirty = conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()
    assert (first.inserted, first.duplicates, first.rejected) == (6000, 0, [])
    assert (again.inserted, again.duplicates) == (0, 6000)
    assert _readings(planted.dsn) == before
    assert dirty == (1500,)  # 3000 readings 30 s apart per stream: 1500 minutes to roll up


def test_bad_lines_are_refused_by_number_and_the_rest_imported(
    planted: Database, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(
        HEADER
        + "2026-11-01T00:00:00Z,aq-0001,,aq,pm2_5,ug/m3,,1.5\n"
        + "yesterday,aq-0001,,aq,pm2_5,ug/m3,,1.5\n"
        + "2026-11-01T00:01:00,aq-0001,,aq,pm2_5,ug/m3,,1.5\n"
        + "2026-11-01T00:02:00Z,aq-0001,,aq,pm2_5,ug/m3,,nan\n"
        + "2026-11-01T00:03:00Z,aq-0001,,aq,pm2_5,ug/m3,,high\n"
        + "2026-11-01T00:04:00Z,xx-9999,,aq,pm2_5,ug/m3,,1.0\n"
        + "2026-11-01T00:05:00Z,aq-0001,,,pm2_5,ug/m3,,1.0\n"
        + "2026-11-01T00:06:00Z,wb-0001,,bin,temperature,°C,,21.5\n"  # a new stream is made
    )
    with psycopg.connect(planted.dsn) as conn:
        result = import_csv(conn, path)
    assert result.inserted == 2
    reasons = dict(result.rejected)
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8]
    assert "ISO-8601" in reasons[3]
    assert "time zone" in reasons[4]
    assert "not finite" in reasons[5]
    assert "not a number" in reasons[6]
    assert "not registered" in reasons[7]
    assert "empty" in reasons[8]


def test_a_file_without_the_columns_is_refused_whole(planted: Database, tmp_path: Path) -> None:
    path = tmp_path / "wrong.csv"
    path.write_text("time,sensor_id,reading\n2026-11-01T00:00Z,1,2\n")
    with psycopg.connect(planted.dsn) as conn, pytest.raises(BackfillError, match="ts, device"):
        import_csv(conn, path)


def test_the_command(
    planted: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CITY_INGEST_DATABASE_URL", planted.dsn)
    path = tmp_path / "one.csv"
    path.write_text(HEADER + "2026-11-02T00:00:00Z,aq-0001,,aq,pm2_5,ug/m3,,3.25\n")
    assert main(["import", "--input", str(path)]) == 0
    captured = capsys.readouterr()
    assert "imported 1 readings" in captured.out
    assert "100%" in captured.err
    assert main(["import", "--input", str(tmp_path / "missing.csv")]) == 2
    assert "error" in capsys.readouterr().err
