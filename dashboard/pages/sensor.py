"""Sensor detail: a stream's readings, live, with the detectors' learned band and anomalies.

The band is the detectors' own: the stream's history is replayed through the same kernels
(a week of learning before the range shown), so it is what each reading was compared with.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import dash
import numpy as np
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html

from dashboard import ids, queries
from dashboard.attributes import attrs
from edge.metrics import METRICS
from history.decimate import lttb
from processing.offline import baseline_band

RANGES = {"6h": timedelta(hours=6), "24h": timedelta(days=1), "7d": timedelta(days=7)}
LEARNING = timedelta(days=7)
ANOMALY_SCORE = 0.9
CHART_POINTS = 2000


def _streams(device: str | None, stream: str | None) -> list[dict[str, Any]]:
    return queries.device_streams(device, int(stream) if stream and stream.isdigit() else None)


PICKER_DEVICES = 5_000  # a datalist this long still opens at once; any id can be typed


def _picker(device: str | None) -> html.Form:
    """Another device by id, typed or picked from the list (a plain GET form: no script)."""
    return html.Form(
        action="/sensor",
        method="get",
        className="picker",
        children=[
            html.Label("Device", htmlFor=ids.SENSOR_PICK),
            dcc.Input(
                id=ids.SENSOR_PICK, name="device", type="text", value=device or "",
                list=ids.SENSOR_DEVICES, autoComplete="off",
            ),
            html.Datalist(
                id=ids.SENSOR_DEVICES,
                children=[html.Option(value=d) for d in queries.device_ids(PICKER_DEVICES)],
            ),
            html.Button("Show", type="submit"),
        ],
    )  # fmt: skip


def layout(device: str | None = None, stream: str | None = None, **_: object) -> html.Div:
    """The page for ``?device=...`` or ``?stream=...``, with a picker for any other device.

    Opened from the menu, it shows the device of the newest alert (or the first device).
    """
    if not device and not stream:
        device = queries.newest_alert_device()
    streams = _streams(device, stream) if device or stream else []
    if not streams:
        return html.Div(
            className="page sensor",
            children=[
                html.H2("Sensor"),
                _picker(device),
                html.P(
                    f"No device or stream {device or stream!r}. Pick one above, or from the"
                    " Overview, Alerts or Fleet page."
                    if device or stream
                    else "No devices are registered yet."
                ),
            ],
        )
    chosen = next((s for s in streams if str(s["stream_id"]) == stream), streams[0])
    first = streams[0]
    facts = (
        ("District", first["site"]),
        ("Kind", first["family"]),
        ("Position", f"{first['lat']}, {first['lon']}" if first["lat"] else "not given"),
        ("Last seen", first["last_seen"] or "never"),
        ("State", first["state"] or "unknown"),
        ("Software", first["software"] or "unknown"),
    )
    choices = [
        html.A(
            METRICS[s["metric"]].label if s["metric"] in METRICS else s["metric"],
            href=f"/sensor?stream={s['stream_id']}",
            className="nav-chip",
            **attrs(aria_current="page" if s is chosen else "false"),
        )
        for s in streams
    ]
    return html.Div(
        className="page sensor",
        children=[
            html.H2(f"{first['name'] or first['device_id']} ({first['device_id']})"),
            _picker(first["device_id"]),
            html.Dl(
                [item for label, value in facts for item in (html.Dt(label), html.Dd(str(value)))],
                className="facts",
            ),
            html.Nav(choices, className="chips", **attrs(aria_label="Streams of this device")),
            dcc.Store(id=ids.SENSOR_STREAM, data=chosen["stream_id"]),
            dcc.Store(id=ids.SENSOR_SHOWN, data=None),
            html.Fieldset(
                className="filter",
                children=[
                    html.Legend("Range"),
                    dcc.RadioItems(
                        id=ids.SENSOR_RANGE,
                        value="24h",
                        inline=True,
                        options=[{"label": k, "value": k} for k in RANGES],
                        inputClassName="check",
                        labelClassName="check-label",
                    ),
                ],
            ),
            dcc.Graph(id=ids.SENSOR_CHART, config={"displaylogo": False}, style={"height": "50vh"}),
            html.Div(id=ids.SENSOR_NOTES, **attrs(role="status", aria_live="polite")),
        ],
    )


dash.register_page(  # type: ignore[no-untyped-call]
    __name__, path="/sensor", name="Sensor", title="Sensor", layout=layout
)


def _gaps(ts: np.ndarray, start_us: int, end_us: int, cadence_us: float) -> list[str]:
    """Silences longer than five usual intervals (at least 5 minutes), in words."""
    edges = np.concatenate(([start_us], ts, [end_us]))
    limit = max(5 * cadence_us, 300e6)
    found = np.flatnonzero(np.diff(edges) > limit)
    return [f"{_when(edges[i])} to {_when(edges[i + 1])}" for i in found[:20]]


def _when(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).astimezone().strftime("%Y-%m-%d %H:%M")


def _to_time(us: np.ndarray) -> np.ndarray:
    return np.asarray(us, dtype="datetime64[us]")


def _figure(ts: np.ndarray, values: np.ndarray, shown_from: int, metric: str) -> tuple[Any, str]:
    scores, band_ts, expected, sigma = baseline_band(ts, values, shown_from)
    shown = ts >= shown_from
    x_us, y, s = ts[shown], values[shown], scores[shown]
    keep = lttb(x_us.astype(np.float64), y, CHART_POINTS) if x_us.size > 2 else np.arange(x_us.size)
    figure = go.Figure()
    band_x = _to_time(band_ts)
    figure.add_trace(
        go.Scatter(
            x=band_x,
            y=expected + 3 * sigma,
            mode="lines",
            line={"width": 0},
            showlegend=False,
            hoverinfo="skip",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=band_x,
            y=expected - 3 * sigma,
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(0, 114, 178, 0.18)",
            name="learned band (expected ± 3 sigma)",
            hoverinfo="skip",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=band_x,
            y=expected,
            mode="lines",
            name="expected",
            line={"color": "#0072B2", "dash": "dot", "width": 1},
        )
    )
    figure.add_trace(
        go.Scattergl(
            x=_to_time(x_us[keep]),
            y=y[keep],
            mode="lines",
            name="readings",
            line={"color": "#1b1f24", "width": 1.2},
        )
    )
    odd = np.flatnonzero(s > ANOMALY_SCORE)
    figure.add_trace(
        go.Scatter(
            x=_to_time(x_us[odd]),
            y=y[odd],
            mode="markers",
            name=f"anomaly (score > {ANOMALY_SCORE})",
            marker={"symbol": "x", "size": 10, "color": "#D55E00"},
        )
    )
    spec = METRICS.get(metric)
    figure.update_layout(
        margin={"l": 50, "r": 10, "t": 10, "b": 40},
        uirevision=metric,
        yaxis_title=spec.display_unit if spec else "",
        legend={"orientation": "h"},
    )
    return figure, f"{x_us.size:,} readings shown, {odd.size} marked as anomalies."


def register(app: Dash) -> None:
    """This page's callbacks, on ``app`` (each app gets its own)."""

    @app.callback(
        Output(ids.SENSOR_CHART, "figure"),
        Output(ids.SENSOR_NOTES, "children"),
        Output(ids.SENSOR_SHOWN, "data"),
        Input(ids.REFRESH, "n_intervals"),
        Input(ids.SENSOR_RANGE, "value"),
        Input(ids.SENSOR_STREAM, "data"),
        State(ids.SENSOR_SHOWN, "data"),
    )
    def chart(_: int | None, span: str, stream_id: int | None, shown: str | None) -> Any:
        """The chart, redrawn only when a new reading arrived or the choice changed."""
        if stream_id is None:
            raise dash.exceptions.PreventUpdate
        now = datetime.now(UTC)
        window = RANGES.get(span, RANGES["24h"])
        ts, values = queries.readings_since(int(stream_id), now - window - LEARNING)
        signature = hashlib.sha256(f"{stream_id}:{span}:{ts[-1:]}".encode()).hexdigest()[:16]
        if signature == shown:
            return dash.no_update, dash.no_update, shown
        metric = queries.stream_metric(int(stream_id))
        start_us = int((now - window).timestamp() * 1e6)
        if ts.size == 0:
            return go.Figure(), html.P("No readings in this range."), signature
        figure, summary = _figure(ts, values, start_us, metric)
        recent = ts[ts >= start_us]
        cadence = float(np.median(np.diff(ts))) if ts.size > 1 else 60e6
        gaps = _gaps(recent, start_us, int(now.timestamp() * 1e6), cadence)
        last = _when(int(ts[-1]))
        words = f"{summary} Last reading {last}. " + (
            f"Gaps (no data): {'; '.join(gaps)}." if gaps else "No gaps."
        )
        return figure, html.P(words), signature
