"""``smartcity ingest | migrate | check-config``: the ingest service's entry points."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from datetime import UTC, datetime

import psycopg

from edge.errors import ConfigError
from ingest import config as ingest_config
from ingest import retention
from ingest.logs import setup_logging
from ingest.schema import MigrationError, migrate
from ingest.service import IngestService

log = logging.getLogger(__name__)


async def serve(service: IngestService) -> None:
    """Run ``service`` until SIGINT/SIGTERM; a second signal aborts the graceful stop."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("stopping: writing and acknowledging what is in hand")
            service.stop()
        elif main_task is not None:
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await service.run()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every ingest command shares."""
    parser.add_argument(
        "--config", help="TOML file with an [ingest] table (CITY_INGEST_* env overrides)"
    )


def run_ingest(args: argparse.Namespace) -> int:
    """``smartcity ingest``."""
    config = ingest_config.load(args.config)
    setup_logging(config.log_level, config.log_format)
    try:
        asyncio.run(serve(IngestService(config)))
    except asyncio.CancelledError:
        log.warning("stopped without finishing; unacknowledged messages stay with the broker")
        return 1
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    """``smartcity migrate``."""
    config = ingest_config.load(args.config)
    setup_logging(config.log_level)
    applied = migrate(
        config.database_url, timescaledb=config.timescaledb, city_zone=config.city_timezone
    )
    print("applied " + ", ".join(f"{v:03d}" for v in applied) if applied else "schema up to date")
    return 0


_REJECTIONS = (
    "SELECT received_at, device_id, reason, reading_index, detail FROM rejections"
    " WHERE (%(device)s::text IS NULL OR device_id = %(device)s)"
    " AND (%(reason)s::text IS NULL OR reason = %(reason)s)"
    " ORDER BY id DESC LIMIT %(limit)s"
)


def run_rejections(args: argparse.Namespace) -> int:
    """``smartcity rejections``: what ingest refused lately, newest first, with reasons."""
    config = ingest_config.load(args.config)
    params = {"device": args.device, "reason": args.reason, "limit": args.limit}
    with psycopg.connect(config.database_url) as conn:
        rows = conn.execute(_REJECTIONS, params).fetchall()
    if not rows:
        print("no rejections")
        return 0
    for received_at, device, reason, index, detail in rows:
        where = "whole message" if index is None else f"reading {index}"
        when = f"{received_at:%Y-%m-%d %H:%M:%S}"
        print(f"{when}  {device or '-':<16} {reason:<22} {where:<14} {detail}")
    return 0


def run_retention(args: argparse.Namespace) -> int:
    """``smartcity retention``: drop what the retention policy no longer keeps, once."""
    config = ingest_config.load(args.config)

    async def once() -> retention.Dropped:
        async with await psycopg.AsyncConnection.connect(config.database_url) as conn:
            return await retention.apply(conn, config.retention(), now=datetime.now(UTC))

    dropped = asyncio.run(once())
    if dropped.skipped:
        print("another retention run holds the lock; nothing done")
        return 0
    rollup_rows = ", ".join(f"{table} {rows:,}" for table, rows in dropped.rollup_rows.items())
    print(
        f"raw readings: {dropped.raw_chunks} chunks, {dropped.raw_rows:,} rows dropped;"
        f" rollups: {rollup_rows or 'all kept'}"
    )
    return 0


def run_check_config(args: argparse.Namespace) -> int:
    """``smartcity check-config``: load and validate, print the result, start nothing."""
    config = ingest_config.load(args.config)
    print(f"ok: {config!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ingest``: the ingest service alone."""
    parser = argparse.ArgumentParser(prog="python -m ingest", description="Run the ingest service.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_ingest(args)
    except (ConfigError, MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
