"""History for planners: a metric by district, stream or kind over a range, with its gaps.

The answer can be exported as CSV; bulk exports are the planner API's job.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html
from flask import current_app

from dashboard import ids, queries, security
from dashboard.attributes import attrs
from edge.metrics import METRICS
from history.decimate import lttb
from history.query import Answer, GroupBy, QueryError

RANGES = {"24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30),
          "365d": timedelta(days=365)}  # fmt: skip
RANGE_LABELS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days",
                "365d": "Last year"}  # fmt: skip
BUCKETS = {"auto": None, "1m": timedelta(minutes=1), "1h": timedelta(hours=1),
           "1d": timedelta(days=1)}  # fmt: skip
CHART_POINTS = 1500  # per series: what a screen can show


def auto_bucket(span: timedelta) -> timedelta:
    """About 200-1,500 buckets over ``span``, at a stored resolution.

    >>> auto_bucket(timedelta(days=1)), auto_bucket(timedelta(days=365))
    (datetime.timedelta(seconds=60), datetime.timedelta(days=1))
    """
    if span <= timedelta(days=1):
        return timedelta(minutes=1)
    if span <= timedelta(days=60):
        return timedelta(hours=1)
    return timedelta(days=1)


def _choice(
    label: str,
    component_id: str,
    options: dict[str, str],
    value: str | list[str],
    *,
    multi: bool = False,
    placeholder: str = "",
) -> html.Div:
    """One labelled drop-down: compact, so the filters take a line and the chart is in view."""
    return html.Div(className="filter", children=[
        html.Label(label, htmlFor=component_id, id=f"{component_id}-label"),
        dcc.Dropdown(id=component_id, value=value, multi=multi, clearable=multi,
                     placeholder=placeholder,
                     options=[{"label": text, "value": key} for key, text in options.items()]),
    ])  # fmt: skip


def layout(**_: object) -> html.Div:
    """The page; districts come from the registered devices."""
    sites = sorted(set(queries.devices()["site"]))
    metrics = {name: f"{m.label} ({m.display_unit})" if m.display_unit else m.label
               for name, m in METRICS.items()}  # fmt: skip
    return html.Div(className="page history", children=[
        html.H2("History"),
        html.Div(className="filters compact", children=[
            _choice("Metric", ids.HISTORY_METRIC, metrics, "pm2_5"),
            _choice("Districts", ids.HISTORY_SITE, {s: s for s in sites}, [], multi=True,
                    placeholder="All districts"),
            html.Div(className="filter", children=[
                html.Label("Devices", htmlFor=ids.HISTORY_DEVICES),
                dcc.Input(id=ids.HISTORY_DEVICES, type="text", debounce=True, maxLength=2000,
                          placeholder="All, or e.g. aq-0001, aq-0002"),
            ]),
            _choice("Range", ids.HISTORY_RANGE, RANGE_LABELS, "7d"),
            _choice("Bucket", ids.HISTORY_BUCKET, {"auto": "Automatic", "1m": "Minute",
                                                   "1h": "Hour", "1d": "Day"}, "auto"),
            _choice("One line per", ids.HISTORY_GROUP, {"site": "District", "stream": "Sensor",
                                                        "family": "Kind"}, "site"),
        ]),
        dcc.Graph(id=ids.HISTORY_CHART, config={"displaylogo": False}, className="history-chart"),
        html.Div(id=ids.HISTORY_GAPS, **attrs(role="status", aria_live="polite")),
        html.Button("Export this answer as CSV", id=ids.HISTORY_EXPORT),
        dcc.Download(id=ids.HISTORY_DOWNLOAD),
    ])  # fmt: skip


dash.register_page(  # type: ignore[no-untyped-call]
    __name__, path="/history", name="History", title="History", layout=layout
)


def _device_ids(text: str | None) -> list[str]:
    """Device ids typed by a person: separated by commas or spaces."""
    return [part for part in re.split(r"[,\s]+", text or "") if part][:200]


def _answer(
    metric: str, sites: list[str], devices: str | None, span: str, bucket: str, group: str
) -> Answer:
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - RANGES.get(span, RANGES["7d"])
    step = BUCKETS.get(bucket) or auto_bucket(end - start)
    group_by: GroupBy = group if group in ("site", "stream", "family") else "site"  # type: ignore[assignment]
    url = current_app.extensions["smartcity.settings"].reads_url

    return asyncio.run(
        queries.history(
            url, metric=metric, start=start, end=end, bucket=step, group_by=group_by,
            sites=sites or None, devices=_device_ids(devices),
        )
    )  # fmt: skip


def register(app: Dash) -> None:
    """This page's callbacks, on ``app`` (each app gets its own)."""

    @app.callback(
        Output(ids.HISTORY_CHART, "figure"),
        Output(ids.HISTORY_GAPS, "children"),
        Input(ids.HISTORY_METRIC, "value"),
        Input(ids.HISTORY_SITE, "value"),
        Input(ids.HISTORY_DEVICES, "value"),
        Input(ids.HISTORY_RANGE, "value"),
        Input(ids.HISTORY_BUCKET, "value"),
        Input(ids.HISTORY_GROUP, "value"),
    )
    def chart(
        metric: str, sites: list[str], devices: str | None, span: str, bucket: str, group: str
    ) -> tuple[Any, Any]:
        """The chart (long series thinned to what a screen shows) and the gaps, in words."""
        try:
            answer = _answer(metric, sites, devices, span, bucket, group)
        except QueryError as exc:
            return go.Figure(), html.P(str(exc))
        figure = go.Figure()
        zone = ZoneInfo(answer.zone)

        def local(moment: datetime) -> datetime:  # the city's wall clock, as people read it
            return moment.astimezone(zone).replace(tzinfo=None)

        series: dict[str, tuple[list[datetime], list[float]]] = {}
        for row in answer.rows:
            if row.value is not None:
                xs, ys = series.setdefault(row.group, ([], []))
                xs.append(local(row.bucket))
                ys.append(row.value)
        import numpy as np  # noqa: PLC0415

        for group_name, (xs, ys) in sorted(series.items()):
            keep = lttb(np.array([x.timestamp() for x in xs]), np.array(ys), CHART_POINTS)
            figure.add_trace(go.Scattergl(x=[xs[i] for i in keep], y=[ys[i] for i in keep],
                                          mode="lines", name=group_name))  # fmt: skip
        spec = METRICS.get(metric)
        figure.update_layout(margin={"l": 50, "r": 10, "t": 10, "b": 40},
                             xaxis_title=f"local time ({answer.zone})",
                             yaxis_title=spec.display_unit if spec else "",
                             legend={"orientation": "h"})  # fmt: skip
        gaps = [f"{group}: {local(first):%Y-%m-%d %H:%M} to {local(last):%Y-%m-%d %H:%M}"
                for group, runs in answer.gaps.items() for first, last in runs]  # fmt: skip
        text = f"{len(series)} series from {answer.level}; times in {answer.zone}. " + (
            f"{len(gaps)} gaps (no data): " + "; ".join(gaps[:20]) if gaps else "No gaps."
        )
        return figure, html.P(text)

    @app.callback(
        Output(ids.HISTORY_DOWNLOAD, "data"),
        Input(ids.HISTORY_EXPORT, "n_clicks"),
        State(ids.HISTORY_METRIC, "value"),
        State(ids.HISTORY_SITE, "value"),
        State(ids.HISTORY_DEVICES, "value"),
        State(ids.HISTORY_RANGE, "value"),
        State(ids.HISTORY_BUCKET, "value"),
        State(ids.HISTORY_GROUP, "value"),
        prevent_initial_call=True,
    )
    def export(
        _: int,
        metric: str,
        sites: list[str],
        devices: str | None,
        span: str,
        bucket: str,
        group: str,
    ) -> dict[str, Any]:
        """The answer as CSV (group, bucket, value, readings); audited."""
        answer = _answer(metric, sites, devices, span, bucket, group)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["group", "bucket", metric, "readings", "partial"])
        zone = ZoneInfo(answer.zone)
        for row in answer.rows:  # local time with its offset: unambiguous across DST changes
            at = row.bucket.astimezone(zone).isoformat()
            writer.writerow([row.group, at, row.value, row.count, row.partial])
        security.audit_action("export", source="dashboard", metric=metric, sites=sites,
                              devices=_device_ids(devices), range=span,
                              bucket=bucket, group_by=group, rows=len(answer.rows))  # fmt: skip
        # What dcc.Download takes: the file's text and name.
        return {"content": out.getvalue(), "filename": f"history-{metric}-{span}.csv",
                "base64": False, "type": "text/csv"}  # fmt: skip
