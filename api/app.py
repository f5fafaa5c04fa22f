"""The planner API application: routes, authentication, and errors that say what to change."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from psycopg_pool import AsyncConnectionPool

from api import catalog, exports, sensorthings, series, standards
from api.config import ApiConfig
from history.export import ExportError
from history.query import QueryError
from history.sensorthings import SensorThingsError

log = logging.getLogger(__name__)

DESCRIPTION = """\
History, exports and open-data views of the city's telemetry for planners and analysts.

Every route but `/health` needs `Authorization: Bearer <token>`; an administrator makes tokens
with `smartcity tokens add NAME --role planner|operator|technician|admin`. Planners and
administrators may export; operators read history; technicians read the catalogue.
Lists are paged with an opaque `cursor` (follow `next`); exports have no row cap.
"""


def create_app(config: ApiConfig) -> FastAPI:
    """The application; its connection pools open and close with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pools = [_pool(config.database_url, config.pool_size, "api")]
        if config.read_database_url:
            pools.append(_pool(config.read_database_url, config.pool_size, "api-reads"))
        for pool in pools:
            await pool.open()
        app.state.pool, app.state.read_pool = pools[0], pools[-1]
        try:
            yield
        finally:
            for pool in pools:
                await pool.close()

    app = FastAPI(
        title="City telemetry planner API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.config = config
    for router in (catalog.router, series.router, exports.router, standards.router,
                   sensorthings.router):  # fmt: skip
        app.include_router(router)

    @app.get("/health", tags=["service"], summary="Liveness and database reachability")
    async def health(request: Request) -> dict[str, str]:
        async with request.app.state.read_pool.connection() as conn:
            await conn.execute("SELECT 1")
        return {"status": "ok"}

    @app.middleware("http")
    async def refuse_nul(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                         ) -> Response:  # fmt: skip
        # PostgreSQL text cannot hold NUL; refuse it here, before any route or stream starts.
        raw = request.scope.get("raw_path", b"") + b"?" + request.scope.get("query_string", b"")
        if b"%00" in raw.lower() or b"\x00" in raw:
            return JSONResponse({"detail": "NUL characters are not allowed"}, status_code=400)
        return await call_next(request)

    app.add_exception_handler(QueryError, _bad_request)
    app.add_exception_handler(ExportError, _bad_request)
    app.add_exception_handler(SensorThingsError, _bad_request)
    app.add_exception_handler(psycopg.DataError, _bad_value)
    app.add_exception_handler(psycopg.OperationalError, _unavailable)
    return app


def _pool(url: str, size: int, name: str) -> AsyncConnectionPool:
    # Checked before lending, so a connection to a server that has since failed over is replaced
    # (through the URL's hosts) before a request runs on it.
    return AsyncConnectionPool(
        url, min_size=1, max_size=size, open=False, name=name,
        check=AsyncConnectionPool.check_connection,
    )  # fmt: skip


async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def _bad_value(request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value (a date beyond its range, a NUL in text): the request's
    # fault. Its message names the value, not the query.
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return JSONResponse({"detail": f"a parameter is not valid: {first_line}"}, status_code=400)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse({"detail": "the database is unavailable; try again"}, status_code=503)
