"""Map tiles from the city's own tile server, laid under the device map as images.

The map stays a plain plot (so markers keep their filled and hollow shapes); each tile of a
standard ``{z}/{x}/{y}`` server is placed at its exact longitude and latitude bounds. Over a
tile a few kilometres wide, the Web Mercator stretch is far below a pixel.

Examples:
    >>> tile_of(-1.55, 53.80, 14)
    (8121, 5276)
    >>> [round(v, 4) for v in tile_bounds(8121, 5276, 14)]  # holds (-1.55, 53.80)
    [-1.5601, -1.5381, 53.7877, 53.8007]
"""

from __future__ import annotations

import math
from typing import Any, Final

MAX_TILES: Final = 36  # per map: the zoom is the finest that covers the city with this many


def tile_of(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    """The (x, y) of the tile holding (lon, lat) at ``zoom``."""
    n = 2**zoom
    x = int((lon + 180.0) / 360.0 * n)
    lat_r = math.radians(max(min(lat, 85.0511), -85.0511))
    y = int((1.0 - math.asinh(math.tan(lat_r)) / math.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def tile_bounds(x: int, y: int, zoom: int) -> tuple[float, float, float, float]:
    """(west, east, south, north) of tile (x, y) at ``zoom``."""
    n = 2**zoom

    def lat(row: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360.0 - 180.0, (x + 1) / n * 360.0 - 180.0, lat(y + 1), lat(y)


def tile_images(
    url: str, west: float, east: float, south: float, north: float
) -> list[dict[str, Any]]:
    """Layout images covering the box with the finest zoom that needs at most MAX_TILES."""
    if not url or not all(part in url for part in ("{z}", "{x}", "{y}")):
        return []
    for zoom in range(18, 0, -1):
        x0, y0 = tile_of(west, north, zoom)
        x1, y1 = tile_of(east, south, zoom)
        if (x1 - x0 + 1) * (y1 - y0 + 1) <= MAX_TILES:
            break
    images = []
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            w, e, s, n = tile_bounds(x, y, zoom)
            images.append({
                "source": url.replace("{z}", str(zoom)).replace("{x}", str(x))
                .replace("{y}", str(y)),
                "xref": "x", "yref": "y", "x": w, "y": n, "sizex": e - w, "sizey": n - s,
                "sizing": "stretch", "layer": "below", "xanchor": "left", "yanchor": "top",
            })  # fmt: skip
    return images
