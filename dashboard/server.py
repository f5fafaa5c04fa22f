"""Serve the dashboard with waitress, a production WSGI server."""

from __future__ import annotations

import logging

from waitress.server import create_server

from dashboard.app import create_app
from dashboard.config import DashboardConfig

log = logging.getLogger(__name__)


def make_server(config: DashboardConfig) -> object:
    """A waitress server for the dashboard, bound but not yet serving (call ``run()``)."""
    app = create_app(config)
    server = create_server(app.server, host=config.host, port=config.port, threads=8)
    log.info("dashboard on http://%s:%s/", config.host, server.effective_port)
    return server
