"""Logins, roles, second factor, lockout, CSRF and the audit log, against the real server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from dashboard import accounts, security
from tests.dashboard.serving import PASSWORD, Served, callback, dash_call, login, serving
from tests.services.handles import Database


@pytest.fixture
def served(database: Database) -> Iterator[Served]:
    with serving(database.dsn) as dashboard:
        yield dashboard


def audit(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT actor, action FROM audit_log ORDER BY entry_id").fetchall()
    return [(str(a), str(b)) for a, b in rows]


def test_nothing_but_static_files_without_a_login(served: Served) -> None:
    client = served.client()
    for path in ("/", "/alerts", "/fleet", "/history", "/admin", "/nowhere"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["location"].startswith("/login?next=")
    for path in ("/_dash-layout", "/_dash-dependencies"):
        assert client.get(path).status_code == 401
    assert callback(client, "overview-cards.children", []).status_code == 401
    assert client.get("/assets/style.css").status_code == 200
    assert client.get("/login").status_code == 200


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_privileged_roles_need_the_second_factor(served: Served, role: str) -> None:
    client = served.client()
    assert login(client, role, PASSWORD).status_code == 401
    assert login(client, role, PASSWORD, "000000").status_code == 401
    assert login(client, role, PASSWORD, served.code(role)).status_code == 302
    assert client.get("/_dash-layout").status_code == 200


@pytest.mark.parametrize("role", ["technician", "planner"])
def test_other_roles_log_in_with_a_password(served: Served, role: str) -> None:
    client = served.client()
    assert login(client, role, "wrong password!").status_code == 401
    assert login(client, role, PASSWORD).status_code == 302
    assert client.get("/_dash-layout").status_code == 200


def test_lockout_after_repeated_failures_and_the_audit_trail(served: Served) -> None:
    client = served.client()
    for _ in range(accounts.MAX_FAILURES):
        assert login(client, "planner", "not the password").status_code == 401
    assert login(client, "planner", PASSWORD).status_code == 401  # locked
    with psycopg.connect(served.dsn) as conn:
        accounts.unlock(conn, "planner")
    assert login(client, "planner", PASSWORD).status_code == 302
    csrf = client.cookies.get("_csrf_token", "")
    assert client.post("/logout", data={"csrf": csrf}).status_code == 302
    assert client.get("/_dash-layout").status_code == 401
    trail = audit(served.dsn)
    assert trail.count(("planner", "login-failed")) == accounts.MAX_FAILURES + 1
    assert trail[-2:] == [("planner", "login"), ("planner", "logout")]


def test_each_role_opens_exactly_its_pages(served: Served) -> None:
    for role in accounts.ROLES:
        client = served.client(role)
        for path, (_, roles) in security.PAGES.items():
            expected = 200 if role in roles else 403
            assert client.get(path).status_code == expected, (role, path)


def _dependencies(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/_dash-dependencies")
    assert response.status_code == 200
    deps: list[dict[str, Any]] = response.json()
    return deps


def test_every_callback_refuses_roles_not_allowed_its_page(served: Served) -> None:
    admin = served.client("admin")
    # Clientside callbacks run in the browser and never reach the server.
    dependencies = [d for d in _dependencies(admin) if not d.get("clientside_function")]
    assert dependencies
    for role in accounts.ROLES:
        client = served.client(role)
        for dependency in dependencies:
            outputs = dependency["output"].strip(".").split("...")  # "..a.x...b.y.." or "a.x"
            address = {"pathname": "/", "search": ""}  # the router is asked for the overview
            inputs = [{"id": i["id"], "property": i["property"],
                       "value": address.get(i["property"])}
                      for i in dependency["inputs"]]  # fmt: skip
            response = callback(client, dependency["output"], inputs)
            allowed = security.may_update(role, [o.split(".")[0] for o in outputs], "/")
            assert (response.status_code != 403) == allowed, (role, outputs, response.text[:200])
            assert response.status_code != 401


def test_callbacks_and_forms_need_the_csrf_token(served: Served) -> None:
    client = served.client("planner")
    body = {"output": "overview-cards.children", "outputs": [], "inputs": []}
    response = client.post("/_dash-update-component", json=body, headers={"X-CSRFToken": "x"})
    assert response.status_code == 403
    assert client.post("/logout").status_code == 403
    fresh = served.client()
    fresh.get("/login")
    form = {"name": "planner", "password": PASSWORD, "csrf": "forged"}
    assert fresh.post("/login", data=form).status_code == 403


def test_cookies_are_secure_http_only_and_same_site(database: Database) -> None:
    with serving(database.dsn, cookie_secure=True) as dashboard:
        client = httpx.Client(base_url=dashboard.url, follow_redirects=False)
        dashboard.clients.append(client)
        form_page = client.get("/login")
        csrf = form_page.cookies["_csrf_token"]
        # A client keeps Secure cookies for HTTPS; this loopback test hands it back itself.
        form = {"name": "planner", "password": PASSWORD, "csrf": csrf}
        response = client.post("/login", data=form, headers={"Cookie": f"_csrf_token={csrf}"})
        assert response.status_code == 302
        cookies = response.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("city_session="))
        assert "Secure" in session
        assert "HttpOnly" in session
        assert "SameSite=Strict" in session
        token = next(c for c in cookies if c.startswith("_csrf_token="))
        assert "Secure" in token
        assert "SameSite=Strict" in token


def test_no_redirect_away_from_the_site_after_login(served: Served) -> None:
    client = served.client()
    client.get("/login")
    for target in ("//evil.example/", "https://evil.example/", "javascript:alert(1)"):
        form = {"name": "planner", "password": PASSWORD, "next": target,
                "csrf": client.cookies.get("_csrf_token", "")}  # fmt: skip
        response = client.post("/login", data=form)
        assert response.headers["location"] == "/", target


def test_a_disabled_or_demoted_user_is_out_at_the_next_request(served: Served) -> None:
    operator = served.client("operator")
    technician = served.client("technician")
    with psycopg.connect(served.dsn) as conn:
        accounts.disable(conn, "operator", __import__("datetime").datetime.now(
            __import__("datetime").UTC))  # fmt: skip
        accounts.set_role(conn, "technician", "planner")
    assert operator.get("/_dash-layout").status_code == 401
    assert technician.get("/_dash-layout").status_code == 401  # log in again for the new role


def test_login_links_are_off_unless_configured_and_work_once(database: Database) -> None:
    with serving(database.dsn) as plain:
        with psycopg.connect(plain.dsn) as conn:
            token = accounts.login_link(conn, "admin", _now(), _minutes(5))
        assert plain.client().get(f"/login/link/{token}").status_code == 404
    with psycopg.connect(database.dsn) as conn:
        conn.execute("DELETE FROM users")
    with serving(database.dsn, login_links=True) as linked:
        with psycopg.connect(linked.dsn) as conn:
            token = accounts.login_link(conn, "admin", _now(), _minutes(5))
        client = linked.client()
        assert client.get(f"/login/link/{token}").status_code == 302
        assert client.get("/_dash-layout").status_code == 200
        assert linked.client().get(f"/login/link/{token}").status_code == 401


def _now() -> Any:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.now(UTC)


def _minutes(n: int) -> Any:
    from datetime import timedelta  # noqa: PLC0415

    return timedelta(minutes=n)


def _admin_call(client: httpx.Client, output: str, trigger: str, state: dict[str, Any]) -> Any:
    return dash_call(
        client,
        output,
        lambda item: 1 if item["id"] == trigger else state.get(item["id"]),
        [f"{trigger}.n_clicks"],
    )


def test_admins_manage_accounts_on_the_page_and_it_is_audited(served: Served) -> None:
    admin = served.client("admin")
    added = _admin_call(
        admin,
        "..admin-result.children",
        "admin-add",
        {"admin-name": "bea", "admin-role": "technician", "admin-changed": 0},
    )
    assert added.status_code == 200, added.text[:300]
    assert "First password" in added.text
    role = _admin_call(
        admin,
        "..admin-change-result.children",
        "admin-set-role",
        {"admin-target": "bea", "admin-new-role": "operator", "admin-changed": 1},
    )
    assert "TOTP secret" in role.text  # operators need a second factor: a secret is made
    gone = _admin_call(
        admin,
        "..admin-change-result.children",
        "admin-disable",
        {"admin-target": "bea", "admin-changed": 2},
    )
    assert "disabled" in gone.text
    planner = served.client("planner")
    refused = _admin_call(
        planner,
        "..admin-result.children",
        "admin-add",
        {"admin-name": "mallory", "admin-role": "admin", "admin-changed": 0},
    )
    assert refused.status_code in (401, 403)
    trail = [entry for entry in audit(served.dsn) if entry[1].startswith("user-")]
    assert trail == [("admin", "user-add"), ("admin", "user-role"), ("admin", "user-disable")]
