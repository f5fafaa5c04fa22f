"""Pure DataFrame -> Figure functions; tested without a database or a browser."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.boundaries import Boundary
from dashboard.tiles import tile_images
from dashboard.views import LIVE, OFFLINE, SILENT, STALE, STATUS_ORDER

# Symbol by family, filled when live and open otherwise: status never rests on colour alone.
FAMILY_SYMBOL = {"traffic": "square", "air": "circle", "waste": "triangle-up"}
FAMILY_LABEL = {"traffic": "Traffic", "air": "Air quality", "waste": "Waste bins"}
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
STATUS_COLOUR = {LIVE: "#009E73", STALE: "#E69F00", OFFLINE: "#D55E00", SILENT: "#7F7F7F"}


# How the city under the devices is drawn, by kind (see dashboard.boundaries).
MAP_STYLE: dict[str, dict[str, object]] = {
    "district": {"line": {"color": "#4a5561", "width": 1}},
    "road": {"line": {"color": "#c9ccd1", "width": 4}},
    "river": {"line": {"color": "#8fb8de", "width": 6}},
    "park": {
        "line": {"color": "#9cc79a", "width": 1},
        "fill": "toself",
        "fillcolor": "rgba(156, 199, 154, 0.45)",
    },
    "water": {
        "line": {"color": "#8fb8de", "width": 1},
        "fill": "toself",
        "fillcolor": "rgba(143, 184, 222, 0.5)",
    },
}


def marker_symbol(family: str, status: str) -> str:
    """The marker: the family's shape, filled when live and hollow otherwise."""
    base = FAMILY_SYMBOL.get(family, "diamond")
    return base if status == LIVE else f"{base}-open"


def hover(name: object, device: object, status: str) -> str:
    """A point's hover text: what it is and its status, in words."""
    return f"<b>{name}</b><br>{device} · {status}"


def live_map(
    devices: pd.DataFrame,
    trace: np.ndarray,
    point: np.ndarray,
    boundaries: list[Boundary] | None = None,
    tiles: tuple[str, str] = ("", ""),
) -> go.Figure:
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
    # After the device traces (patches address those by index); areas first, then lines, then
    # district outlines, each drawn below the devices' own layer.
    order = {"park": 0, "water": 0, "river": 1, "road": 2, "district": 3}
    for boundary in sorted(boundaries or [], key=lambda b: order.get(b.kind, 3)):
        style = MAP_STYLE.get(boundary.kind, MAP_STYLE["district"])
        for ring in boundary.rings:
            figure.add_trace(go.Scatter(
                x=[x for x, _ in ring], y=[y for _, y in ring], mode="lines",
                hoverinfo="text", text=boundary.name, showlegend=False, name=boundary.name,
                **style,
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
    url, credit = tiles
    if url and not located.empty:
        pad = 0.01  # degrees around the outermost devices
        figure.update_layout(images=tile_images(
            url, float(located["lon"].min()) - pad, float(located["lon"].max()) + pad,
            float(located["lat"].min()) - pad, float(located["lat"].max()) + pad))  # fmt: skip
        if credit:
            figure.add_annotation(text=credit, xref="paper", yref="paper", x=1, y=0,
                                  xanchor="right", yanchor="bottom", showarrow=False,
                                  font={"size": 11, "color": "#1b1f24"},
                                  bgcolor="rgba(255,255,255,0.8)")  # fmt: skip
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
