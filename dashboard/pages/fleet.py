"""Fleet: every device's health for technicians, filtered to what needs a visit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dash
import pandas as pd
from dash import Dash, Input, Output, State, dcc, html
from flask import current_app

from dashboard import ids, queries, remote_config, security
from dashboard.attributes import attrs
from dashboard.views import problems, with_status

REJECTIONS_SINCE = timedelta(hours=24)


def layout(**_: object) -> html.Div:
    """The page; districts come from the registered devices."""
    sites = sorted(set(queries.devices()["site"]))
    return html.Div(
        className="page fleet",
        children=[
            html.H2("Fleet health"),
            html.Div(
                className="filters",
                children=[
                    html.Fieldset(
                        className="filter",
                        children=[
                            html.Legend("Show"),
                            dcc.RadioItems(
                                id=ids.FLEET_FILTER,
                                options=[
                                    {"label": "Needs a visit", "value": "visit"},
                                    {"label": "Every device", "value": "all"},
                                ],
                                value="visit",
                                inline=True,
                                inputClassName="check",
                                labelClassName="check-label",
                            ),
                        ],
                    ),
                    html.Fieldset(
                        className="filter",
                        children=[
                            html.Legend("Districts (none ticked: all)"),
                            dcc.Checklist(
                                id=ids.FLEET_SITE,
                                options=sites,
                                value=[],
                                inline=True,
                                inputClassName="check",
                                labelClassName="check-label",
                            ),
                        ],
                    ),
                ],
            ),
            html.P(id=ids.FLEET_SUMMARY, **attrs(role="status", aria_live="polite")),
            html.Details(
                className="detail-panel",
                children=[
                    html.Summary("Send a device its configuration"),
                    html.P(
                        "Retained on the device's config topic; the agent checks it as shown"
                        " here and reports the version it runs (Software / config column)."
                    ),
                    html.Label("Device", htmlFor=ids.FLEET_CONFIG_DEVICE),
                    dcc.Input(id=ids.FLEET_CONFIG_DEVICE, type="text", maxLength=64),
                    html.Label("Configuration (JSON)", htmlFor=ids.FLEET_CONFIG_DOCUMENT),
                    dcc.Textarea(
                        id=ids.FLEET_CONFIG_DOCUMENT,
                        className="comment",
                        maxLength=8000,
                        value='{"version": 1, "batch_interval_s": 30}',
                    ),
                    html.Button("Send", id=ids.FLEET_CONFIG_SEND),
                    html.Div(
                        id=ids.FLEET_CONFIG_RESULT, **attrs(role="status", aria_live="polite")
                    ),
                ],
            ),
            html.Section(
                id=ids.FLEET_TABLE, className="table-panel", **attrs(aria_label="Devices")
            ),
        ],
    )


dash.register_page(  # type: ignore[no-untyped-call]
    __name__, path="/fleet", name="Fleet", title="Fleet", layout=layout
)

COLUMNS = (
    "Device", "District", "Kind", "State", "Last seen", "Software / config", "Backlog",
    "Dropped", "Sensor faults", "Clock", "Rejected (24 h)", "Why it needs a visit",
)  # fmt: skip


def _ago(moment: Any, now: datetime) -> str:
    if moment is None or pd.isna(moment):
        return "never"
    seconds = int((now - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


def _cells(row: dict[str, Any], found: list[str], now: datetime) -> list[html.Td | html.Th]:
    health = row["health"] or {}
    synced = health.get("clock_synced")
    clock = "" if synced is None else ("synchronised" if synced else "NOT synchronised")
    software = " / ".join(str(health[k]) for k in ("software", "config_version") if health.get(k))
    texts = (row["site"], row["family"], row["status"], _ago(row["last_seen"], now), software,
             health.get("backlog", ""), health.get("dropped", ""), health.get("sensor_faults", ""),
             clock, row["rejections"] or "", "; ".join(found) or "nothing")  # fmt: skip
    device = dcc.Link(row["device_id"], href=f"/sensor?device={row['device_id']}")
    return [html.Th(device, scope="row"), *(html.Td(str(t)) for t in texts)]


def _send_configuration(device: str, document: str) -> str:
    """Validate, publish and audit; the outcome in words."""
    found = queries.site_and_sensors(device)
    if found is None:
        return f"No device {device!r}."
    site, sensors = found
    payload = document.encode()
    try:
        remote = remote_config.validated(payload, sensors)
    except remote_config.ConfigError as exc:
        return f"Not sent: {exc}"
    settings = current_app.extensions["smartcity.settings"]
    try:
        remote_config.send(settings, site, device, payload)
    except remote_config.BrokerError as exc:
        return f"Not sent: {exc}"
    security.audit_action("config-change", device=device, version=remote.version,
                          document=document)  # fmt: skip
    return f"Configuration {remote.version} sent to {device}."


def register(app: Dash) -> None:
    """This page's callbacks, on ``app`` (each app gets its own)."""

    @app.callback(
        Output(ids.FLEET_CONFIG_RESULT, "children"),
        Input(ids.FLEET_CONFIG_SEND, "n_clicks"),
        State(ids.FLEET_CONFIG_DEVICE, "value"),
        State(ids.FLEET_CONFIG_DOCUMENT, "value"),
        prevent_initial_call=True,
    )
    def send(_: int, device: str | None, document: str | None) -> str:
        """Send the configuration to the device (technicians, operators and admins)."""
        return _send_configuration((device or "").strip(), document or "")

    @app.callback(
        Output(ids.FLEET_TABLE, "children"),
        Output(ids.FLEET_SUMMARY, "children"),
        Input(ids.REFRESH, "n_intervals"),
        Input(ids.FLEET_FILTER, "value"),
        Input(ids.FLEET_SITE, "value"),
    )
    def refresh(_: int | None, show: str, sites: list[str] | None) -> tuple[object, str]:
        """Devices with their health; by default only those that need a visit."""
        settings = current_app.extensions["smartcity.settings"]
        now = datetime.now(UTC)
        frame = with_status(queries.fleet(now - REJECTIONS_SINCE), now,
                            timedelta(seconds=settings.stale_after_s))  # fmt: skip
        if sites:
            frame = frame[frame["site"].isin(sites)]
        listed = []
        records: list[dict[str, Any]] = frame.to_dict("records")  # type: ignore[assignment]
        for row in records:
            found = problems(row)
            if show == "all" or found:
                marks = attrs(data_device=row["device_id"], data_visit="yes" if found else "no")
                listed.append(html.Tr(_cells(row, found, now), **marks))
        summary = f"{len(listed)} of {len(frame)} devices shown" + (
            " (those that need a visit)" if show != "all" else "")  # fmt: skip
        if not listed:
            return html.P("Nothing needs a visit."), summary
        header = html.Thead(html.Tr([html.Th(c, scope="col") for c in COLUMNS]))
        return html.Table([header, html.Tbody(listed)], className="devices fleet"), summary
