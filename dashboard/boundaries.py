"""District boundaries from a GeoJSON file the city supplies, drawn on the map without tiles.

Polygons and multipolygons are read from a FeatureCollection; each feature's ``name`` (or
``site``) property labels it. A bad file is refused with the reason, at start.

Examples:
    >>> doc = {"type": "FeatureCollection", "features": [{"type": "Feature",
    ...     "properties": {"name": "North"}, "geometry": {"type": "Polygon",
    ...     "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}
    >>> [(b.name, len(b.rings[0])) for b in parse(doc)]
    [('North', 4)]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ConfigError

Ring = list[tuple[float, float]]  # (lon, lat)


@dataclass(frozen=True, slots=True)
class Boundary:
    """One district's outline (one ring per polygon part)."""

    name: str
    rings: list[Ring]


def load(path: str) -> list[Boundary]:
    """The boundaries in ``path`` (empty path: none).

    Raises:
        ConfigError: The file cannot be read or is not a FeatureCollection of polygons.
    """
    if not path:
        return []
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"districts_file {path}: {exc}") from exc
    try:
        return parse(document)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"districts_file {path}: not a GeoJSON FeatureCollection of"
                          f" polygons ({exc})") from exc  # fmt: skip


def parse(document: dict[str, Any]) -> list[Boundary]:
    """Boundaries from a GeoJSON FeatureCollection."""
    if document.get("type") != "FeatureCollection":
        raise ValueError("the top level must be a FeatureCollection")
    found = []
    for feature in document["features"]:
        geometry = feature["geometry"]
        polygons = {"Polygon": [geometry["coordinates"]],
                    "MultiPolygon": geometry["coordinates"]}.get(geometry["type"])  # fmt: skip
        if polygons is None:
            continue  # points and lines are not boundaries
        properties = feature.get("properties") or {}
        name = str(properties.get("name") or properties.get("site") or "district")
        rings = [[(float(x), float(y)) for x, y, *_ in polygon[0]] for polygon in polygons]
        found.append(Boundary(name, rings))
    return found
