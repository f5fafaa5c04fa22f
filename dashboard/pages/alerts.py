"""Alerts: filter, read the history, acknowledge and resolve with a comment."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import dash
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html
from flask import current_app

from dashboard import alert_actions, ids, queries, security
from dashboard.attributes import attrs
from processing.alerts import AlertError

SEVERITIES = ("critical", "warning", "info")
STATES = ("open", "acknowledged", "resolved")


def _filter(label: str, component_id: str, options: list[str], value: list[str]) -> html.Fieldset:
    # Native checkboxes: every option reachable by keyboard and read out with its state.
    return html.Fieldset(
        className="filter",
        children=[
            html.Legend(f"{label} (none ticked: all)"),
            dcc.Checklist(
                id=component_id,
                options=[
                    {"label": option.replace("_", " "), "value": option} for option in options
                ],
                value=value,
                inline=True,
                inputClassName="check",
                labelClassName="check-label",
            ),
        ],
    )


def layout(**_: object) -> html.Div:
    """The page; every alert kind, and the districts that exist, are the filters' choices."""
    choices = alert_actions.choices(queries.pool())
    return html.Div(
        className="page alerts",
        children=[
            html.H2("Alerts"),
            html.Div(
                className="filters",
                children=[
                    _filter("Kinds", ids.ALERTS_KIND, choices["kinds"], []),
                    _filter("Severities", ids.ALERTS_SEVERITY, list(SEVERITIES), []),
                    _filter("Districts", ids.ALERTS_SITE, choices["sites"], []),
                    _filter("States", ids.ALERTS_STATE, list(STATES), ["open", "acknowledged"]),
                ],
            ),
            # Read out by screen readers when new alerts arrive.
            html.P(
                id=ids.ALERTS_ANNOUNCE,
                className="visually-hidden",
                **attrs(aria_live="assertive", role="status"),
            ),
            dcc.Store(id=ids.ALERTS_SEEN, data=None),
            dcc.Store(id=ids.ALERTS_SIGNATURE, data=None),
            dcc.Store(id=ids.ALERTS_SELECTED, data=None),
            dcc.Store(id=ids.ALERTS_CHANGED, data=0),
            html.Div(
                className="alerts-layout",
                children=[
                    html.Section(
                        id=ids.ALERTS_TABLE, className="table-panel", **attrs(aria_label="Alerts")
                    ),
                    html.Section(
                        className="detail-panel",
                        **attrs(aria_label="Selected alert"),
                        children=[
                            html.Div(
                                id=ids.ALERTS_DETAIL,
                                children=html.P("Choose an alert to see its history."),
                            ),
                            html.Label("Comment", htmlFor=ids.ALERTS_COMMENT),
                            dcc.Textarea(
                                id=ids.ALERTS_COMMENT,
                                className="comment",
                                maxLength=2000,
                                placeholder="What was found or done (kept in the history)",
                            ),
                            html.Div(
                                className="actions",
                                children=[
                                    html.Button("Acknowledge", id=ids.ALERTS_ACK, disabled=True),
                                    html.Button("Resolve", id=ids.ALERTS_RESOLVE, disabled=True),
                                ],
                            ),
                            html.P(
                                id=ids.ALERTS_FEEDBACK, **attrs(role="status", aria_live="polite")
                            ),
                        ],
                    ),
                ],
            ),
        ],
    )


dash.register_page(  # type: ignore[no-untyped-call]
    __name__, path="/alerts", name="Alerts", title="Alerts", layout=layout
)


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[dict[str, Any]]) -> html.Table | html.P:
    if not rows:
        return html.P("No alerts match these filters.")
    header = html.Thead(html.Tr([html.Th(h, scope="col") for h in (
        "Opened", "Device", "District", "Kind", "Severity", "State", "Message", "")]))  # fmt: skip
    body = []
    for row in rows:
        alert_id = int(row["alert_id"])
        who = row["resolved_by"] or row["acknowledged_by"] or ""
        state = f"{row['state']} ({who})" if who else row["state"]
        body.append(html.Tr([
            html.Td(_when(row["opened_at"])),
            html.Th(row["device_id"], scope="row"),
            html.Td(row["site"]),
            html.Td(row["kind"].replace("_", " ")),
            html.Td(html.Span(row["severity"], className=f"severity severity-{row['severity']}")),
            html.Td(state),
            html.Td(row["message"]),
            html.Td(html.Button("Open", id={"type": ids.ALERTS_OPEN, "alert": alert_id},
                                className="open", **attrs(aria_label=f"Open alert {alert_id}"))),
        ], **attrs(data_alert=str(alert_id), data_state=row["state"])))  # fmt: skip
    return html.Table([header, html.Tbody(body)], className="devices alerts")


