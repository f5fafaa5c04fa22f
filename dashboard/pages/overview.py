"""Overview: the whole city at a glance, refreshed live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dash
import pandas as pd
from dash import Dash, Input, Output, dcc, html
from flask import current_app

from dashboard import figures, ids, queries
from dashboard.attributes import attrs
from dashboard.views import STATUS_ORDER, latest_summary, with_status

layout = html.Div(
    className="page overview",
    children=[
        html.Section(id=ids.OVERVIEW_CARDS, className="cards", **attrs(aria_label="City totals")),
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
            className="table-panel",
            children=[
                html.H2("Devices and their latest readings"),
                html.Div(id=ids.OVERVIEW_TABLE),
            ],
        ),
    ],
)

dash.register_page(  # type: ignore[no-untyped-call]  # dash leaves it unannotated
    __name__, path="/", name="Overview", title="Overview", layout=layout
)


def _card(label: str, value: int | str) -> html.Div:
    return html.Div(className="card", children=[html.Span(label), html.Strong(str(value))])


def _table(shaped: pd.DataFrame, summaries: dict[str, str]) -> html.Table:
    header = html.Thead(
        html.Tr(
            [html.Th(h, scope="col") for h in ("Device", "District", "Kind", "Status", "Latest")]
        )
    )
    rows = []
    for record in shaped.to_dict("records"):
        device, status = str(record["device_id"]), str(record["status"])
        badge = f"status status-{status.split(maxsplit=1)[0]}"
        rows.append(
            html.Tr(
                [
                    html.Th(device, scope="row"),
                    html.Td(str(record["site"])),
                    html.Td(str(record["family"])),
                    html.Td(html.Span(status, className=badge)),
                    html.Td(summaries.get(device, "")),
                ],
                **attrs(data_device=device),
            )
        )
    return html.Table([header, html.Tbody(rows)], className="devices")


def register(app: Dash) -> None:
    """This page's callbacks, on ``app`` (each app gets its own)."""

    @app.callback(
        Output(ids.OVERVIEW_CARDS, "children"),
        Output(ids.OVERVIEW_MAP, "figure"),
        Output(ids.OVERVIEW_TABLE, "children"),
        Output(ids.LAST_UPDATE, "children"),
        Input(ids.REFRESH, "n_intervals"),
    )
    def refresh(_: int | None) -> tuple[list[html.Div], object, html.Table, str]:
        """Query devices and latest values, then redraw cards, map and table."""
        settings = current_app.extensions["smartcity.settings"]
        now = datetime.now(UTC)
        stale_after = timedelta(seconds=settings.stale_after_s)
        shaped = with_status(queries.devices(), now, stale_after)
        summaries = latest_summary(queries.latest_values())
        counts = shaped["status"].value_counts()
        totals = queries.totals(now - stale_after)
        cards = [_card("Devices", totals["devices"])]
        cards += [_card(status.capitalize(), int(counts.get(status, 0))) for status in STATUS_ORDER]
        cards.append(_card("Rejected messages (recent)", totals["rejections"]))
        updated = f"Updated {now.astimezone().strftime('%H:%M:%S')}"
        return cards, figures.city_map(shaped, summaries), _table(shaped, summaries), updated
