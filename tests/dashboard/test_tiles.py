"""The map asks the city's own tile server for its tiles (a loopback stand-in here)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from tests.browser import chromium
from tests.dashboard.serving import PASSWORD, browser_login, serving
from tests.dashboard.test_overview import populate
from tests.services.handles import Database


class _Tiles(BaseHTTPRequestHandler):
    asked: ClassVar[list[str]] = []  # the paths asked for, across handler instances

    def do_GET(self) -> None:  # the standard library's name
        type(self).asked.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def tile_server() -> Iterator[str]:
    _Tiles.asked = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tiles)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
    finally:
        server.shutdown()


@pytest.mark.browser
def test_the_map_loads_tiles_from_the_configured_server(
    timescale_database: Database, tile_server: str
) -> None:
    populate(timescale_database.dsn)
    with serving(timescale_database.dsn, tile_url=tile_server) as dashboard, chromium() as browser:
        browser_login(browser, dashboard.url, "planner", PASSWORD)
        browser.get(dashboard.url + "/")
        deadline = time.monotonic() + 30
        while not _Tiles.asked:
            assert time.monotonic() < deadline, "no tile was asked for in 30 s"
            time.sleep(0.1)
    assert all(re.fullmatch(r"/\d+/\d+/\d+\.png", path) for path in _Tiles.asked)
