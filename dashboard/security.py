"""Login, sessions, CSRF and roles, enforced on the server for every page, callback and route.

Every request passes :func:`gate` before Dash sees it: static files are public; everything
else needs a logged-in, enabled user whose role may open the page or update the components a
callback writes to (component ids are prefixed by page, see ``ids.py``). A POST also needs the
session's CSRF token in ``X-CSRFToken``, which Dash's renderer sends from the ``_csrf_token``
cookie (double submit; the cookies are ``SameSite=Strict`` as well). The signed session cookie
carries only a random session token: whether the session is still open is asked of the database
at every request, so logging out, disabling an account, changing its role, an admin's "sign out
everywhere" and the idle and absolute timeouts end it on the server. Logins, failures, lockouts
and logouts go to the audit log.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import psycopg
from flask import Flask, Response, g, redirect, request, session
from psycopg_pool import ConnectionPool

from dashboard import accounts
from dashboard.accounts import User
from dashboard.config import DashboardConfig
from edge.contract import is_valid_id

log = logging.getLogger(__name__)
LOGIN_REFUSED: Final = (
    "Wrong name, password or code, or too many failed attempts: after"
    f" {accounts.MAX_FAILURES} in a row an account is locked for {accounts.LOCK_MINUTES} minutes."
)

ALL_ROLES: Final = frozenset(accounts.ROLES)
# Who may open each page, and update the components whose ids start with its prefix.
PAGES: Final[dict[str, tuple[str, frozenset[str]]]] = {
    "/": ("overview", ALL_ROLES),
    "/alerts": ("alerts", frozenset({"operator", "admin"})),
    "/fleet": ("fleet", frozenset({"technician", "operator", "admin"})),
    "/history": ("history", frozenset({"planner", "operator", "admin"})),
    "/admin": ("admin", frozenset({"admin"})),
    "/sensor": ("sensor", ALL_ROLES),
}
PREFIX_ROLES: Final = {prefix: roles for prefix, roles in PAGES.values()} | {"shell": ALL_ROLES}
MAX_ADDRESS: Final = 2048  # characters of a page address or its query
CSRF_COOKIE: Final = "_csrf_token"  # the name Dash's renderer reads
SEEN_EVERY: Final = timedelta(minutes=1)  # a session's activity is written at most this often
_PUBLIC: Final = ("/assets/", "/_dash-component-suites/", "/_favicon.ico", "/login")


def page_at(path: str) -> str | None:
    """The page Dash's router renders at ``path``; None where it renders its 404.

    It compares paths without their slashes: ``//admin`` and ``/admin/`` are the Admin page.
    """
    key = path.strip("/")
    return next((page for page in PAGES if page.strip("/") == key), None)


def may_open(role: str, path: str) -> bool:
    """Whether ``role`` may open the page at ``path``.

    At an unknown path any logged-in user gets the shell, whose router then refuses it.
    """
    page = page_at(path)
    return page is None or role in PAGES[page][1]


def may_update(role: str, component_ids: list[str], pathname: str | None) -> bool:
    """Whether ``role`` may run a callback writing to ``component_ids`` (unknown: refused).

    Dash's own page routing (``_pages_*``) renders the page at ``pathname``: allowed when that
    is a page the role may open.
    """
    for component in component_ids:
        if component.startswith("_pages_"):
            page = None if pathname is None else page_at(pathname)
            if page is None or role not in PAGES[page][1]:
                return False
            continue
        roles = PREFIX_ROLES.get(component.split("-", 1)[0])
        if roles is None or role not in roles:
            return False
    return bool(component_ids)


def address_problem(pathname: object, search: object) -> str | None:
    """What is wrong with a page address a callback was given, if anything, in a sentence.

    Pages read their address (the sensor page its ``device`` or ``stream``), so one the
    control room could never have made is refused here rather than left to fail in a page.
    """
    if pathname is not None and (
        not isinstance(pathname, str)
        or not pathname.startswith("/")
        or len(pathname) > MAX_ADDRESS
        or any(c.isspace() or _control(c) for c in pathname)
    ):
        return "the address is not a page of the control room"
    return None if search is None or search == "" else _query_problem(search)


def _query_problem(search: object) -> str | None:
    if not isinstance(search, str) or len(search) > MAX_ADDRESS:
        return "the address's query is not one the control room makes"
    for key, value in parse_qsl(search.removeprefix("?"), keep_blank_values=True):
        if any(_control(c) for c in key + value):
            return "the address contains a control character"
        if not value:
            continue  # an empty parameter is as if absent
        if key == "stream" and not (value.isascii() and value.isdigit() and 0 < int(value) < 2**31):
            return "stream must be a stream's number, a whole number from 1"
        if key == "device" and not is_valid_id(value):
            return "device must be a device's id: letters, digits, '.', '_' or '-', at most 64"
    return None


def _control(character: str) -> bool:
    return unicodedata.category(character) == "Cc"


def _location(body: dict[str, Any], prop: str) -> dict[str, Any] | None:
    """The input or state carrying the address's ``pathname`` or ``search``, if any."""
    for item in body.get("inputs", []) + body.get("state", []):
        if isinstance(item, dict) and item.get("property") == prop:
            return item
    return None


