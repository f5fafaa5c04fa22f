"""What each sensor stream is, as the detectors need to know it.

Maps a stream's metric and family to its kernel parameters: the plausible range (narrower than
the physical range ingest enforces: a city air station reading 90 °C is broken, not hot), the
instrument's resolution, the domain rules that apply, its partner stream and its neighbours.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from processing import aqi
from processing import layout as k


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One sensor stream as registered: ids, kind, place.

    Attributes:
        stream_id: ``streams.stream_id``.
        device: Device id.
        sensor: Sensor name on the device.
        metric: Metric name (see ``edge.metrics``).
        unit: Display unit.
        family: ``traffic``, ``air`` or ``waste``.
        site: The device's site (district).
    """

    stream_id: int
    device: str
    sensor: str
    metric: str
    unit: str
    family: str
    site: str


# Plausible for a city deployment; outside it the sensor is faulty.
PLAUSIBLE: Final[dict[str, tuple[float, float]]] = {
    "pm2_5": (0, 1000),  # severe episodes pass 500 for real (Beijing, January 2013)
    "pm10": (0, 2000),
    "no2": (0, 1000),
    "o3": (0, 800),
    "co2": (300, 10_000),
    "temperature": (-40, 55),
    "humidity": (1, 100),
    "pressure": (870, 1085),
    "speed_mean": (0, 200),
    "occupancy": (0, 100),
    "vehicle_count": (0, 10_000),  # per reporting interval: an hour on a motorway passes 7,000
    "fill_level": (0, 100),
}
BIN_TEMPERATURE_RANGE: Final = (-40.0, 125.0)  # a bin on fire is hot for real

RESOLUTION: Final[dict[str, float]] = {
    "pm2_5": 0.5,
    "pm10": 0.5,
    "no2": 1.0,
    "o3": 1.0,
    "co2": 5.0,
    "temperature": 0.1,
    "humidity": 0.5,
    "pressure": 0.5,
    "speed_mean": 0.5,
    "occupancy": 0.5,
    "vehicle_count": 1.0,
    "fill_level": 0.5,
}

_CODES: Final[dict[str, int]] = {
    "pm2_5": k.M_PARTICLES,
    "pm10": k.M_PARTICLES,
    "no2": k.M_GAS,
    "o3": k.M_GAS,
    "speed_mean": k.M_SPEED,
    "occupancy": k.M_OCCUPANCY,
    "fill_level": k.M_FILL,
    "vehicle_count": k.M_COUNT,
}
# Metrics whose neighbours should agree: the air over a district is shared; roads and bins are not.
_SPATIAL: Final = frozenset({"pm2_5", "pm10", "no2", "o3", "temperature", "humidity", "pressure"})


def metric_code(info: StreamInfo) -> int:
    """The kernel's metric code for ``info``."""
    if info.metric == "temperature" and info.family == "waste":
        return k.M_BIN_TEMPERATURE
    return _CODES.get(info.metric, k.M_GENERIC)


def fill_params(
    params: NDArray[np.float64],
    rows: dict[int, int],
    infos: Iterable[StreamInfo],
    *,
    scheme: str = aqi.DEFAULT_SCHEME,
) -> None:
    """Write the parameters of every stream in ``infos`` into its row of ``params``.

    ``rows`` maps stream ids to rows and must cover every stream in ``infos``. Partners and
    sensor leads are resolved among ``infos``, so pass all streams of a device together.
    """
    infos = list(infos)
    pollutants, _ = aqi.band_table(scheme)
    rules = aqi.scheme(scheme)
    by_sensor: dict[tuple[str, str], list[StreamInfo]] = defaultdict(list)
    for info in infos:
        by_sensor[info.device, info.sensor].append(info)
        row = rows[info.stream_id]
        lo, hi = PLAUSIBLE.get(info.metric, (-np.inf, np.inf))
        code = metric_code(info)
        if code == k.M_BIN_TEMPERATURE:
            lo, hi = BIN_TEMPERATURE_RANGE
        params[row, k.P_LO] = lo
        params[row, k.P_HI] = hi
        params[row, k.P_METRIC] = code
        params[row, k.P_FLOOR] = RESOLUTION.get(info.metric, 1e-9)
        params[row, k.P_PARTNER] = -1
        params[row, k.P_LEAD] = 0
        if info.metric in rules.pollutants:
            params[row, k.P_AQ_TABLE] = pollutants.index(info.metric)
            params[row, k.P_AQ_HOURS] = rules.pollutants[info.metric].averaging_hours
            params[row, k.P_ALERT_BAND] = rules.alert_from_band
        else:
            params[row, k.P_AQ_TABLE] = -1
    for streams in by_sensor.values():
        lead = min(streams, key=lambda s: s.stream_id)
        params[rows[lead.stream_id], k.P_LEAD] = 1
        by_metric = {s.metric: rows[s.stream_id] for s in streams}
        if "speed_mean" in by_metric and "occupancy" in by_metric:
            params[by_metric["speed_mean"], k.P_PARTNER] = by_metric["occupancy"]
            params[by_metric["occupancy"], k.P_PARTNER] = by_metric["speed_mean"]


def neighbour_groups(
    infos: Sequence[StreamInfo], rows: dict[int, int]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows grouped by (site, metric) for the spatial check, as (members, starts) arrays."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for info in infos:
        if info.metric in _SPATIAL and info.family == "air":
            groups[info.site, info.metric].append(rows[info.stream_id])
    members: list[int] = []
    starts = [0]
    for key in sorted(groups):
        members.extend(sorted(groups[key]))
        starts.append(len(members))
    return np.array(members, dtype=np.int64), np.array(starts, dtype=np.int64)
