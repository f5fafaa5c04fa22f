"""Overview: the whole city at a glance, kept live by patches, not redraws.

The page draws the map once, then each tick sends only what changed since the version it
shows: the colour, symbol and text of the devices whose status changed (a plotly ``Patch``),
and the cards, attention list and alert feed only when they differ. All pages read the one
shared snapshot (``dashboard.live``), so ten open screens cost one query per tick.
"""

from __future__ import annotations

import hashlib
from typing import Any

import dash
import pandas as pd
from dash import Dash, Input, Output, State, dcc, html
from flask import current_app

from dashboard import figures, ids
from dashboard.attributes import attrs
from dashboard.live import CityState, Snapshot, map_patch
from dashboard.views import LIVE, STATUS_ORDER
from processing import aqi

ATTENTION_ROWS = 50  # devices listed by name; the map shows them all
STANDBY_BEHIND_S = 60  # a standby whose last replayed commit is older is said to be behind

layout = html.Div(
    className="page overview",
    children=[
        html.Section(id=ids.OVERVIEW_CARDS, className="cards", **attrs(aria_label="City totals")),
        html.Section(
            id=ids.OVERVIEW_DISTRICTS, className="cards districts", **attrs(aria_label="Districts")
        ),
        html.Div(
            className="overview-layout",
            children=[
                html.Section(
                    className="map-panel",
                    children=[
                        html.H2("Devices on the map"),
                        dcc.Graph(
                            id=ids.OVERVIEW_MAP,
                            config={"displaylogo": False, "scrollZoom": True},
                            style={"height": "60vh"},
                        ),
                    ],
                ),
                html.Section(
                    className="detail-panel",
                    children=[
                        html.H2("Newest alerts"),
                        html.Ol(
                            id=ids.OVERVIEW_FEED,
                            className="feed",
                            **attrs(aria_live="polite", aria_relevant="additions"),
                        ),
                    ],
                ),
            ],
        ),
        html.Section(
            className="table-panel",
            children=[html.H2("Devices that need attention"), html.Div(id=ids.OVERVIEW_TABLE)],
        ),
        dcc.Store(id=ids.OVERVIEW_VERSION, data=None),
    ],
)

dash.register_page(  # type: ignore[no-untyped-call]  # dash leaves it unannotated
    __name__, path="/", name="Overview", title="Overview", layout=layout
)


def _card(label: str, value: int | str) -> html.Div:
    return html.Div(className="card", children=[html.Span(label), html.Strong(str(value))])


def _cards(snapshot: Snapshot) -> list[html.Div]:
    counts = pd.Series(snapshot.status).value_counts()
    cards = [_card("Devices", len(snapshot.devices))]
    cards += [_card(status.capitalize(), int(counts.get(code, 0)))
              for code, status in enumerate(STATUS_ORDER)]  # fmt: skip
    cards.append(_card("Rejected messages (recent)", snapshot.totals["rejections"]))
    return cards


def _next_bin(row: dict[str, Any]) -> str:
    """The detectors' forecast for the district's first bin to fill, in words."""
    hours = row.get("next_h")
    if hours is None or pd.isna(hours):
        return "no bin filling up"
    when = "within the hour" if hours < 1 else f"in about {hours:.0f} h"
    return f"next full: {row['next_bin']} {when}"


def _district(row: dict[str, Any]) -> html.Div:
    pm = row["worst_pm2_5"]
    band = aqi.band(aqi.DEFAULT_SCHEME, "pm2_5", float(pm)) if pd.notna(pm) else 0
    air = aqi.band_name(aqi.DEFAULT_SCHEME, band) if band else "no air data"
    lines = [
        f"{row['live']} of {row['devices']} devices live",
        f"air: {air}",
        f"{row['congested']} congested roads",
        f"{row['bins_over_80']} bins above 80 %",
        _next_bin(row),
        f"{row['open_alerts']} open alerts",
    ]
    return html.Div(className="card district", children=[
        html.H3(row["site"]), html.Ul([html.Li(line) for line in lines])])  # fmt: skip


def _sensor_link(device: str) -> dcc.Link:
    return dcc.Link(device, href=f"/sensor?device={device}")