def register(app: Dash) -> None:
    """This page's callbacks, on ``app`` (each app gets its own)."""

    @app.callback(
        Output(ids.ALERTS_TABLE, "children"),
        Output(ids.ALERTS_ANNOUNCE, "children"),
        Output(ids.ALERTS_SEEN, "data"),
        Output(ids.ALERTS_SIGNATURE, "data"),
        Input(ids.REFRESH, "n_intervals"),
        Input(ids.ALERTS_KIND, "value"),
        Input(ids.ALERTS_SEVERITY, "value"),
        Input(ids.ALERTS_SITE, "value"),
        Input(ids.ALERTS_STATE, "value"),
        Input(ids.ALERTS_CHANGED, "data"),
        State(ids.ALERTS_SEEN, "data"),
        State(ids.ALERTS_SIGNATURE, "data"),
    )
    def refresh(
        _: int | None,
        kinds: list[str] | None,
        severities: list[str] | None,
        sites: list[str] | None,
        states: list[str] | None,
        __: int | None,
        seen: int | None,
        signature: str | None,
    ) -> tuple[Any, str, int, str]:
        """The filtered list, redrawn only when it changed; new alerts are announced."""
        rows = alert_actions.listing(
            queries.pool(), kinds=kinds, severities=severities, sites=sites, states=states
        )
        newest = max((int(r["alert_id"]) for r in rows), default=seen or 0)
        fresh = [r for r in rows if seen is not None and int(r["alert_id"]) > seen]
        announcement = ""
        if fresh:
            first = fresh[0]
            more = f" and {len(fresh) - 1} more" if len(fresh) > 1 else ""
            announcement = (f"New {first['severity']} alert: {first['kind'].replace('_', ' ')} at"
                            f" {first['device_id']}{more}")  # fmt: skip
        # Unchanged rows are not sent again: nothing to transfer, and no button replaced under
        # the pointer of someone about to press it.
        now_signature = hashlib.sha256(repr(rows).encode()).hexdigest()
        table = dash.no_update if now_signature == signature else _table(rows)
        return table, announcement, max(newest, seen or 0), now_signature

    @app.callback(
        Output(ids.ALERTS_SELECTED, "data"),
        Input({"type": ids.ALERTS_OPEN, "alert": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def select(clicks: list[int | None]) -> int:
        """The alert whose Open button was pressed."""
        trigger = ctx.triggered_id
        if not isinstance(trigger, dict) or not any(clicks):
            raise dash.exceptions.PreventUpdate
        return int(trigger["alert"])

    @app.callback(
        Output(ids.ALERTS_DETAIL, "children"),
        Output(ids.ALERTS_ACK, "disabled"),
        Output(ids.ALERTS_RESOLVE, "disabled"),
        Input(ids.ALERTS_SELECTED, "data"),
        Input(ids.ALERTS_CHANGED, "data"),
    )
    def show(alert_id: int | None, _: int | None) -> tuple[object, bool, bool]:
        """The selected alert's facts and everything that happened to it."""
        if alert_id is None:
            return html.P("Choose an alert to see its history."), True, True
        try:
            alert, events = alert_actions.detail(queries.pool(), int(alert_id))
        except AlertError as exc:
            return html.P(str(exc)), True, True
        facts = html.Dl([item for label, value in (
            ("Device", alert["device_id"]), ("District", alert["site"]),
            ("Kind", alert["kind"].replace("_", " ")), ("Severity", alert["severity"]),
            ("State", alert["state"]), ("Started", _when(alert["started_at"])),
            ("Detections folded in", alert["occurrences"]),
        ) for item in (html.Dt(label), html.Dd(str(value)))])  # fmt: skip
        items = []
        for event in events:
            line: list[str | html.Time | html.Q] = [
                html.Time(_when(event["at"])),
                f" {event['action']} by {event['actor']}",
            ]
            if event["comment"]:
                line += [": ", html.Q(event["comment"])]
            items.append(html.Li(line, **attrs(data_action=event["action"])))
        history = html.Ol(items, className="history")
        sensor = dcc.Link(
            "Readings with the learned band", href=f"/sensor?stream={alert['stream_id']}"
        )
        body = [
            html.H3(f"Alert {alert['alert_id']}: {alert['message']}"),
            facts,
            sensor,
            html.H4("History"),
            history,
        ]
        return body, alert["state"] != "open", alert["state"] == "resolved"

    @app.callback(
        Output(ids.ALERTS_FEEDBACK, "children"),
        Output(ids.ALERTS_CHANGED, "data"),
        Output(ids.ALERTS_COMMENT, "value"),
        Input(ids.ALERTS_ACK, "n_clicks"),
        Input(ids.ALERTS_RESOLVE, "n_clicks"),
        State(ids.ALERTS_SELECTED, "data"),
        State(ids.ALERTS_COMMENT, "value"),
        State(ids.ALERTS_CHANGED, "data"),
        prevent_initial_call=True,
    )
    def act(
        _: int | None,
        __: int | None,
        alert_id: int | None,
        comment: str | None,
        changed: int | None,
    ) -> tuple[str, int, str]:
        """Acknowledge or resolve the selected alert as the logged-in user."""
        if alert_id is None:
            return "Choose an alert first.", changed or 0, comment or ""
        action: alert_actions.Action = "resolve" if ctx.triggered_id == ids.ALERTS_RESOLVE else (
            "acknowledge")  # fmt: skip
        user = security.current_user()
        text = (comment or "").strip()[:2000]
        settings = current_app.extensions["smartcity.settings"]
        try:
            alert_actions.act(settings.database_url, action, int(alert_id), user.name, text)
        except AlertError as exc:
            return str(exc), (changed or 0) + 1, comment or ""
        security.audit_action(f"alert-{action}", alert=int(alert_id), comment=text)
        done = "acknowledged" if action == "acknowledge" else "resolved"
        return f"Alert {alert_id} {done} by {user.name}.", (changed or 0) + 1, ""