def _router_address(body: dict[str, Any]) -> tuple[object, object]:
    """The pathname and search Dash's router callback is given.

    Its first two inputs, by position, whatever ids and properties they claim: that is how
    Dash passes them.
    """
    inputs = body.get("inputs")
    values = [i.get("value") if isinstance(i, dict) else None for i in inputs or []][:2]
    values += [None] * (2 - len(values))
    return values[0], values[1]


def _outputs(body: dict[str, Any]) -> list[str] | None:
    """The component ids a ``/_dash-update-component`` request writes to, as Dash decides them.

    Dash picks the callback by the ``output`` string (``id.prop``, or ``..a.x...b.y..`` for
    several) and checks ``outputs`` against it only later: the ids are read from ``output``, and
    a request whose ``outputs`` name other components is refused (None).
    """
    output = body.get("output")
    if not isinstance(output, str):
        return None
    named = [part.rsplit(".", 1)[0] for part in output.strip(".").split("...") if part]
    listed = body.get("outputs")
    items = listed if isinstance(listed, list) else [listed]
    ids = [item.get("id") if isinstance(item, dict) else None for item in items]
    if [i if isinstance(i, str) else json.dumps(i) for i in ids] != named:
        return None  # pattern-matching ids (dicts) are not ours either
    return named


