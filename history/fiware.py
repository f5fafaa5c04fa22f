"""FIWARE Smart Data Models in NGSI-LD key-value form, from a device and its values.

Each family maps onto its model: air-quality stations to ``AirQualityObserved``, traffic
counters to ``TrafficFlowObserved``, bins to ``WasteContainer``; every device is also a
``Device``. Units follow the models: relative humidity, lane occupancy and bin fill are
fractions 0..1 there, percentages here. The same function serves the current state (latest
values) and history (one entity per device and bucket, with bucket means).

Examples:
    >>> from datetime import datetime, timezone
    >>> at = datetime(2026, 11, 23, 8, tzinfo=timezone.utc)
    >>> place = Place("aq-1", "Station 1", "north", "air", 51.5, -0.1)
    >>> entity = observed(place, {"pm2_5": 12.0, "humidity": 55.0}, at)
    >>> entity["type"], entity["pm25"], entity["relativeHumidity"]
    ('AirQualityObserved', 12.0, 0.55)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from processing import aqi

CONTEXT: Final = [
    "https://smartdatamodels.org/context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld",
]
MODELS: Final = {"air": "AirQualityObserved", "traffic": "TrafficFlowObserved",
                 "waste": "WasteContainer"}  # fmt: skip
TYPES: Final = (*MODELS.values(), "Device")

# Our metric: (the model's attribute, factor from our unit to the model's).
_ATTRIBUTES: Final[dict[str, dict[str, tuple[str, float]]]] = {
    "AirQualityObserved": {
        "pm2_5": ("pm25", 1.0), "pm10": ("pm10", 1.0), "no2": ("no2", 1.0), "o3": ("o3", 1.0),
        "co2": ("co2", 1.0), "temperature": ("temperature", 1.0),
        "humidity": ("relativeHumidity", 0.01), "pressure": ("pressure", 1.0),
    },
    "TrafficFlowObserved": {
        "vehicle_count": ("intensity", 1.0), "speed_mean": ("averageVehicleSpeed", 1.0),
        "occupancy": ("occupancy", 0.01),
    },
    "WasteContainer": {"fill_level": ("fillingLevel", 0.01), "temperature": ("temperature", 1.0)},
}  # fmt: skip
# Device.controlledProperty names for our metrics (the model's own enumeration).
_CONTROLLED: Final = {
    "pm2_5": "airPollution", "pm10": "airPollution", "no2": "airPollution",
    "o3": "airPollution", "co2": "airPollution", "temperature": "temperature",
    "humidity": "humidity", "pressure": "atmosphericPressure", "vehicle_count": "trafficFlow",
    "speed_mean": "averageVelocity", "occupancy": "occupancy", "fill_level": "fillingLevel",
    "tilt": "motion", "lid_open": "motion",
}  # fmt: skip
_AQI_POLLUTANTS: Final = ("pm2_5", "pm10", "no2", "o3")
TILT_DROPPED_DEG: Final = 45.0  # a bin leaning further than this has fallen over


@dataclass(frozen=True, slots=True)
class Place:
    """What the models need to know about a device."""

    device_id: str
    name: str
    site: str
    family: str
    lat: float | None
    lon: float | None


def entity_id(model: str, device_id: str) -> str:
    """The NGSI-LD URN of ``device_id`` as ``model``."""
    return f"urn:ngsi-ld:{model}:{device_id}"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _common(place: Place, model: str) -> dict[str, Any]:
    entity: dict[str, Any] = {"id": entity_id(model, place.device_id), "type": model}
    if place.name:
        entity["name"] = place.name
    entity["areaServed"] = place.site
    if place.lat is not None and place.lon is not None:
        entity["location"] = {"type": "Point", "coordinates": [place.lon, place.lat]}
    return entity


def observed(
    place: Place,
    values: Mapping[str, float],
    at: datetime,
    *,
    until: datetime | None = None,
    congested: bool | None = None,
) -> dict[str, Any]:
    """The family's observation entity for ``values`` (our metric names) observed at ``at``.

    ``until``: the values cover [at, until) (history buckets: counts summed, the rest means).
    ``congested``: for traffic, whether a congestion alert was open.
    """
    model = MODELS[place.family]
    entity = _common(place, model)
    for metric, (attribute, factor) in _ATTRIBUTES[model].items():
        if metric in values:
            entity[attribute] = round(values[metric] * factor, 6)
    if model == "AirQualityObserved":
        entity["dateObserved"] = _iso(at)
        entity["refDevice"] = entity_id("Device", place.device_id)
        entity["typeofLocation"] = "outdoor"
        _add_index(entity, values)
    elif model == "TrafficFlowObserved":
        end = until or at
        entity["dateObserved"] = f"{_iso(at)}/{_iso(end)}" if until else _iso(at)
        entity["dateObservedFrom"] = _iso(at)
        entity["dateObservedTo"] = _iso(end)
        if congested is not None:
            entity["congested"] = congested
    else:
        entity["timeInstant"] = _iso(at)
        entity["refDevice"] = [entity_id("Device", place.device_id)]
        entity["status"] = _bin_status(values)
    return {"@context": CONTEXT, **entity}


def _add_index(entity: dict[str, Any], values: Mapping[str, float]) -> None:
    """The official index (UK DAQI) of the worst pollutant present, with its band name."""
    bands = [
        aqi.band(aqi.DEFAULT_SCHEME, pollutant, values[pollutant])
        for pollutant in _AQI_POLLUTANTS
        if pollutant in values
    ]
    bands = [number for number in bands if number > 0]  # 0: not banded by this scheme
    if bands:
        worst = max(bands)
        entity["airQualityIndex"] = worst
        entity["airQualityLevel"] = aqi.band_name(aqi.DEFAULT_SCHEME, worst)


def _bin_status(values: Mapping[str, float]) -> str:
    if values.get("tilt", 0.0) > TILT_DROPPED_DEG:
        return "dropped"
    if values.get("lid_open", 0.0) >= 0.5:
        return "lidOpen"
    return "ok" if values else "unknown"


def device(
    place: Place,
    metrics: list[str],
    *,
    state: str | None,
    last_reported: datetime | None,
    software: str | None = None,
) -> dict[str, Any]:
    """The ``Device`` entity: what it measures, its state and when it last reported."""
    entity = _common(place, "Device")
    entity["deviceCategory"] = ["sensor"]
    entity["controlledProperty"] = sorted({_CONTROLLED[m] for m in metrics if m in _CONTROLLED})
    entity["deviceState"] = state or "unknown"
    if last_reported is not None:
        entity["dateLastValueReported"] = _iso(last_reported)
    if software:
        entity["softwareVersion"] = software
    return {"@context": CONTEXT, **entity}
