"""Pure DataFrame -> Figure functions; tested without a database or a browser."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.views import LIVE, OFFLINE, SILENT, STALE, STATUS_ORDER

# Symbol by family, filled when live and open otherwise: status never rests on colour alone.
FAMILY_SYMBOL = {"traffic": "square", "air": "circle", "waste": "triangle-up"}
FAMILY_LABEL = {"traffic": "Traffic", "air": "Air quality", "waste": "Waste bins"}
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
STATUS_COLOUR = {LIVE: "#009E73", STALE: "#E69F00", OFFLINE: "#D55E00", SILENT: "#7F7F7F"}


def marker_symbol(family: str, status: str) -> str:
    """The marker: the family's shape, filled when live and hollow otherwise."""
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
                        "symbol": marker_symbol(family, status),
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


def hover(name: object, device: object, status: str) -> str:
    """A point's hover text: what it is and its status, in words."""
    return f"<b>{name}</b><br>{device} · {status}"


def live_map(devices: pd.DataFrame, trace: np.ndarray, point: np.ndarray) -> go.Figure:
    """Every device, one trace per family, status by symbol fill and colour per point.

    Points follow ``trace``/``point`` (see ``live.map_positions``), so a status change is
    patched into one point's colour, symbol and text instead of redrawing the map.
    """
    figure = go.Figure()
    for index, family in enumerate(FAMILY_LABEL):
        rows = devices[trace == index]
        rows = rows.iloc[np.argsort(point[trace == index])]
        statuses = rows["status"].tolist()
        figure.add_trace(
            go.Scattergl(
                x=rows["lon"], y=rows["lat"], mode="markers", name=FAMILY_LABEL[family],
                marker={
                    "symbol": [marker_symbol(family, s) for s in statuses],
                    "size": 9,
                    # Hollow symbols draw their outline in the marker colour: one colour array.
                    "color": [STATUS_COLOUR[s] for s in statuses],
                },
                text=[hover(n, d, s) for n, d, s in zip(rows["name"], rows["device_id"],
                                                       statuses, strict=True)],
                hoverinfo="text", customdata=rows["device_id"],
            )
        )  # fmt: skip
    for status in STATUS_ORDER:  # the key: each status's colour and fill, named in words
        fill = "filled" if status == LIVE else "hollow"
        figure.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=f"{status} ({fill})",
            marker={"symbol": "circle" if status == LIVE else "circle-open", "size": 10,
                    "color": STATUS_COLOUR[status]}, hoverinfo="skip",
        ))  # fmt: skip
    located = devices[trace >= 0]
    if not located.empty:
        centres = located.groupby("site")[["lat", "lon"]].mean()
        figure.add_trace(go.Scatter(
            x=centres["lon"], y=centres["lat"], text=list(centres.index), mode="text",
            textfont={"size": 13, "color": "#1b1f24"}, hoverinfo="skip", showlegend=False,
            name="districts",
        ))  # fmt: skip
    mid_lat = float(located["lat"].mean()) if not located.empty else 0.0
    figure.update_layout(
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        plot_bgcolor="#F4F6F8",
        uirevision="city-map",
        xaxis={"visible": False},
        yaxis={"visible": False, "scaleanchor": "x",
               "scaleratio": 1 / max(math.cos(math.radians(mid_lat)), 0.1)},
    )  # fmt: skip
    return figure
