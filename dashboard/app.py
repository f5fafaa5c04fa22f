"""The Dash shell: header, navigation, the live-update timer, and the page container."""

from __future__ import annotations

import importlib
from datetime import timedelta

import dash
import flask
from dash import Dash, Input, Output, dcc, html
from psycopg_pool import ConnectionPool

from dashboard import boundaries, ids, security
from dashboard.attributes import attrs
from dashboard.config import DashboardConfig
from dashboard.live import CityState
from dashboard.queries import POOL_KEY, READ_POOL_KEY

PAGES = (
    "dashboard.pages.overview",
    "dashboard.pages.alerts",
    "dashboard.pages.fleet",
    "dashboard.pages.history",
    "dashboard.pages.admin",
    "dashboard.pages.sensor",
)
SETTINGS_KEY = "smartcity.settings"


def open_pool(database_url: str, name: str = "dashboard") -> ConnectionPool:
    """A small pool; opened lazily so a missing database shows on the page, not at import.

    Each connection is checked before it is lent, so one to a server that has since failed over
    is replaced (through the URL's hosts) before a page runs on it.
    """
    return ConnectionPool(
        database_url,
        min_size=1,
        max_size=4,
        open=False,
        name=name,
        kwargs={"autocommit": True},
        check=ConnectionPool.check_connection,
    )


def create_app(
    config: DashboardConfig,
    pool: ConnectionPool | None = None,
    *,
    read_pool: ConnectionPool | None = None,
    start_timer: bool = True,
) -> Dash:
    """Build the app; the caller serves ``app.server`` (a Flask WSGI app).

    Args:
        config: Settings.
        pool: An open pool for writes; by default one is opened on ``config.database_url``.
        read_pool: An open pool the pages read from; by default one on
            ``config.read_database_url`` when that is set, else ``pool``.
        start_timer: Refresh the shared city snapshot in the background (off: on demand).
    """
    app = Dash(
        __name__,
        use_pages=True,
        pages_folder="",  # pages are imported below, once per process, not re-executed by Dash
        title=config.title,
        update_title=None,  # type: ignore[arg-type]  # None turns "Updating..." off, as documented
        suppress_callback_exceptions=True,
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    # The page's language, for screen readers and translation (WCAG 3.1.1).
    app.index_string = app.index_string.replace("<html>", '<html lang="en">', 1)
    for module in PAGES:
        # Callbacks are registered per app: Dash gives global ones to the first app only.
        importlib.import_module(module).register(app)
    if pool is None:
        pool = open_pool(config.database_url)
        pool.open(wait=False)
    if read_pool is None and config.read_database_url:
        read_pool = open_pool(config.read_database_url, "dashboard-reads")
        read_pool.open(wait=False)
    read_pool = read_pool or pool
    app.server.extensions[POOL_KEY] = pool
    app.server.extensions[READ_POOL_KEY] = read_pool
    app.server.extensions[SETTINGS_KEY] = config
    security.install(app.server, config, pool, read_pool)
    city = CityState(read_pool, timedelta(seconds=config.stale_after_s), config.refresh_s)
    app.server.extensions["smartcity.city"] = city
    app.server.extensions["smartcity.boundaries"] = boundaries.load(config.districts_file)
    if start_timer:
        city.start()
    _register_pause(app)
    app.layout = lambda: _shell(config)  # per request: the navigation depends on the role
    return app


def _shell(config: DashboardConfig) -> html.Div:
    user = security.request_user()
    pages = [
        page
        for page in dash.page_registry.values()
        if user is not None and security.may_open(user.role, page["relative_path"])
    ]
    return html.Div(
        className="shell",
        children=[
            html.A("Skip to the content", href="#content", className="skip-link"),
            html.Header(
                className="shell-header",
                children=[
                    html.H1(config.title),
                    html.Nav(
                        [
                            dcc.Link(page["name"], href=page["relative_path"], className="nav-link")
                            for page in pages
                        ],
                        **attrs(aria_label="Pages"),
                    ),
                    html.P(id=ids.LAST_UPDATE, className="last-update", **attrs(aria_live="off")),
                    html.Button("Pause live updates", id=ids.PAUSE, className="pause"),
                    html.Form(
                        action="/logout",
                        method="post",
                        className="account",
                        children=[
                            html.Span(
                                f"{user.name} ({user.role})" if user else "", className="who"
                            ),
                            dcc.Input(type="hidden", name="csrf", value=flask.session.get("csrf")),
                            html.Button("Log out", type="submit", className="logout"),
                        ],
                    ),
                ],
            ),
            dcc.Interval(id=ids.REFRESH, interval=int(config.refresh_s * 1000)),
            html.Main(dash.page_container, id="content", tabIndex="-1"),
        ],
    )


def _register_pause(app: Dash) -> None:
    @app.callback(
        Output(ids.REFRESH, "disabled"),
        Output(ids.PAUSE, "children"),
        Input(ids.PAUSE, "n_clicks"),
        prevent_initial_call=True,
    )
    def pause(clicks: int) -> tuple[bool, str]:
        """Stop and restart the live updates (the page keeps what it shows meanwhile)."""
        paused = clicks % 2 == 1
        return paused, "Resume live updates" if paused else "Pause live updates"
