"""Administration: accounts and roles, and the audit log of who did what."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dash
from dash import Dash, Input, Output, State, ctx, dcc, html

from dashboard import accounts, ids, queries, security
from dashboard.attributes import attrs

AUDIT_ROWS = 100


def layout(**_: object) -> html.Div:
    """The page."""
    roles = [{"label": role, "value": role} for role in accounts.ROLES]
    return html.Div(className="page admin", children=[
        html.H2("Accounts"),
        dcc.Store(id=ids.ADMIN_CHANGED, data=0),
        html.Section(id=ids.ADMIN_USERS, className="table-panel", **attrs(aria_label="Accounts")),
        html.Section(className="detail-panel", children=[
            html.H3("Add an account"),
            html.Label("Name", htmlFor=ids.ADMIN_NAME),
            dcc.Input(id=ids.ADMIN_NAME, type="text", maxLength=64, debounce=True),
            html.Fieldset(className="filter", children=[
                html.Legend("Role"),
                dcc.RadioItems(id=ids.ADMIN_ROLE, options=roles, value="planner", inline=True,
                               inputClassName="check", labelClassName="check-label"),
            ]),
            html.Button("Add", id=ids.ADMIN_ADD),
            html.Div(id=ids.ADMIN_RESULT, **attrs(role="status", aria_live="polite")),
        ]),
        html.Section(className="detail-panel", children=[
            html.H3("Change an account"),
            html.Label("Name", htmlFor=ids.ADMIN_TARGET),
            dcc.Input(id=ids.ADMIN_TARGET, type="text", maxLength=64, debounce=True),
            html.Fieldset(className="filter", children=[
                html.Legend("New role"),
                dcc.RadioItems(id=ids.ADMIN_NEW_ROLE, options=roles, value="planner",
                               inline=True, inputClassName="check",
                               labelClassName="check-label"),
            ]),
            html.Div(className="actions", children=[
                html.Button("Change role", id=ids.ADMIN_SET_ROLE),
                html.Button("Disable account", id=ids.ADMIN_DISABLE),
                html.Button("Sign out everywhere", id=ids.ADMIN_SIGN_OUT),
            ]),
            html.Div(id=ids.ADMIN_CHANGE_RESULT, **attrs(role="status", aria_live="polite")),
        ]),
        html.H2("Audit log"),
        html.Section(id=ids.ADMIN_AUDIT, className="table-panel", **attrs(aria_label="Audit log")),
    ])  # fmt: skip


dash.register_page(  # type: ignore[no-untyped-call]
    __name__, path="/admin", name="Admin", title="Admin", layout=layout
)


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]], css: str) -> html.Table:
    head = html.Thead(html.Tr([html.Th(h, scope="col") for h in headers]))
    body = html.Tbody([html.Tr([html.Td("" if v is None else str(v)) for v in row])
                       for row in rows])  # fmt: skip
    return html.Table([head, body], className=f"devices {css}")


def register(app: Dash) -> None:
    """This page's callbacks, on ``app`` (each app gets its own)."""

    @app.callback(
        Output(ids.ADMIN_USERS, "children"),
        Output(ids.ADMIN_AUDIT, "children"),
        Input(ids.ADMIN_CHANGED, "data"),
        Input(ids.REFRESH, "n_intervals"),
    )
    def refresh(_: int, __: int | None) -> tuple[html.Table, html.Table]:
        """The accounts (never a hash or a secret) and the newest audit entries."""
        return (
            _table(("Name", "Role", "Login", "Last login", "State"), queries.accounts(), "users"),
            _table(("When", "Who", "What", "Details"), queries.audit_entries(AUDIT_ROWS), "audit"),
        )

    @app.callback(
        Output(ids.ADMIN_CHANGE_RESULT, "children"),
        Output(ids.ADMIN_CHANGED, "data", allow_duplicate=True),
        Input(ids.ADMIN_SET_ROLE, "n_clicks"),
        Input(ids.ADMIN_DISABLE, "n_clicks"),
        Input(ids.ADMIN_SIGN_OUT, "n_clicks"),
        State(ids.ADMIN_TARGET, "value"),
        State(ids.ADMIN_NEW_ROLE, "value"),
        State(ids.ADMIN_CHANGED, "data"),
        prevent_initial_call=True,
    )
    def change(
        _: int, __: int, ___: int, name: str | None, role: str, changed: int
    ) -> tuple[Any, int]:
        """Change a role (showing a new TOTP secret when it needs one), disable, or sign out."""
        target = (name or "").strip()
        if target == security.current_user().name:
            return html.P(
                "Change your own account from another admin's.", className="error"
            ), changed
        try:
            with queries.writer().connection() as conn:
                if ctx.triggered_id == ids.ADMIN_DISABLE:
                    accounts.disable(conn, target, datetime.now(UTC))
                    security.audit_action("user-disable", user=target)
                    return html.P(f"{target} disabled: out at their next click."), changed + 1
                if ctx.triggered_id == ids.ADMIN_SIGN_OUT:
                    ended = accounts.sign_out_everywhere(conn, target)
                    security.audit_action("user-sign-out", user=target, sessions=ended)
                    return html.P(f"{target}: {ended} session(s) ended."), changed
                secret = accounts.set_role(conn, target, role)
        except accounts.AccountError as exc:
            return html.P(str(exc), className="error"), changed
        security.audit_action("user-role", user=target, role=role)
        shown: list[Any] = [html.P(f"{target} is now {role}; they log in again.")]
        if secret:
            shown += [html.P("The role needs a second factor; TOTP secret, shown once:"),
                      html.Code(secret)]  # fmt: skip
        return shown, changed + 1

    @app.callback(
        Output(ids.ADMIN_RESULT, "children"),
        Output(ids.ADMIN_CHANGED, "data", allow_duplicate=True),
        Input(ids.ADMIN_ADD, "n_clicks"),
        State(ids.ADMIN_NAME, "value"),
        State(ids.ADMIN_ROLE, "value"),
        State(ids.ADMIN_CHANGED, "data"),
        prevent_initial_call=True,
    )
    def add(_: int, name: str | None, role: str, changed: int) -> tuple[Any, int]:
        """Make an account and show its first password (and TOTP setup) once, on this screen."""
        try:
            with queries.writer().connection() as conn:
                account = accounts.create(conn, (name or "").strip(), role)
        except accounts.AccountError as exc:
            return html.P(str(exc), className="error"), changed
        security.audit_action("user-add", user=account.name, role=account.role)
        shown: list[Any] = [html.P(f"{account.name} ({account.role}) added. First password, shown"
                                   " once:"), html.Code(account.password)]  # fmt: skip
        if account.totp_uri:
            shown += [html.P("Authenticator app setup (TOTP):"), html.Code(account.totp_uri)]
        return shown, changed + 1
