"""Opaque cursors for keyset paging, and the page shape every list returns.

A cursor is the key of the first row of the next page, base64url-encoded JSON; clients pass it
back unchanged. A cursor that does not decode to the expected key is a 400, never a 500.

Examples:
    >>> from datetime import datetime, timezone
    >>> key = (datetime(2026, 11, 23, tzinfo=timezone.utc), 7)
    >>> decode_time_key(encode([key[0].isoformat(), key[1]])) == key
    True
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from fastapi import HTTPException, Request, status
from fastapi.dependencies.models import Dependant
from pydantic import AfterValidator, AwareDatetime, BaseModel

Item = TypeVar("Item")


def in_utc(moment: datetime) -> datetime:
    """``moment`` in UTC: the database takes offsets up to 15:59 only, people write up to 23:59.

    Raises:
        ValueError: The instant falls outside the years 1..9999 in UTC.
    """
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("the time is out of range in UTC") from exc


# A time with a zone, as the API works with it.
Moment = Annotated[AwareDatetime, AfterValidator(in_utc)]


class Page(BaseModel, Generic[Item]):
    """One page of a list; ``next`` is the URL of the following page (absent on the last)."""

    items: list[Item]
    next_cursor: str | None = None
    next: str | None = None


def encode(key: list[object]) -> str:
    """The cursor for ``key``."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _decode(cursor: str) -> list[object]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise _bad_cursor() from exc
    if not isinstance(key, list):
        raise _bad_cursor()
    return key


def _bad_cursor() -> HTTPException:
    return HTTPException(
        status.HTTP_400_BAD_REQUEST, "cursor is not one this API gave out; start without it"
    )


def decode_text_key(cursor: str) -> str:
    """A cursor holding one text key."""
    key = _decode(cursor)
    if len(key) != 1 or not isinstance(key[0], str):
        raise _bad_cursor()
    return key[0]


def decode_int_key(cursor: str) -> int:
    """A cursor holding one integer key (ids fit in a bigint)."""
    key = _decode(cursor)
    if len(key) != 1 or type(key[0]) is not int or not 0 <= key[0] < 2**63:
        raise _bad_cursor()
    return key[0]


def decode_time_key(cursor: str) -> tuple[datetime, int]:
    """A cursor holding (time with zone, stream id)."""
    key = _decode(cursor)
    if len(key) != 2 or not isinstance(key[0], str) or type(key[1]) is not int:
        raise _bad_cursor()
    try:
        moment = datetime.fromisoformat(key[0])
    except ValueError as exc:
        raise _bad_cursor() from exc
    if moment.tzinfo is None or not 0 <= key[1] < 2**31:
        raise _bad_cursor()
    try:
        return in_utc(moment), key[1]
    except ValueError as exc:
        raise _bad_cursor() from exc


def link_base(request: Request) -> str:
    """Where this API's absolute links start: ``public_url``, or the address it listens on.

    Never the request's ``Host`` header, which the client writes: a link built from it sends
    the next page's reader, and their token, to any host.
    """
    public: str = request.app.state.config.public_url
    if public:
        return public.rstrip("/")
    server = request.scope.get("server")
    if not server or server[1] is None:
        raise RuntimeError("set public_url: the server's own address is unknown")
    host, port = server
    host = f"[{host}]" if ":" in host else host
    return f"{request.url.scheme}://{host}:{port}"


def next_url(request: Request, cursor: str) -> str:
    """The request's URL with ``cursor`` replaced."""
    url = request.url.include_query_params(cursor=cursor)
    return link_base(request) + url.path + ("?" + url.query if url.query else "")


def page(
    request: Request, items: Sequence[Item], limit: int, key: Callable[[Item], list[object]]
) -> Page[Item]:
    """The first ``limit`` items; the one beyond, if fetched, is where the next page starts."""
    if len(items) <= limit:
        return Page(items=list(items))
    cursor = encode(key(items[limit]))
    return Page(
        items=list(items[:limit]),
        next_cursor=cursor,
        next=next_url(request, cursor),
    )


class Problem(BaseModel):
    """What was wrong with the request, in words."""

    detail: str


# The error answers every route may give, documented once for all of them.
ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": Problem, "description": "a parameter that cannot be answered as given"},
    401: {"model": Problem, "description": "no valid bearer token"},
    403: {"model": Problem, "description": "the token's role may not use this route"},
    404: {"model": Problem, "description": "no such entity"},
    503: {"model": Problem, "description": "the database is unavailable"},
}


async def known_parameters_only(request: Request) -> None:
    """Refuse query parameters the route does not take.

    A typo such as ``sit=north`` would otherwise widen the answer to the whole city unnoticed.
    """
    route = request.scope.get("route")
    if route is None:
        return
    taken = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - taken)
    if unknown:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"unknown parameter(s) {', '.join(map(repr, unknown))[:200]};"
            f" this route takes: {', '.join(sorted(taken)) or 'none'}",
        )


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
