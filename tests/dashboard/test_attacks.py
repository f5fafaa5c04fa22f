"""An attacker's checklist against the real control room (real HTTP, real database): each probe
that once found a weakness stays here as one more case."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator

import httpx
import pytest

from dashboard import accounts, security
from tests.conftest import Database
from tests.dashboard.serving import PASSWORD, Served, dash_call, login, serving


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
