"""The city drawn on the map without tiles: district boundaries and landmarks, from GeoJSON.

Polygons and multipolygons of a FeatureCollection are districts, labelled by their ``name`` (or
``site``) property. A feature with a ``kind`` property is a landmark instead, so people find
their way on the map: ``road`` and ``river`` lines, ``park`` and ``water`` areas. Other
features (points, lines of no known kind) are skipped. A bad file is refused with the reason, at
start.

Examples:
    >>> doc = {"type": "FeatureCollection", "features": [{"type": "Feature",
    ...     "properties": {"name": "North"}, "geometry": {"type": "Polygon",
    ...     "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}
    >>> [(b.name, b.kind, len(b.rings[0])) for b in parse(doc)]
    [('North', 'district', 4)]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ConfigError

Ring = list[tuple[float, float]]  # (lon, lat)
LINE_KINDS = ("road", "river")
AREA_KINDS = ("park", "water")


@dataclass(frozen=True, slots=True)
class Boundary:
    """One district's outline, or a landmark: one ring (or line) per part.

    Attributes:
        name: Shown on hover.
        rings: Closed rings for areas, open lines for roads and rivers; (lon, lat) points.
        kind: ``district``, or a landmark's kind (``road``, ``river``, ``park``, ``water``).
    """

    name: str
    rings: list[Ring]
    kind: str = "district"


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
        properties = feature.get("properties") or {}
        kind = str(properties.get("kind") or "district")
        parts = {"Polygon": [geometry["coordinates"]],
                 "MultiPolygon": geometry["coordinates"]}.get(geometry["type"])  # fmt: skip
        if parts is not None and kind in ("district", *AREA_KINDS):
            parts = [polygon[0] for polygon in parts]  # outer rings
        else:
            parts = {"LineString": [geometry["coordinates"]],
                     "MultiLineString": geometry["coordinates"]}.get(geometry["type"])  # fmt: skip
            if parts is None or kind not in LINE_KINDS:
                continue  # points, and lines of no known kind, draw nothing
        name = str(properties.get("name") or properties.get("site") or kind)
        rings = [[(float(x), float(y)) for x, y, *_ in part] for part in parts]
        found.append(Boundary(name, rings, kind))
    return found
