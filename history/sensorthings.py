"""OGC SensorThings API v1.1 (read-only) over our devices, streams and readings.

The mapping: a device is a Thing with one Location; each (device, sensor) is a Sensor; each
metric an ObservedProperty; each stream a Datastream; each reading an Observation whose id is
``<stream_id>-<microseconds since 1970>``. This module parses the query options we support and
builds the entities; the API serves them.

Examples:
    >>> [(c.operator, c.moment.hour) for c in parse_filter(
    ...     "phenomenonTime ge 2026-11-23T08:00:00Z and phenomenonTime lt 2026-11-23T09:00Z")]
    [('>=', 8), ('<', 9)]
    >>> parse_orderby("phenomenonTime desc", ("phenomenonTime",))
    ('phenomenonTime', 'desc')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from edge.metrics import METRICS
from history.errors import HistoryError

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
OBSERVATION_TYPE: Final = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
_OPERATORS: Final = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_TIME_PROPERTIES: Final = ("phenomenonTime", "resultTime")  # the same instant for our readings
_COMPARISON: Final = re.compile(
    r"\s*(phenomenonTime|resultTime)\s+(eq|ne|gt|ge|lt|le)\s+"
    r"(\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2}))\s*"
)
_UNIT_NAMES: Final = {
    "count": "vehicles", "km/h": "kilometre per hour", "%": "percent",
    "ug/m3": "microgram per cubic metre", "ppm": "parts per million", "degC": "degree Celsius",
    "hPa": "hectopascal", "deg": "degree of angle", "bool": "boolean (0 or 1)",
}  # fmt: skip


class SensorThingsError(HistoryError, ValueError):
    """A query option this view does not support, or cannot read."""


@dataclass(frozen=True, slots=True)
class TimeCondition:
    """``time <operator> moment`` (the operator already in SQL form, from a fixed table)."""

    operator: str
    moment: datetime


def parse_filter(text: str) -> list[TimeCondition]:
    """``$filter``: comparisons of phenomenonTime (or resultTime) joined by ``and``."""
    conditions = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _COMPARISON.fullmatch(part)
        if match is None:
            raise SensorThingsError(
                f"$filter supports only time comparisons joined by 'and', e.g."
                f" 'phenomenonTime ge 2026-11-01T00:00:00Z'; could not read {part[:60]!r}"
            )
        try:
            moment = datetime.fromisoformat(match[3]).astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise SensorThingsError(f"$filter: {match[3]!r} is not a time") from exc
        conditions.append(TimeCondition(_OPERATORS[match[2]], moment))
    return conditions


def parse_orderby(text: str, allowed: tuple[str, ...]) -> tuple[str, str]:
    """``$orderby``: one property of ``allowed`` with an optional ``asc`` or ``desc``."""
    parts = text.split()
    if (
        not 1 <= len(parts) <= 2
        or parts[0] not in allowed
        or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc"))
    ):
        raise SensorThingsError(f"$orderby: one of {', '.join(allowed)}, then asc or desc")
    return parts[0], parts[1].lower() if len(parts) == 2 else "asc"


def observation_id(stream_id: int, moment: datetime) -> str:
    """The id of the reading of ``stream_id`` at ``moment``."""
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return f"{stream_id}-{micros}"


def parse_observation_id(text: str) -> tuple[int, datetime]:
    """(stream_id, moment) of an observation id."""
    match = re.fullmatch(r"([1-9][0-9]{0,9})-(-?[0-9]{1,17})", text)
    if match is None or int(match[1]) >= 2**31:
        raise SensorThingsError(f"{text[:40]!r} is not an Observation id (stream-microseconds)")
    try:
        moment = _EPOCH + timedelta(microseconds=int(match[2]))
    except OverflowError as exc:
        raise SensorThingsError(f"{text[:40]!r} is not an Observation id") from exc
    return int(match[1]), moment


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def thing(base: str, row: dict[str, Any]) -> dict[str, Any]:
    """A device as a Thing."""
    link = f"{base}/Things({_quoted(row['device_id'])})"
    return {
        "@iot.id": row["device_id"],
        "@iot.selfLink": link,
        "name": row["name"] or row["device_id"],
        "description": f"{row['family']} device in {row['site']}",
        "properties": {
            "site": row["site"],
            "family": row["family"],
            "state": row["state"],
            "lastSeen": _iso(row["last_seen"]) if row["last_seen"] else None,
        },
        "Locations@iot.navigationLink": f"{link}/Locations",
        "Datastreams@iot.navigationLink": f"{link}/Datastreams",
    }


def location(base: str, row: dict[str, Any]) -> dict[str, Any]:
    """A device's position as its Location (same id as the Thing)."""
    link = f"{base}/Locations({_quoted(row['device_id'])})"
    return {
        "@iot.id": row["device_id"],
        "@iot.selfLink": link,
        "name": row["name"] or row["device_id"],
        "description": f"where {row['device_id']} stands, in {row['site']}",
        "encodingType": "application/geo+json",
        "location": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
        "Things@iot.navigationLink": f"{link}/Things",
    }


