"""An attacker's checklist against the real control room (real HTTP, real database): each probe
that once found a weakness stays here as one more case."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pyotp
import pytest
from psycopg import sql

from dashboard import accounts, security
from tests.dashboard.serving import PASSWORD, Served, callback, dash_call, login, serving
from tests.services.handles import Database


@pytest.fixture
def served(database: Database) -> Iterator[Served]:
    with serving(database.dsn) as dashboard:
        yield dashboard


class HashChecks:
    """Every password verification the server makes: against an account's hash, or a dummy."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = 0
        self.dummy = 0
        self._lock = threading.Lock()
        verify = accounts._verify

        def counting(stored: str, password: str) -> bool:
            with self._lock:
                if stored == accounts._DUMMY_HASH:
                    self.dummy += 1
                else:
                    self.real += 1
            return verify(stored, password)

        monkeypatch.setattr(accounts, "_verify", counting)

    @property
    def total(self) -> int:
        return self.real + self.dummy


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> HashChecks:
    return HashChecks(monkeypatch)


def _refusal(response: httpx.Response) -> str:
    """What the login page said when it refused."""
    assert response.status_code == 401, response.text[:300]
    said = re.search(r"<p class='error' role='alert'>(.*?)</p>", response.text)
    assert said is not None, response.text[:300]
    return said.group(1)


def test_every_failed_login_says_the_same_whatever_was_wrong(served: Served) -> None:
    """A right password without the code, a wrong one, an unknown name and a locked account
    all get one answer: nothing tells which part was right or whether the name exists."""
    client = served.client()
    answers = {
        "right password, no code": _refusal(login(client, "operator", PASSWORD)),
        "right password, wrong code": _refusal(login(client, "operator", PASSWORD, "000000")),
        "wrong password": _refusal(login(client, "planner", "not the password")),
        "unknown name": _refusal(login(client, "nobody-here", PASSWORD)),
    }
    for _ in range(accounts.MAX_FAILURES):
        login(client, "technician", "not the password")
    answers["locked, right password"] = _refusal(login(client, "technician", PASSWORD))
    answers["unknown name, many times"] = _refusal(login(client, "nobody-here", PASSWORD))
    assert set(answers.values()) == {html.escape(security.LOGIN_REFUSED)}, answers


def test_a_failure_takes_one_password_check_whatever_the_name(
    served: Served, checks: HashChecks
) -> None:
    """As long for an unknown, locked or disabled name as for a wrong password: one hash
    verified each time (the dummy one where there is no account's to verify)."""
    client = served.client()
    for _ in range(accounts.MAX_FAILURES):
        login(client, "technician", "not the password")  # locks technician
    cases = [("planner", "wrong password!"), ("nobody-here", PASSWORD), ("technician", PASSWORD)]
    for name, password in cases:
        before = checks.total
        _refusal(login(client, name, password))
        assert checks.total - before == 1, name


def test_logins_sent_at_once_check_no_more_than_the_lockout_allows(
    served: Served, checks: HashChecks
) -> None:
    """Twenty wrong passwords at once: the account's row is held from reading its failure count
    to counting the failure, so five are checked against its hash and the rest find it locked."""
    attempts = 20
    start = threading.Barrier(attempts)
    statuses: list[int] = []

    def attempt() -> None:
        client = served.client()
        client.get("/login")
        start.wait(timeout=30)
        statuses.append(login(client, "planner", "not the password").status_code)

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [401] * attempts
    assert checks.real == accounts.MAX_FAILURES
    # Locked now, even for the right password.
    assert login(served.client(), "planner", PASSWORD).status_code == 401


def _route(client: httpx.Client, pathname: str, search: str = "") -> httpx.Response:
    """Ask Dash's page router for a page, as the renderer does on navigation."""
    values = {"pathname": pathname, "search": search, "hash": ""}
    return dash_call(
        client, "_pages_content", lambda item: values.get(item["property"]),
        ["_pages_location.pathname"],
    )  # fmt: skip


def test_the_router_renders_a_page_for_a_plain_address(served: Served) -> None:
    """The probes below are refused, not broken: the same call with a plain address works."""
    operator = served.client("operator")
    assert _route(operator, "/sensor", "?device=nobody").status_code == 200
    assert _route(operator, "/alerts").status_code == 200


