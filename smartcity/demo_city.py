"""The demo's invented city as GeoJSON: its districts, main roads, a river and parks.

Drawn under the devices when no tile server is configured (``districts_file``), so the demo's
map reads as a city. The districts are :data:`edge.fleet.DEMO_DISTRICTS`; the rest is made up to
fit them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edge.fleet import DEMO_DISTRICTS

Point = tuple[float, float]  # (lon, lat)

_CENTRE: Point = (-1.5492, 53.7997)
_RIVER: list[Point] = [
    (-1.625, 53.782), (-1.600, 53.786), (-1.575, 53.7885), (-1.555, 53.7893),
    (-1.535, 53.7868), (-1.520, 53.7852), (-1.500, 53.789), (-1.475, 53.793),
]  # fmt: skip
# Radial roads from the centre through each district and on out of town.
_ROADS: dict[str, list[Point]] = {
    "North Road": [_CENTRE, (-1.5520, 53.8250), (-1.554, 53.846)],
    "South Road": [_CENTRE, (-1.5400, 53.7760), (-1.535, 53.756)],
    "East Road": [_CENTRE, (-1.5050, 53.8020), (-1.478, 53.8035)],
    "West Road": [_CENTRE, (-1.5950, 53.8010), (-1.622, 53.8015)],
    "Harbour Way": [_CENTRE, (-1.5200, 53.7880), (-1.502, 53.778)],
}
_PARKS: dict[str, list[Point]] = {
    "Northfield Park": [(-1.572, 53.828), (-1.557, 53.8285), (-1.555, 53.837), (-1.571, 53.836)],
    "Riverside Park": [(-1.596, 53.7870), (-1.574, 53.7895), (-1.576, 53.7950), (-1.595, 53.793)],
    "Eastgate Common": [(-1.497, 53.807), (-1.484, 53.807), (-1.484, 53.8150), (-1.497, 53.814)],
}  # fmt: skip
_HALF = 0.009  # degrees of latitude: each district a square around its centre
_RING_ROAD_SIZE = (0.030, 0.016)  # degrees of longitude and latitude from the centre


def city_map() -> dict[str, Any]:
    """The FeatureCollection (see :mod:`dashboard.boundaries` for what each kind means)."""
    features = [
        _feature("Polygon", [_closed(_square(d.lon, d.lat))], name=d.name, site=d.id)
        for d in DEMO_DISTRICTS
    ]
    features += [_feature("Polygon", [_closed(ring)], kind="park", name=name)
                 for name, ring in _PARKS.items()]  # fmt: skip
    features.append(_feature("LineString", _RIVER, kind="river", name="River Wend"))
    features += [_feature("LineString", line, kind="road", name=name)
                 for name, line in _ROADS.items()]  # fmt: skip
    dx, dy = _RING_ROAD_SIZE
    ring = [(_CENTRE[0] + dx * c, _CENTRE[1] + dy * s) for c, s in _UNIT_OCTAGON]
    features.append(_feature("LineString", _closed(ring), kind="road", name="Ring Road"))
    return {"type": "FeatureCollection", "features": features}


def write_city_map(data: Path) -> Path:
    """Write :func:`city_map` into the data directory; its path."""
    path = data / "city.geojson"
    path.write_text(json.dumps(city_map()), encoding="utf-8")
    return path


_UNIT_OCTAGON = [(1.0, 0.0), (0.7, 0.7), (0.0, 1.0), (-0.7, 0.7), (-1.0, 0.0), (-0.7, -0.7),
                 (0.0, -1.0), (0.7, -0.7)]  # fmt: skip


def _square(lon: float, lat: float) -> list[Point]:
    wide = _HALF / math.cos(math.radians(lat))  # a degree of longitude is shorter up north
    return [(lon - wide, lat - _HALF), (lon + wide, lat - _HALF),
            (lon + wide, lat + _HALF), (lon - wide, lat + _HALF)]  # fmt: skip


def _closed(ring: list[Point]) -> list[Point]:
    return [*ring, ring[0]]


def _feature(geometry: str, coordinates: object, **properties: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": properties,
        "geometry": {"type": geometry, "coordinates": coordinates},
    }