def sensor(base: str, row: dict[str, Any]) -> dict[str, Any]:
    """A device's sensor (``device:sensor``)."""
    sensor_id = f"{row['device_id']}:{row['sensor']}"
    link = f"{base}/Sensors({_quoted(sensor_id)})"
    return {
        "@iot.id": sensor_id,
        "@iot.selfLink": link,
        "name": sensor_id,
        "description": f"sensor {row['sensor']} of {row['device_id']}",
        "encodingType": "text/plain",
        "metadata": f"{row['family']} sensor {row['sensor']}",
        "Datastreams@iot.navigationLink": f"{link}/Datastreams",
    }


def observed_property(base: str, metric: str) -> dict[str, Any]:
    """A metric as an ObservedProperty."""
    link = f"{base}/ObservedProperties({_quoted(metric)})"
    known = METRICS.get(metric)
    return {
        "@iot.id": metric,
        "@iot.selfLink": link,
        "name": known.label if known else metric,
        "definition": f"urn:smartcity:metric:{metric}",
        "description": f"{known.label if known else metric} ({metric})",
        "Datastreams@iot.navigationLink": f"{link}/Datastreams",
    }


def datastream(base: str, row: dict[str, Any]) -> dict[str, Any]:
    """A stream as a Datastream."""
    link = f"{base}/Datastreams({row['stream_id']})"
    known = METRICS.get(row["metric"])
    return {
        "@iot.id": row["stream_id"],
        "@iot.selfLink": link,
        "name": f"{row['device_id']} {row['sensor']} {row['metric']}",
        "description": f"{known.label if known else row['metric']} at {row['device_id']}",
        "observationType": OBSERVATION_TYPE,
        "unitOfMeasurement": {
            "name": _UNIT_NAMES.get(row["unit"], row["unit"]),
            "symbol": known.display_unit if known else row["unit"],
            "definition": f"urn:smartcity:unit:{row['unit']}",
        },
        "Thing@iot.navigationLink": f"{link}/Thing",
        "Sensor@iot.navigationLink": f"{link}/Sensor",
        "ObservedProperty@iot.navigationLink": f"{link}/ObservedProperty",
        "Observations@iot.navigationLink": f"{link}/Observations",
    }


def observation(base: str, stream_id: int, moment: datetime, value: float) -> dict[str, Any]:
    """A reading as an Observation."""
    observation_key = observation_id(stream_id, moment)
    link = f"{base}/Observations({_quoted(observation_key)})"
    return {
        "@iot.id": observation_key,
        "@iot.selfLink": link,
        "phenomenonTime": _iso(moment),
        "resultTime": _iso(moment),
        "result": value,
        "Datastream@iot.navigationLink": f"{link}/Datastream",
    }