@pytest.mark.parametrize(
    ("pathname", "search"),
    [
        ("/sensor", "?stream=\u00b2"),  # a digit to str.isdigit, not to int
        ("/sensor", "?stream=99999999999999999999"),  # beyond the column's integer
        ("/sensor", "?device=%00"),  # NUL, which PostgreSQL refuses in text
        ("/sensor", "?device=a%0Ab"),
        (" /admin", ""),  # not a path
        ("/admin\x00", ""),
    ],
)
def test_crafted_addresses_get_a_4xx_with_a_sentence(
    served: Served, pathname: str, search: str
) -> None:
    answer = _route(served.client("operator"), pathname, search)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert len(answer.json()["detail"]) > 10


@pytest.mark.parametrize("pathname", ["/admin", "//admin", "/admin/", "///admin//"])
def test_the_router_refuses_a_page_the_role_may_not_open_however_it_is_written(
    served: Served, pathname: str
) -> None:
    """Dash's router compares paths without their slashes: each of these is the Admin page."""
    answer = _route(served.client("operator"), pathname)
    assert answer.status_code == 403, (answer.status_code, answer.text[:300])
    assert _route(served.client("admin"), pathname).status_code == 200


def test_the_router_is_judged_by_the_inputs_position_not_their_names(served: Served) -> None:
    """Dash passes the router's inputs by position: a ``search`` input carrying ``/admin``
    sent first is the pathname it renders."""
    operator = served.client("operator")
    listed = operator.get("/_dash-dependencies").json()
    router = next(d for d in listed if "_pages_content" in d["output"])
    first, second = router["inputs"][0], router["inputs"][1]
    assert (first["property"], second["property"]) == ("pathname", "search")
    body = {
        "output": router["output"],
        "outputs": [dict(zip(("id", "property"), o.split(".", 1), strict=True))
                    for o in router["output"].strip(".").split("...")],
        "inputs": [{**second, "value": "/admin"}, {**first, "value": "/"}],
        "changedPropIds": ["_pages_location.pathname"],
    }  # fmt: skip
    headers = {"X-CSRFToken": operator.cookies.get("_csrf_token") or ""}
    answer = operator.post("/_dash-update-component", json=body, headers=headers)
    assert answer.status_code == 403, (answer.status_code, answer.text[:300])


def test_the_router_refuses_an_address_that_is_no_page(served: Served) -> None:
    answer = _route(served.client("admin"), "/nowhere")
    assert answer.status_code == 404
    assert "no page" in answer.json()["detail"]


def test_a_next_address_with_line_breaks_after_a_good_login_goes_home(served: Served) -> None:
    """A ``next`` that would split the redirect's header is not followed: home instead."""
    client = served.client()
    client.get("/login")
    form = {"name": "planner", "password": PASSWORD, "code": "",
            "csrf": client.cookies.get("_csrf_token", ""),
            "next": "/history\r\nSet-Cookie: x=1"}  # fmt: skip
    answer = client.post("/login", data=form)
    assert answer.status_code == 302, answer.text[:300]
    assert answer.headers["location"] == "/"
    for target in ("/\\evil.example", "/history\x7f"):
        form["next"] = target
        form["csrf"] = client.cookies.get("_csrf_token", "")
        again = client.post("/login", data=form)
        assert again.headers["location"] == "/", target


# -- sessions end on the server -----------------------------------------------------------------


def _copy(served: Served, client: httpx.Client) -> httpx.Client:
    """Another client holding the same cookies, as a stolen or copied cookie would."""
    thief = served.client()
    for name, value in client.cookies.items():
        thief.cookies.set(name, value)
    return thief


def _let_in(client: httpx.Client) -> bool:
    page = client.get("/")
    if page.status_code == 302:
        assert page.headers["location"].startswith("/login"), page.headers
        return False
    assert page.status_code == 200, page.text[:300]
    return True


def _ago(dsn: str, name: str, column: str, delta: timedelta) -> None:
    """Move the open sessions of ``name`` back in time (``started_at`` or ``last_seen_at``)."""
    assert column in ("started_at", "last_seen_at")
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL(
                "UPDATE control_sessions s SET {column} = {column} - %s FROM users u"
                " WHERE u.user_id = s.user_id AND u.name = %s AND s.ended_at IS NULL"
            ).format(column=sql.Identifier(column)),
            (delta, name),
        )