def install(
    app: Flask,
    config: DashboardConfig,
    pool: ConnectionPool,
    read_pool: ConnectionPool | None = None,
) -> None:
    """Put the gate, the login and logout routes and the cookie settings on ``app``.

    Logins and the audit log are written through ``pool``; each request's user is read through
    ``read_pool`` (a standby when configured), so pages keep opening while the primary fails
    over. A standby trails by well under a second: a disabled user is out once that has replayed.
    """
    readers = read_pool or pool
    limits = accounts.Limits(
        idle=timedelta(minutes=config.session_idle_minutes),
        absolute=timedelta(hours=config.session_hours),
    )
    app.secret_key = config.secret_key or secrets.token_urlsafe(32)
    if not config.secret_key:
        log.warning("no secret_key set: sessions end when the dashboard restarts")
    app.config.update(
        SESSION_COOKIE_SECURE=config.cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="city_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=config.session_hours),
    )

    def audit(actor: str, action: str, **detail: object) -> None:
        with pool.connection() as conn:
            conn.execute(
                "INSERT INTO audit_log (actor, action, detail) VALUES (%s, %s, %s::jsonb)",
                (actor, action, json.dumps(detail)),
            )

    app.extensions["smartcity.audit"] = audit

    @app.after_request
    def server_timing(response: Response) -> Response:
        # How long the server worked on this request: browsers' tools and the benchmark read it.
        started = g.get("started")
        if started is not None:
            elapsed = (time.perf_counter() - started) * 1000
            response.headers["Server-Timing"] = f"app;dur={elapsed:.1f}"
        return response

    @app.before_request
    def gate() -> Response | None:
        g.started = time.perf_counter()
        path = request.path
        if path.startswith(_PUBLIC):
            return None
        user = _session_user(readers, pool, limits)
        if user is None:
            if path.startswith("/_dash-"):
                return _json({"detail": "log in first"}, 401)
            return redirect(f"/login?next={_safe_next(request.full_path)}")  # type: ignore[return-value]
        g.user = user
        return _refusal(user, path)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Response:
        if request.method == "GET":
            return _login_form(config.title, "", request.args.get("next", "/"))
        if not _form_csrf_ok():
            return _login_form(config.title, "The form had expired; please try again.", "/", 403)
        name = request.form.get("name", "")[:64]
        now = datetime.now(UTC)
        with pool.connection() as conn:
            outcome = accounts.login(
                conn, name, request.form.get("password", "")[:1024],
                request.form.get("code", "")[:16], now,
            )  # fmt: skip
        if outcome.user is None:
            audit(name or "(empty)", "login-failed", reason=outcome.reason, ip=request.remote_addr)
            # One answer whatever went wrong: which part was right, or whether the name
            # exists (only an existing account can be locked), is not told.
            return _login_form(config.title, LOGIN_REFUSED, request.form.get("next", "/"), 401)
        audit(outcome.user.name, "login", role=outcome.user.role, ip=request.remote_addr)
        target = _safe_next(request.form.get("next", "/"))
        return _start_session(pool, outcome.user, target, config)

    @app.route("/login/link/<token>")
    def login_link(token: str) -> Response:
        if not config.login_links:
            return _page("Not available", "<p>Login links are turned off.</p>", 404)
        with pool.connection() as conn:
            user = accounts.use_login_link(conn, token[:100], datetime.now(UTC))
        if user is None:
            return _page("Link used or expired", "<p><a href='/login'>Log in</a></p>", 401)
        audit(user.name, "login", role=user.role, via="link", ip=request.remote_addr)
        return _start_session(pool, user, "/", config)

    @app.route("/logout", methods=["POST"])
    def logout() -> Response:
        audit(g.user.name, "logout")
        token = session.get("sid")
        if isinstance(token, str):
            with pool.connection() as conn:
                accounts.close_session(conn, token, datetime.now(UTC), "logged out")
        session.clear()
        response: Response = redirect("/login")  # type: ignore[assignment]
        response.delete_cookie(CSRF_COOKIE)
        return response


def _refusal(user: User, path: str) -> Response | None:
    """Why a logged-in user may not make this request, if they may not."""
    if request.method not in ("GET", "HEAD") and not _csrf_ok():
        return _json({"detail": "missing or wrong CSRF token; reload the page"}, 403)
    if path == "/_dash-update-component":
        return _callback_refusal(user, request.get_json(silent=True) or {})
    if not path.startswith("/_dash-") and not may_open(user.role, path):
        return _page(
            "Not for your role",
            f"<p>The {escape(user.role)} role cannot open"
            " this page.</p><p><a href='/'>Back to the overview</a></p>",
            403,
        )
    return None


def _callback_refusal(user: User, body: object) -> Response | None:
    """Why ``user`` may not run this callback, read as Dash will read it, if they may not."""
    if not isinstance(body, dict):
        return _json({"detail": "a callback request is a JSON object"}, 400)
    outputs = _outputs(body)
    if outputs is None:
        return _json({"detail": "the callback's outputs do not match its output"}, 400)
    routing = any(o.startswith("_pages_") for o in outputs)
    if routing:
        pathname, search = _router_address(body)
    else:
        pathname = (_location(body, "pathname") or {}).get("value")
        search = (_location(body, "search") or {}).get("value")
    wrong = address_problem(pathname, search)
    if wrong is not None:
        return _json({"detail": wrong}, 400)
    if routing and isinstance(pathname, str) and page_at(pathname) is None:
        return _json({"detail": "there is no page at this address"}, 404)
    if not may_update(user.role, outputs, pathname if isinstance(pathname, str) else None):
        return _json({"detail": f"role {user.role!r} may not do that"}, 403)
    return None


