"""The dashboard served for real (waitress on loopback), with an account per role."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pyotp
from psycopg.conninfo import make_conninfo
from waitress.server import create_server

from dashboard import accounts, queries
from dashboard.app import create_app
from dashboard.config import DashboardConfig
from tests.ingest.helpers import member_of
from tests.services.patroni import wait_standbys_replayed

PASSWORD = "correct horse battery"


@dataclass
class Served:
    """The dashboard's address and who may log in to it."""

    url: str
    dsn: str
    totp: dict[str, str] = field(default_factory=dict)  # name: secret
    clients: list[httpx.Client] = field(default_factory=list)  # closed with the server
    used_steps: dict[str, int] = field(default_factory=dict)  # name: last TOTP step handed out

    def code(self, name: str) -> str:
        """A TOTP code of ``name`` the server has not seen yet, as their phone would show it.

        A code is accepted once: a second login within the same 30 s takes the next step's
        code (accepted for clocks that run ahead), a third waits for the step to pass.
        """
        totp = pyotp.TOTP(self.totp[name])
        deadline = time.monotonic() + 2 * totp.interval
        while True:
            now = datetime.now(UTC)
            current = totp.timecode(now)
            step = max(current, self.used_steps.get(name, current - 1) + 1)
            if step <= current + 1:
                self.used_steps[name] = step
                return totp.generate_otp(step)
            assert time.monotonic() < deadline, "the TOTP step did not advance"
            time.sleep(0.2)  # a clock's step, not a state of the server: nothing to poll

    def client(self, name: str | None = None) -> httpx.Client:
        """An HTTP client, logged in as ``name`` (the role's name) unless None."""
        client = httpx.Client(base_url=self.url, timeout=30, follow_redirects=False)
        self.clients.append(client)
        if name is not None:
            response = login(client, name, PASSWORD, self.code(name) if name in self.totp else "")
            assert response.status_code == 302, response.text[:300]
        return client


def login(client: httpx.Client, name: str, password: str, code: str = "") -> httpx.Response:
    """Fill in and send the login form as a browser would."""
    client.get("/login")
    form = {"name": name, "password": password, "code": code,
            "csrf": client.cookies.get("_csrf_token", ""), "next": "/"}  # fmt: skip
    return client.post("/login", data=form)


def callback(client: httpx.Client, output: str, inputs: list[dict[str, Any]]) -> httpx.Response:
    """Call a Dash callback the way the renderer does (with the CSRF header).

    ``output`` as Dash writes it: ``id.prop``, or ``..a.x...b.y..`` for several.
    """
    outputs = output.strip(".").split("...")
    body = {
        "output": output,
        "outputs": [dict(zip(("id", "property"), o.split(".", 1), strict=True)) for o in outputs],
        "inputs": inputs,
        "changedPropIds": [],
    }
    headers = {"X-CSRFToken": client.cookies.get("_csrf_token") or ""}
    return client.post("/_dash-update-component", json=body, headers=headers)


@contextmanager
def serving(dsn: str, *, reads_prefer_standby: bool = False, **settings: Any) -> Iterator[Served]:
    """The dashboard on ``dsn`` with users operator, technician, planner and admin.

    ``reads_prefer_standby``: pages read through ``dsn``'s hosts preferring a standby, as a
    replicated city configures ``read_database_url``.
    """
    served = Served("", dsn)
    with psycopg.connect(dsn) as conn:
        for role in accounts.ROLES:
            account = accounts.create(conn, role, role, PASSWORD)
            if account.totp_secret:
                served.totp[role] = account.totp_secret
    # The dashboard runs on its least-privilege role, as in production.
    login_dsn = member_of(dsn, "smartcity_dashboard")
    if reads_prefer_standby:
        standby_first = make_conninfo(login_dsn, target_session_attrs="prefer-standby")
        settings["read_database_url"] = standby_first
        # Pages' pools connect at start-up: a standby that has not replayed the new login
        # refuses it, and libpq's prefer-standby then settles on the primary for good.
        wait_standbys_replayed(dsn, timeout_s=30)
    config = DashboardConfig(database_url=login_dsn, port=0, refresh_s=1, secret_key="test-key",
                             **{"cookie_secure": False, **settings})  # fmt: skip
    app = create_app(config)
    server = create_server(app.server, host="127.0.0.1", port=0, threads=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.effective_port}"
    try:
        yield served
    finally:
        for client in served.clients:  # open keep-alive connections hold waitress's loop
            client.close()
        # Closed on waitress's own loop thread: closed from here, its sockets could vanish
        # under a select() in progress (EBADF in the loop thread). A server whose loop has
        # already closed it has closed its trigger too (EBADF here): nothing left to close.
        with suppress(OSError):
            server.trigger.pull_trigger(server.close)
        thread.join(10)
        app.server.extensions["smartcity.city"].stop()
        for key in (queries.READ_POOL_KEY, queries.POOL_KEY):
            app.server.extensions[key].close()  # the same pool twice without a standby: a no-op


def dash_call(
    client: httpx.Client,
    output: str,
    value: Callable[[dict[str, Any]], Any],
    changed: Sequence[str] = (),
) -> httpx.Response:
    """Call the callback writing ``output`` as Dash's renderer does, each of its inputs and
    states given ``value(item)`` (``item`` has the ``id`` and the ``property``)."""
    listed = client.get("/_dash-dependencies")
    assert listed.status_code == 200, listed.text[:300]
    dependency = next(d for d in listed.json() if output in d["output"])
    outputs = [dict(zip(("id", "property"), o.split(".", 1), strict=True))
               for o in dependency["output"].strip(".").split("...")]  # fmt: skip
    body = {
        "output": dependency["output"],
        # One output goes as itself, several as a list: as Dash's renderer sends them.
        "outputs": outputs if dependency["output"].startswith("..") else outputs[0],
        "inputs": [{**i, "value": value(i)} for i in dependency["inputs"]],
        "state": [{**s, "value": value(s)} for s in dependency["state"]],
        "changedPropIds": list(changed),
    }
    headers = {"X-CSRFToken": client.cookies.get("_csrf_token") or ""}
    return client.post("/_dash-update-component", json=body, headers=headers)


def browser_login(browser: Any, url: str, name: str, password: str, code: str = "") -> None:
    """Log in through the form, as a person would (the browser keeps the cookies)."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions  # noqa: PLC0415
    from selenium.webdriver.support.wait import WebDriverWait  # noqa: PLC0415

    browser.get(f"{url}/login")
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(password)
    if code:
        browser.find_element(By.ID, "code").send_keys(code)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "form.account"))
    )