def test_a_copied_session_cookie_is_dead_after_logout(served: Served) -> None:
    client = served.client("planner")
    copied = _copy(served, client)
    assert _let_in(copied)
    out = client.post("/logout", data={"csrf": client.cookies.get("_csrf_token", "")})
    assert out.status_code == 302
    assert not _let_in(copied)
    refused = callback(copied, "overview-cards.children", [])
    assert refused.status_code == 401, refused.text[:300]


def test_a_role_changed_and_changed_back_does_not_revive_a_session(served: Served) -> None:
    client = served.client("planner")
    with psycopg.connect(served.dsn) as conn:
        accounts.set_role(conn, "planner", "technician")
        accounts.set_role(conn, "planner", "planner")
    assert not _let_in(client)
    assert _let_in(served.client("planner"))  # logging in again opens a new one


def test_an_admin_signs_someone_out_everywhere(served: Served) -> None:
    phone, desk = served.client("technician"), served.client("technician")
    admin = served.client("admin")
    values = {"admin-target.value": "technician", "admin-new-role.value": "planner"}
    done = dash_call(
        admin,
        "admin-change-result.children",
        lambda item: values.get(f"{item['id']}.{item['property']}", 1),
        changed=["admin-sign-out.n_clicks"],
    )
    assert done.status_code == 200, done.text[:300]
    assert "2 session(s) ended" in done.text
    assert not _let_in(phone)
    assert not _let_in(desk)
    assert _let_in(admin)


def test_idle_and_absolute_timeouts_end_a_session(database: Database) -> None:
    with serving(database.dsn, session_idle_minutes=30, session_hours=8) as served:
        idle = served.client("planner")
        _ago(served.dsn, "planner", "last_seen_at", timedelta(minutes=29))
        assert _let_in(idle)  # and the request counts as activity again
        _ago(served.dsn, "planner", "last_seen_at", timedelta(minutes=29))
        assert _let_in(idle)
        _ago(served.dsn, "planner", "last_seen_at", timedelta(minutes=31))
        assert not _let_in(idle)
        busy = served.client("planner")
        _ago(served.dsn, "planner", "started_at", timedelta(hours=8, minutes=1))
        assert not _let_in(busy)  # active a moment ago, but logged in over 8 hours ago


def test_a_totp_code_is_accepted_once(served: Served) -> None:
    """RFC 6238, section 5.2: the code that opened one session does not open another, nor does
    the previous step's code once a later one was used."""
    totp = pyotp.TOTP(served.totp["operator"])
    now = datetime.now(UTC)
    code = totp.at(now)  # (the login below is this test's first as the operator)
    first = login(served.client(), "operator", PASSWORD, code)
    assert first.status_code == 302
    _refusal(login(served.client(), "operator", PASSWORD, code))
    _refusal(login(served.client(), "operator", PASSWORD, totp.at(now - timedelta(seconds=30))))
    later = login(served.client(), "operator", PASSWORD, totp.at(now + timedelta(seconds=30)))
    assert later.status_code == 302  # the next step's code, once


def test_a_callback_is_judged_by_the_output_dash_runs_not_by_the_outputs_listed(
    served: Served,
) -> None:
    """Dash picks the function by the request's ``output`` string; listing a page the role may
    update in ``outputs`` beside another page's ``output`` must not run that other page's."""
    planner = served.client("planner")
    listed = planner.get("/_dash-dependencies").json()
    admin_refresh = next(d for d in listed if "admin-users.children" in d["output"])
    body = {
        "output": admin_refresh["output"],
        "outputs": [{"id": "overview-cards", "property": "children"},
                    {"id": "overview-table", "property": "children"}],
        "inputs": [{**i, "value": 1} for i in admin_refresh["inputs"]],
        "state": [],
        "changedPropIds": [],
    }  # fmt: skip
    headers = {"X-CSRFToken": planner.cookies.get("_csrf_token") or ""}
    answer = planner.post("/_dash-update-component", json=body, headers=headers)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert len(answer.json()["detail"]) > 10
    body["outputs"] = [{"id": "admin-users", "property": "children"},
                       {"id": "admin-audit", "property": "children"}]  # fmt: skip
    answer = planner.post("/_dash-update-component", json=body, headers=headers)
    assert answer.status_code == 403, (answer.status_code, answer.text[:300])