def current_user() -> User:
    """The user of the request being served (the gate has checked there is one)."""
    user: User = g.user
    return user


def request_user() -> User | None:
    """The user of the request, or None outside the gate (Dash checks its layout once, early)."""
    user: User | None = g.get("user")
    return user


def audit_action(action: str, **detail: object) -> None:
    """Record ``action`` by the current user in the audit log."""
    from flask import current_app  # noqa: PLC0415

    record: Callable[..., None] = current_app.extensions["smartcity.audit"]
    record(current_user().name, action, **detail)


def _session_user(
    readers: ConnectionPool, writers: ConnectionPool, limits: accounts.Limits
) -> User | None:
    token = session.get("sid")
    if not isinstance(token, str):
        return None
    now = datetime.now(UTC)
    with readers.connection() as conn:
        found = accounts.session(conn, token, now, limits)
    if found is None:
        session.clear()  # ended, timed out, or its account disabled or given another role
        return None
    if now - found.last_seen_at > SEEN_EVERY:
        try:
            with writers.connection() as conn:
                accounts.seen(conn, token, now)
        except psycopg.Error as exc:  # the primary is failing over: noted at a later request
            log.info("session activity not noted: %s", exc)
    return found.user


def _csrf_ok() -> bool:
    expected = session.get("csrf")
    # Dash sends it as a header; plain forms (log out) as a field.
    given = request.headers.get("X-CSRFToken") or request.form.get("csrf", "")
    return isinstance(expected, str) and hmac.compare_digest(expected, given)


def _form_csrf_ok() -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = request.form.get("csrf", "")
    return bool(cookie) and hmac.compare_digest(cookie, given)


def _start_session(
    pool: ConnectionPool, user: User, target: str, config: DashboardConfig
) -> Response:
    with pool.connection() as conn:
        sid = accounts.open_session(conn, user, datetime.now(UTC))
    session.clear()  # a fresh session: nothing from before the login carries over
    session.permanent = True
    session["sid"] = sid
    session["csrf"] = token = secrets.token_urlsafe(32)
    response: Response = redirect(target)  # type: ignore[assignment]
    _set_csrf_cookie(response, token, config)
    return response


def _set_csrf_cookie(response: Response, token: str, config: DashboardConfig) -> None:
    # Readable by the page's script (that is how Dash sends it back), never by other sites.
    response.set_cookie(CSRF_COOKIE, token, secure=config.cookie_secure, httponly=False,
                        samesite="Strict")  # fmt: skip


def _safe_next(target: str) -> str:
    """Only same-site paths: a login link must not bounce people to another site.

    A backslash is a slash to browsers (so it could lead to another site), and a control character
    (a line break splitting the redirect's header) is in no address of ours: home instead.
    """
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(_control(c) for c in target)
    ):
        return "/"
    return target.rstrip("?") or "/"


def _json(body: dict[str, str], status: int) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><link rel='stylesheet' href='/assets/style.css'></head>"
        f"<body><main class='login'><h1>{escape(title)}</h1>{body}</main></body></html>"
    )
    return Response(html, status=status, mimetype="text/html")


def _login_form(title: str, message: str, target: str, status: int = 200) -> Response:
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    alert = f"<p class='error' role='alert'>{escape(message)}</p>" if message else ""
    body = f"""{alert}
<form method="post" action="/login">
  <input type="hidden" name="csrf" value="{escape(token)}">
  <input type="hidden" name="next" value="{escape(_safe_next(target))}">
  <label for="name">Name</label>
  <input id="name" name="name" autocomplete="username" required autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required>
  <label for="code">Code from your authenticator app
    <span class="hint">(operators and administrators)</span></label>
  <input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="8">
  <button type="submit">Log in</button>
</form>"""
    response = _page(f"{title}: log in", body, status)
    secure = bool(_flask_config("SESSION_COOKIE_SECURE"))
    response.set_cookie(CSRF_COOKIE, token, secure=secure, httponly=False, samesite="Strict")
    return response


def _flask_config(key: str) -> object:
    from flask import current_app  # noqa: PLC0415

    return current_app.config.get(key)
