"""Streaming CSV and Parquet export: no row cap, optional pages cut by a keyset cursor.

The rows leave the database by binary COPY and reach the client as the file is written, one
block of about 8 MB at a time, so neither side holds the whole export. Each export is audited.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from api import db, paging
from api.auth import Exporter
from api.catalog import Cursor, Texts
from api.series import End, Start
from history.export import (
    Encoder,
    Format,
    Resolution,
    Selection,
    page_end_query,
    probe_query,
    record_batches,
)

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1",
    tags=["export"],
    responses=paging.ERRORS,
    dependencies=[Depends(paging.known_parameters_only)],
)

MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


class Drain(io.RawIOBase):
    """A write-only sink the response empties after each block.

    It keeps counting the position, so the Parquet writer's offsets stay right.
    """

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:  # noqa: D102
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]  # noqa: D102
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:  # noqa: D102
        return self._position

    def take(self) -> bytes:
        """What was written since the last call."""
        data = b"".join(self._parts)
        self._parts = []
        return data


@router.get(
    "/export",
    summary="Stream readings or rollups as CSV or Parquet",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {media: {} for media in MEDIA_TYPES.values()},
            "description": "the file; with page_size, a Link header names the next page",
        }
    },
)
async def export(  # one parameter per documented filter
    request: Request,
    who: Exporter,
    start: Start,
    end: End,
    format: Format = "csv",  # the API's parameter name
    resolution: Resolution = "raw",
    site: Texts = None,
    device: Texts = None,
    metric: Texts = None,
    page_size: Annotated[
        int | None, Query(ge=1, le=100_000_000, description="rows per page (default: all)")
    ] = None,
    cursor: Cursor = None,
) -> StreamingResponse:
    """Every selected row in (time, stream) order.

    Columns: time (``ts`` or ``bucket``), device,
    site, sensor, metric, unit, then ``value`` for raw readings or n, mean, low, high,
    last_value for rollups. With ``page_size`` the file stops after that many rows and the
    ``Link: <...>; rel="next"`` header (and ``X-Next-Cursor``) continue it.
    """
    first = paging.decode_time_key(cursor) if cursor else None
    selection = Selection(start, end, resolution, sites=site, devices=device, metrics=metric,
                          first=first)  # fmt: skip
    selection.check()
    name = f"smartcity-{resolution}-{start:%Y%m%dT%H%M%SZ}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    await db.fetch(request, *probe_query(selection))
    if page_size is not None:
        query, params = page_end_query(selection, page_size)
        rows = await db.fetch(request, query, params)
        if rows:
            stop = tuple(rows[0].values())
            selection = replace(selection, stop=(stop[0], stop[1]))
            next_cursor = paging.encode([stop[0].isoformat(), stop[1]])
            url = paging.next_url(request, next_cursor)
            headers["Link"] = f'<{url}>; rel="next"'
            headers["X-Next-Cursor"] = next_cursor
    await db.audit(request, who.name, "export", json.dumps({
        "start": start.isoformat(), "end": end.isoformat(), "resolution": resolution,
        "format": format, "sites": site, "devices": device, "metrics": metric,
        "page_size": page_size, "cursor": cursor,
    }))  # fmt: skip
    body = _stream(request.app.state.config.reads_url, selection, format)
    return StreamingResponse(body, media_type=MEDIA_TYPES[format], headers=headers)


async def _stream(
    database_url: str, selection: Selection, file_format: Literal["csv", "parquet"]
) -> AsyncIterator[bytes]:
    """The file, block by block, made in a worker thread on a connection of its own.

    Reading COPY in the event loop costs an await per row (libpq hands rows over one at a
    time); in a thread the same work runs at the speed of the command-line export. A queue of a
    few blocks is the backpressure: a slow client slows the reading, never fills memory.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=4)
    stopped = threading.Event()

    def put(item: bytes | BaseException | None) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def produce() -> None:
        try:
            sink = Drain()
            encoder = Encoder(sink, selection, file_format)
            with psycopg.connect(database_url) as conn:
                for batch in record_batches(conn, selection):
                    if stopped.is_set():
                        return  # the client went away
                    encoder.add(batch)
                    put(sink.take())
            encoder.close()
            put(sink.take())
            put(None)
        except Exception as exc:  # handed to the response, which aborts
            if not stopped.is_set():
                put(exc)

    worker = loop.run_in_executor(None, produce)
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                log.warning("export aborted: %s", type(item).__name__)
                raise item  # the client sees a broken transfer, never a short "complete" file
            yield item
    finally:
        stopped.set()
        while not queue.empty():  # let a producer blocked on a full queue see the stop
            queue.get_nowait()
        await asyncio.shield(worker)
