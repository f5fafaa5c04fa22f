"""Real, openly licensed city telemetry as sensor streams: for benchmarks, tests and replay.

Each dataset becomes a list of :class:`RealSeries`: one stream (device, sensor, metric, family,
site, as a device under contract v1 would describe it) with its readings in UTC, in time order,
missing values as NaN. The files are read where the team keeps them (``../shared/data/`` next to
the project, or ``CITY_DATA_DIR``); nothing is copied into the project.

- ``beijing``: 12 air-quality stations of one city, hourly, March 2013 to February 2017 (UCI
  "Beijing Multi-Site Air Quality", CC BY 4.0). Local time is UTC+8 all year.
- ``metro``: hourly westbound traffic volume on the I-94 at one counting station, October 2012 to
  September 2018 (UCI "Metro Interstate Traffic Volume", CC BY 4.0). Local time is US Central
  with daylight saving.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from processing.streams import StreamInfo
from smartcity.errors import CommandError

ROOT: Final = Path(__file__).resolve().parent.parent
BEIJING_ZONE: Final = "Asia/Shanghai"
METRO_ZONE: Final = "America/Chicago"
# Source column -> (metric, unit), as our air stations would report them.
BEIJING_METRICS: Final[dict[str, tuple[str, str]]] = {
    "PM2.5": ("pm2_5", "µg/m³"),
    "PM10": ("pm10", "µg/m³"),
    "NO2": ("no2", "µg/m³"),
    "O3": ("o3", "µg/m³"),
    "TEMP": ("temperature", "°C"),
    "PRES": ("pressure", "hPa"),
}


class DatasetMissingError(CommandError, FileNotFoundError):
    """The shared real data is not where it is looked for."""


@dataclass(frozen=True, slots=True)
class RealSeries:
    """One real stream: what it is, and its readings (UTC microseconds, NaN where missing)."""

    info: StreamInfo
    ts_us: NDArray[np.int64]
    values: NDArray[np.float64]


def data_dir() -> Path:
    """Where the shared real data lives: ``CITY_DATA_DIR``, else ``../shared/data``."""
    configured = os.environ.get("CITY_DATA_DIR")
    return Path(configured) if configured else ROOT.parent / "shared" / "data"


def _file(relative: str) -> Path:
    path = data_dir() / relative
    if not path.is_file():
        raise DatasetMissingError(f"{path} not found (set CITY_DATA_DIR to the shared data folder)")
    return path


def beijing(
    metrics: Sequence[str] = tuple(BEIJING_METRICS), *, site: str = "beijing"
) -> list[RealSeries]:
    """The 12 Beijing stations, one stream per station and metric, all in one ``site``.

    Args:
        metrics: Source columns to read (keys of :data:`BEIJING_METRICS`).
        site: The district every station is placed in (they share the city's air).
    """
    unknown = set(metrics) - set(BEIJING_METRICS)
    if unknown:
        raise ValueError(f"unknown Beijing columns: {sorted(unknown)}")
    archive = _file("beijing-air-quality/PRSA_Data_12_stations_20130301-20170228.tar.xz")
    found: list[RealSeries] = []
    next_id = 1
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith(".csv")), key=_name)
        for member in members:
            handle = tar.extractfile(member)
            if handle is None:
                continue
            frame = pd.read_csv(handle, na_values=["NA"])
            station = str(frame["station"].iloc[0])
            local = pd.to_datetime(frame[["year", "month", "day", "hour"]])
            ts_us = _epoch_us(local.dt.tz_localize(BEIJING_ZONE))
            for column in metrics:
                metric, unit = BEIJING_METRICS[column]
                info = StreamInfo(
                    next_id, f"bj-{station.lower()}", "station", metric, unit, "air", site
                )
                values = frame[column].to_numpy(dtype=np.float64)
                found.append(RealSeries(info, ts_us, values))
                next_id += 1
    return found


def metro_traffic(*, site: str = "i94-west", stream_id: int = 1) -> RealSeries:
    """The I-94 counter as a ``vehicle_count`` stream (vehicles per hour).

    The source repeats an hour once per weather description (the first row is kept) and names
    local times; the hour that occurs twice when clocks go back cannot be placed and is dropped.
    """
    path = _file("metro-interstate-traffic/Metro_Interstate_Traffic_Volume.csv.gz")
    frame = pd.read_csv(path, usecols=["date_time", "traffic_volume"])
    frame = frame.drop_duplicates("date_time", keep="first")
    local = pd.to_datetime(frame["date_time"]).dt.tz_localize(
        METRO_ZONE, ambiguous="NaT", nonexistent="NaT"
    )
    keep = local.notna().to_numpy()
    info = StreamInfo(stream_id, "atr-301", "loop", "vehicle_count", "vehicles", "traffic", site)
    placed = _epoch_us(local[keep])
    order = np.argsort(placed, kind="stable")
    ts_us = placed[order]
    values = frame["traffic_volume"].to_numpy(dtype=np.float64)[keep][order]
    return RealSeries(info, ts_us, values)


def _name(member: tarfile.TarInfo) -> str:
    return member.name


def _epoch_us(moments: pd.Series) -> NDArray[np.int64]:
    utc = moments.dt.tz_convert("UTC").dt.tz_localize(None)
    micros: NDArray[np.int64] = utc.to_numpy(dtype="datetime64[us]").astype(np.int64)
    return micros
