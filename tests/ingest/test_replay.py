"""``smartcity replay``: a real week of the Beijing stations through the real broker, ingest and
database gives the readings and the alerts the same detectors give offline; and its bad inputs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest

from processing.clock import ReadingsClock
from processing.config import DetectionSettings
from processing.hook import ReadingColumns
from processing.stage import DetectionStage
from processing.streams import StreamInfo
from smartcity import datasets
from smartcity.cli import main
from smartcity.replay import ReplayError, Timeline, csv_series, timeline
from tests.ingest.running import eventually, ingest_config, running_ingest
from tests.services.handles import BrokerAddress, Database

WEEK_START = datetime(2014, 1, 13, tzinfo=UTC)  # a winter week with city-wide smog episodes


def rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def offline_openings(line: Timeline, settings: DetectionSettings) -> set[tuple[str, str, str, int]]:
    """What the same detectors open on the same readings without broker, ingest or database."""
    stage = DetectionStage(settings, zone=datasets.BEIJING_ZONE)
    stage.describe(line.streams)
    ids = np.array([line.streams[i].stream_id for i in line.stream], dtype=np.int32)
    # Ingest sweeps a window when the first reading after it arrives: no sweep after the last.
    ReadingsClock(stage)(ReadingColumns(ids, line.ts_us, line.values))
    by_id = {info.stream_id: info for info in line.streams}
    return {
        (by_id[e.stream_id].device, by_id[e.stream_id].metric, e.kind.slug, round(e.at.timestamp()))
        for e in stage.drain()
        if e.opened
    }


async def test_a_real_week_replayed_through_the_platform_matches_the_offline_replay(
    broker: BrokerAddress, database: Database, tmp_path: Path
) -> None:
    line = timeline(datasets.beijing(), start=WEEK_START, days=7)
    config = ingest_config(
        broker,
        database.dsn,
        detection_clock="readings",
        city_timezone=datasets.BEIJING_ZONE,
        alerts_per_site_per_minute=1_000_000,  # a week in seconds: the wall-clock limit is off
        alert_topic_prefix="",
    )
    expected = offline_openings(line, DetectionSettings(warmup_s=config.detection_warmup_s))
    assert len(expected) >= 20  # the week has alerts to compare (air quality, faults)

    settings = tmp_path / "ingest.toml"
    settings.write_text(f'[ingest]\ndatabase_url = "{database.dsn}"\n', encoding="utf-8")
    command = [
        sys.executable, "-m", "smartcity", "replay", "beijing",
        "--start", WEEK_START.date().isoformat(), "--days", "7", "--speed", "inf",
        "--config", str(settings), "--broker", f"{broker.host}:{broker.port}",
    ]  # fmt: skip
    async with running_ingest(config):
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr
        assert f"published {len(line):,} readings" in done.stdout
        assert "acknowledged by the broker" in done.stdout

        def stored() -> int:
            return int(str(rows(database.dsn, "SELECT count(*) FROM readings")[0][0]))

        assert await eventually(lambda: stored() == len(line), 120), (stored(), len(line))

        def opened() -> set[tuple[str, str, str, int]]:
            found = rows(
                database.dsn,
                "SELECT a.device_id, s.metric, a.kind, a.started_at FROM alerts a"
                " JOIN streams s USING (stream_id)",
            )
            return {
                (str(d), str(m), str(k), round(t.timestamp()))  # type: ignore[attr-defined]
                for d, m, k, t in found
            }

        await eventually(lambda: opened() == expected, 60)
        assert opened() == expected

    # Every reading stored is the one replayed, moved by whole weeks.
    values = rows(
        database.dsn,
        "SELECT sum(r.value), min(r.ts), max(r.ts) FROM readings r",
    )[0]
    assert float(str(values[0])) == pytest.approx(float(line.values.sum()), rel=1e-12)
    first, last = values[1], values[2]
    assert round(first.timestamp() * 1e6) == int(line.ts_us[0])  # type: ignore[attr-defined]
    assert round(last.timestamp() * 1e6) == int(line.ts_us[-1])  # type: ignore[attr-defined]


def test_the_replayed_span_ends_within_the_week_before_now_on_the_same_weekday_and_hour() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    line = timeline(datasets.beijing(("PM2.5",)), start=WEEK_START, days=2, now=now)
    assert line.shift_us % (7 * 86_400 * 10**6) == 0
    end = datetime.fromtimestamp(int(line.ts_us[-1]) / 1e6, UTC)
    assert 0 <= (now - end).total_seconds() < 7 * 86_400
    assert np.isfinite(line.values).all()  # missing readings are not sent
    assert (np.diff(line.ts_us) >= 0).all()
    assert {d.device for d in line.devices()} == {f"bj-{s}" for s in STATIONS}


STATIONS = (
    "aotizhongxin",
    "changping",
    "dingling",
    "dongsi",
    "guanyuan",
    "gucheng",
    "huairou",
    "nongzhanguan",
    "shunyi",
    "tiantan",
    "wanliu",
    "wanshouxigong",
)


def test_a_csv_with_a_column_mapping_becomes_streams(tmp_path: Path) -> None:
    path = tmp_path / "counts.csv"
    path.write_text(
        "when,station,cars,pm\n"
        "2024-03-31 00:00,a,10,5.5\n"
        "2024-03-31 02:00,a,12,\n"  # the hour clocks skip in Europe/Berlin: 02:00 never happened
        "2024-03-31 03:00,a,x,6\n"
        "2024-03-31 01:00,b,7,4\n",
        encoding="utf-8",
    )
    found = csv_series(
        path,
        time_column="when",
        device_column="station",
        device=None,
        metrics={"cars": "vehicle_count", "pm": "pm2_5"},
        site="north",
        family="traffic",
        timezone="Europe/Berlin",
    )
    by_key = {(s.info.device, s.info.metric): s for s in found}
    a_cars = by_key["a", "vehicle_count"]
    assert a_cars.values.tolist()[0] == 10
    assert np.isnan(a_cars.values[1])  # "x" is not a number: missing, not an error
    assert len(a_cars.ts_us) == 2  # the time that never happened is dropped
    assert a_cars.info.unit == "count"
    line = timeline(found, now=datetime(2026, 12, 1, tzinfo=UTC))
    assert len(line) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time_column": "nope"}, "no column 'nope'"),
        ({"metrics": {"cars": "horsepower"}}, "not in contract v1"),
        ({"device_column": None}, "either a device column or one device"),
        ({"metrics": {"missing": "pm2_5"}}, "no column 'missing'"),
    ],
)
def test_a_bad_csv_mapping_is_refused_with_a_reason(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    path = tmp_path / "counts.csv"
    path.write_text("when,station,cars\n2024-01-01 00:00,a,1\n", encoding="utf-8")
    options: dict[str, object] = {
        "time_column": "when",
        "device_column": "station",
        "device": None,
        "metrics": {"cars": "vehicle_count"},
        "site": "north",
        "family": "traffic",
    }
    options.update(kwargs)
    with pytest.raises(ReplayError, match=message):
        csv_series(path, **options)  # type: ignore[arg-type]


def test_a_span_without_readings_or_a_wrong_family_is_refused() -> None:
    series = datasets.beijing(("PM2.5",))[:1]
    with pytest.raises(ReplayError, match="no readings"):
        timeline(series, start=datetime(2030, 1, 1, tzinfo=UTC), days=1)
    bus = StreamInfo(1, "d", "s", "pm2_5", "", "bus", "x")
    wrong = [datasets.RealSeries(bus, series[0].ts_us, series[0].values)]
    with pytest.raises(ReplayError, match="family 'bus'"):
        timeline(wrong)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "csv"], "needs --file"),
        (["replay", "beijing", "--start", "13/01/2014"], "YYYY-MM-DD"),
        (["replay", "beijing", "--broker", "localhost"], "host:port"),
        (["replay", "beijing", "--password-file", "/no/such/file"], "cannot read --password-file"),
        (["simulate", "--broker", "localhost:x"], "host:port"),
        (["replay", "csv", "--file", "x.csv", "--metric", "cars"], "COLUMN=METRIC"),
    ],
)
def test_the_command_refuses_bad_arguments_with_a_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
