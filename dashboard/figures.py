"""Pure DataFrame -> Figure functions; tested without a database or a browser."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from dashboard.views import LIVE, OFFLINE, SILENT, STALE, STATUS_ORDER

# Symbol by family, filled when live and open otherwise: status never rests on colour alone.
FAMILY_SYMBOL = {"traffic": "square", "air": "circle", "waste": "triangle-up"}
FAMILY_LABEL = {"traffic": "Traffic", "air": "Air quality", "waste": "Waste bins"}
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
STATUS_COLOUR = {LIVE: "#009E73", STALE: "#E69F00", OFFLINE: "#D55E00", SILENT: "#7F7F7F"}


def _symbol(family: str, status: str) -> str:
    base = FAMILY_SYMBOL.get(family, "diamond")
    return base if status == LIVE else f"{base}-open"


def city_map(devices: pd.DataFrame, summaries: dict[str, str] | None = None) -> go.Figure:
    """Every device at its position, without map tiles (so it works offline).

    Args:
        devices: Rows with device_id, name, family, lat, lon and status.
        summaries: Latest values per device, shown on hover.
    """
    summaries = summaries or {}
    located = devices.dropna(subset=["lat", "lon"])
    figure = go.Figure()
    for family, label in FAMILY_LABEL.items():
        for status in STATUS_ORDER:
            rows = located[(located["family"] == family) & (located["status"] == status)]
            if rows.empty:
                continue
            hover = [
                f"<b>{r['name']}</b><br>{r['device_id']} · {status}<br>"
                + summaries.get(str(r["device_id"]), "no readings yet")
                for r in rows.to_dict("records")
            ]
            figure.add_trace(
                go.Scattergl(
                    x=rows["lon"],
                    y=rows["lat"],
                    mode="markers",
                    name=f"{label}: {status}",
                    marker={
                        "symbol": _symbol(family, status),
                        "size": 11,
                        "color": STATUS_COLOUR[status],
                        "line": {"width": 2, "color": STATUS_COLOUR[status]},
                    },
                    text=hover,
                    hoverinfo="text",
                    customdata=rows["device_id"],
                )
            )
    if not located.empty:
        # District names at the centre of their devices, so the map reads without tiles.
        centres = located.groupby("site")[["lat", "lon"]].mean()
        figure.add_trace(
            go.Scatter(
                x=centres["lon"],
                y=centres["lat"],
                text=list(centres.index),
                mode="text",
                textfont={"size": 13, "color": "#1b1f24"},
                hoverinfo="skip",
                showlegend=False,
                name="districts",
            )
        )
    mid_lat = float(located["lat"].mean()) if not located.empty else 0.0
    figure.update_layout(
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        plot_bgcolor="#F4F6F8",
        uirevision="city-map",  # keep the user's zoom across live updates
        xaxis={"visible": False},
        yaxis={
            "visible": False,
            "scaleanchor": "x",
            # Equirectangular: a degree of longitude is shorter than one of latitude.
            "scaleratio": 1 / max(math.cos(math.radians(mid_lat)), 0.1),
        },
    )
    return figure
