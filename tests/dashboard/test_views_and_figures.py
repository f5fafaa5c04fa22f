"""Pure shaping and figures, without a database or a browser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from dashboard.figures import STATUS_COLOUR, city_map
from dashboard.views import LIVE, OFFLINE, SILENT, STALE, latest_summary, with_status

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


def test_map_marks_status_by_symbol_as_well_as_colour() -> None:
    figure = city_map(with_status(devices(), NOW, timedelta(minutes=5)), {"aq-1": "PM2.5 3 µg/m³"})
    by_name = {trace.name: trace for trace in figure.data}
    assert set(by_name) == {
        "Air quality: live",
        "Traffic: stale",
        "Waste bins: offline",
        "districts",
    }  # the unlocated bin is left off the map
    assert list(by_name["districts"].text) == ["centre"]
    assert by_name["Air quality: live"].marker.symbol == "circle"
    assert by_name["Traffic: stale"].marker.symbol == "square-open"
    assert by_name["Waste bins: offline"].marker.color == STATUS_COLOUR[OFFLINE]
    assert "PM2.5 3 µg/m³" in by_name["Air quality: live"].text[0]
    assert list(by_name["Air quality: live"].customdata) == ["aq-1", "aq-2"]


def test_map_of_an_empty_city_is_empty() -> None:
    empty = with_status(devices().iloc[0:0], NOW, timedelta(minutes=5))
    assert city_map(empty).data == ()


def test_latest_summary_orders_metrics_like_the_catalogue() -> None:
    latest = pd.DataFrame(
        {
            "device_id": ["aq-1", "aq-1", "tr-1"],
            "metric": ["temperature", "pm2_5", "vehicle_count"],
            "unit": ["degC", "ug/m3", "count"],
            "ts": [NOW] * 3,
            "value": [6.25, 12.5, 31.0],
        }
    )
    assert latest_summary(latest) == {
        "aq-1": "PM2.5 12.5 µg/m³ · Temperature 6.2 °C",
        "tr-1": "Vehicles 31 vehicles",
    }
