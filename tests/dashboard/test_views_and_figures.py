"""Pure shaping and figures, without a database or a browser."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard import boundaries, figures, tiles
from dashboard.config import DashboardConfig
from dashboard.figures import STATUS_COLOUR
from dashboard.live import Snapshot, map_patch, map_positions
from dashboard.views import (
    LIVE,
    OFFLINE,
    SILENT,
    STALE,
    STATUS_ORDER,
    with_status,
)
from edge.errors import ConfigError

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def devices() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "device_id": ["aq-1", "tr-1", "wb-1", "wb-2", "aq-2"],
            "name": ["Air 1", "Traffic 1", "Bin 1", "Bin 2", "Air 2"],
            "site": ["centre"] * 5,
            "family": ["air", "traffic", "waste", "waste", "air"],
            "lat": [53.80, 53.81, 53.79, None, 53.80],
            "lon": [-1.55, -1.54, -1.56, None, -1.50],
            "last_seen": [NOW, NOW - timedelta(hours=2), NOW, None, NOW - timedelta(minutes=1)],
            "state": ["online", "online", "offline", None, None],
        }
    )


def test_status_words_cover_every_case() -> None:
    shaped = with_status(devices(), NOW, timedelta(minutes=5))
    assert list(shaped["status"]) == [LIVE, STALE, OFFLINE, SILENT, LIVE]


def _live(frame: pd.DataFrame) -> tuple[pd.DataFrame, object]:
    shaped = with_status(frame, NOW, timedelta(minutes=5)).sort_values("device_id")
    shaped = shaped.reset_index(drop=True)
    trace, point = map_positions(shaped)
    return shaped, figures.live_map(shaped, trace, point)


def test_map_marks_status_by_symbol_as_well_as_colour() -> None:
    _, figure = _live(devices())
    by_name = {trace.name: trace for trace in figure.data}  # type: ignore[attr-defined]
    air, traffic, bins = by_name["Air quality"], by_name["Traffic"], by_name["Waste bins"]
    assert list(air.customdata) == ["aq-1", "aq-2"]
    assert list(air.marker.symbol) == ["circle", "circle"]  # both live: filled
    assert list(traffic.marker.symbol) == ["square-open"]  # stale: hollow
    assert list(bins.customdata) == ["wb-1"]  # the unlocated bin is left off the map
    assert list(bins.marker.color) == [STATUS_COLOUR[OFFLINE]]
    assert "offline" in bins.text[0]  # and said in words
    assert {"live (filled)", "stale (hollow)", "offline (hollow)"} <= set(by_name)
    assert list(by_name["districts"].text) == ["centre"]


def test_a_status_change_is_one_patched_point() -> None:
    before_frame, _ = _live(devices())
    later = devices()
    later.loc[later["device_id"] == "aq-2", "last_seen"] = NOW - timedelta(hours=1)
    after_frame, _ = _live(later)
    snapshots = [
        Snapshot(1, version, NOW, frame, frame["status"].map(  # type: ignore[arg-type]
            {s: i for i, s in enumerate(STATUS_ORDER)}).to_numpy(np.int8), {},
            *map_positions(frame), pd.DataFrame(), pd.DataFrame())
        for version, frame in ((1, before_frame), (2, after_frame))
    ]  # fmt: skip
    operations = map_patch(*snapshots).to_plotly_json()["operations"]
    assert {tuple(op["location"]) for op in operations} == {
        ("data", 1, "marker", "color", 1),
        ("data", 1, "marker", "symbol", 1),
        ("data", 1, "text", 1),
    }  # aq-2 is the second air-quality point; nothing else is sent


def test_map_of_an_empty_city_is_empty() -> None:
    shaped, figure = _live(devices().iloc[0:0])
    assert shaped.empty
    traces = figure.data  # type: ignore[attr-defined]
    assert all(t.x is None or len(t.x) == 0 for t in traces[:3])  # no device points


def test_city_supplied_boundaries_are_drawn_after_the_device_traces(tmp_path: Path) -> None:
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Northfield"}, "geometry": {
            "type": "Polygon", "coordinates": [[[-1.6, 53.8], [-1.5, 53.8], [-1.5, 53.9],
                                                [-1.6, 53.8]]]}},
        {"type": "Feature", "properties": {"site": "harbour"}, "geometry": {
            "type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]],
                                                    [[[2, 2], [3, 2], [3, 3], [2, 2]]]]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0, 0]}},
    ]}  # fmt: skip
    path = tmp_path / "districts.geojson"
    path.write_text(json.dumps(doc))
    outlines = boundaries.load(str(path))
    assert [(b.name, len(b.rings)) for b in outlines] == [("Northfield", 1), ("harbour", 2)]
    devices = pd.DataFrame({"device_id": ["a"], "name": ["A"], "site": ["north"],
                            "family": ["air"], "lat": [53.85], "lon": [-1.55],
                            "status": ["live"]})  # fmt: skip
    trace, point = map_positions(devices)
    figure = figures.live_map(devices, trace, point, outlines)
    names = [t.name for t in figure.data]
    assert names[:3] == ["Traffic", "Air quality", "Waste bins"]  # what patches address
    assert names.count("harbour") == 2
    assert "Northfield" in names


def test_landmarks_are_drawn_under_the_districts_and_after_the_devices() -> None:
    line = {"type": "LineString", "coordinates": [[-1.6, 53.8], [-1.5, 53.81]]}
    area = {"type": "Polygon", "coordinates": [[[-1.56, 53.8], [-1.55, 53.8], [-1.55, 53.81],
                                                [-1.56, 53.8]]]}  # fmt: skip
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Centre"}, "geometry": area},
        {"type": "Feature", "properties": {"kind": "road", "name": "A61"}, "geometry": line},
        {"type": "Feature", "properties": {"kind": "river", "name": "Aire"}, "geometry": line},
        {"type": "Feature", "properties": {"kind": "park", "name": "Roundhay"}, "geometry": area},
        {"type": "Feature", "properties": {"kind": "tramway"}, "geometry": line},  # unknown
        {"type": "Feature", "properties": {}, "geometry": line},  # a line is no district
    ]}  # fmt: skip
    found = boundaries.parse(doc)
    assert [(b.name, b.kind) for b in found] == [
        ("Centre", "district"),
        ("A61", "road"),
        ("Aire", "river"),
        ("Roundhay", "park"),
    ]
    devices = pd.DataFrame({"device_id": ["a"], "name": ["A"], "site": ["centre"],
                            "family": ["air"], "lat": [53.805], "lon": [-1.555],
                            "status": ["live"]})  # fmt: skip
    trace, point = map_positions(devices)
    figure = figures.live_map(devices, trace, point, found)
    names = [t.name for t in figure.data]
    assert names[:3] == ["Traffic", "Air quality", "Waste bins"]
    drawn = [n for n in names if n in ("Centre", "A61", "Aire", "Roundhay")]
    assert drawn == ["Roundhay", "Aire", "A61", "Centre"]  # areas, river, road, outlines
    park = next(t for t in figure.data if t.name == "Roundhay")
    assert park.fill == "toself"


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"type": "Feature"}',
        '{"type": "FeatureCollection", "features": [{"geometry": {}}]}',
    ],
)
def test_a_bad_boundaries_file_is_refused_with_the_reason(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(ConfigError, match="districts_file"):
        boundaries.load(str(path))
    with pytest.raises(ConfigError, match="districts_file"):
        boundaries.load(str(tmp_path / "missing.geojson"))


def test_tiles_from_the_city_server_lie_under_every_device() -> None:
    shaped = with_status(devices(), NOW, timedelta(minutes=5)).sort_values("device_id")
    shaped = shaped.reset_index(drop=True)
    trace, point = map_positions(shaped)
    url = "https://tiles.city.example/{z}/{x}/{y}.png"
    figure = figures.live_map(shaped, trace, point, tiles=(url, "© City mapping"))
    images = figure.layout.images
    assert 1 <= len(images) <= tiles.MAX_TILES
    zooms = {int(image.source.split("/")[3]) for image in images}
    assert len(zooms) == 1  # one zoom for the whole map
    assert zooms.pop() >= 12  # a city, not a continent
    for lon, lat in shaped[["lon", "lat"]].dropna().itertuples(index=False):
        assert any(image.x <= lon <= image.x + image.sizex
                   and image.y - image.sizey <= lat <= image.y for image in images)  # fmt: skip
    assert all(image.layer == "below" for image in images)
    assert any(a.text == "© City mapping" for a in figure.layout.annotations)


def test_a_tile_url_without_its_placeholders_is_refused() -> None:
    with pytest.raises(ValueError, match="tile_url"):
        DashboardConfig(tile_url="https://tiles.city.example/map.png")