def _attention(snapshot: Snapshot) -> html.Div:
    frame = snapshot.devices[snapshot.devices["status"] != LIVE]
    if frame.empty:
        return html.Div(html.P("Every device is live."))
    rows = [html.Tr([html.Th(_sensor_link(r["device_id"]), scope="row"), html.Td(r["site"]),
                     html.Td(r["family"]), html.Td(html.Span(r["status"], className="status "
                     f"status-{r['status'].split(maxsplit=1)[0]}"))],
                    **attrs(data_device=r["device_id"]))
            for r in frame.head(ATTENTION_ROWS).to_dict("records")]  # fmt: skip
    header = html.Thead(html.Tr([html.Th(h, scope="col") for h in
                                 ("Device", "District", "Kind", "Status")]))  # fmt: skip
    more = len(frame) - ATTENTION_ROWS
    note = html.P(f"... and {more:,} more (the Fleet page lists them all)") if more > 0 else ""
    return html.Div([html.Table([header, html.Tbody(rows)], className="devices"), note])


def _feed(snapshot: Snapshot) -> list[html.Li]:
    return [html.Li([html.Span(r["severity"], className=f"severity severity-{r['severity']}"),
                     f" {r['kind'].replace('_', ' ')} at {r['device_id']} ({r['site']})"])
            for r in snapshot.feed.to_dict("records")]  # fmt: skip


def last_update(snapshot: Snapshot) -> str:
    """When the shown snapshot was taken and, read from a standby, how fresh its data is.

    A standby's data is as fresh as the last commit it replayed; ingest commits every few
    seconds, so an as-of a minute old means the standby has fallen behind.
    """
    text = f"Updated {snapshot.taken_at.astimezone():%H:%M:%S}"
    as_of = snapshot.data_as_of
    if as_of is not None:
        text += f" · data as of {as_of.astimezone():%H:%M:%S}"
        behind = (snapshot.taken_at - as_of).total_seconds()
        if behind >= STANDBY_BEHIND_S:
            text += f" ({behind:.0f} s behind)"
    return text


def _signature(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def register(app: Dash) -> None:
    """This page's callbacks, on ``app`` (each app gets its own)."""

    @app.callback(
        Output(ids.OVERVIEW_CARDS, "children"),
        Output(ids.OVERVIEW_DISTRICTS, "children"),
        Output(ids.OVERVIEW_MAP, "figure"),
        Output(ids.OVERVIEW_TABLE, "children"),
        Output(ids.OVERVIEW_FEED, "children"),
        Output(ids.LAST_UPDATE, "children"),
        Output(ids.OVERVIEW_VERSION, "data"),
        Input(ids.REFRESH, "n_intervals"),
        State(ids.OVERVIEW_VERSION, "data"),
    )
    def refresh(_: int | None, shown: dict[str, Any] | None) -> tuple[Any, ...]:
        """Everything the first time; afterwards only what changed since the shown version."""
        state: CityState = current_app.extensions["smartcity.city"]
        now = state.current()
        parts = {
            "cards": _signature(now.totals, now.status.tobytes()),
            "districts": _signature(now.districts.to_numpy().tolist()),
            "attention": _signature(now.status.tobytes(), now.layout),
            "feed": _signature(now.feed["alert_id"].tolist()),
        }
        before = state.at(shown["version"]) if shown and shown.get("layout") == now.layout else None
        if before is None:
            boundaries = current_app.extensions["smartcity.boundaries"]
            settings = current_app.extensions["smartcity.settings"]
            tiles = (settings.tile_url, settings.tile_attribution)
            figure: Any = figures.live_map(now.devices, now.trace, now.point, boundaries, tiles)
        elif before.version == now.version:
            figure = dash.no_update
        else:
            figure = map_patch(before, now)
        old = (shown or {}).get("parts", {}) if before is not None else {}

        def unless_same(name: str, build: Any) -> Any:
            return dash.no_update if old.get(name) == parts[name] else build(now)

        updated = last_update(now)
        return (
            unless_same("cards", _cards),
            unless_same("districts", lambda s: [_district(r) for r in
                                                s.districts.to_dict("records")]),
            figure,
            unless_same("attention", _attention),
            unless_same("feed", _feed),
            updated,
            {"layout": now.layout, "version": now.version, "parts": parts},
        )  # fmt: skip
