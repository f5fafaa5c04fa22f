"""``smartcity query`` and ``smartcity export``: history from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo


def parse_time(text: str) -> datetime:
    """ISO-8601 with a zone, e.g. ``2026-11-23T08:00Z`` or ``2026-11-23T08:00+01:00``."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. {text}Z")
    return moment


def parse_bucket(text: str) -> timedelta:
    """A bucket such as ``30s``, ``10m``, ``1h`` or ``1d``."""
    from history.query import QueryError  # noqa: PLC0415
    from history.query import parse_bucket as parse  # noqa: PLC0415

    try:
        return parse(text)
    except QueryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``query`` and ``export``."""
    query = commands.add_parser("query", help="aggregate history by time bucket and group")
    export = commands.add_parser("export", help="export readings or rollups to CSV or Parquet")
    for command in (query, export):
        command.add_argument("--config", help="TOML configuration (for database_url)")
        command.add_argument("--start", type=parse_time, required=True, help="from (ISO-8601)")
        command.add_argument("--end", type=parse_time, required=True, help="until (ISO-8601)")
        command.add_argument("--site", action="append", help="only this district (repeatable)")
        command.add_argument("--metric", action="append", help="only this metric (repeatable)")
    query.add_argument("--bucket", type=parse_bucket, default=timedelta(hours=1))
    query.add_argument(
        "--aggregate", default="mean", choices=("mean", "min", "max", "count", "sum", "last")
    )
    query.add_argument("--group-by", default="site", choices=("stream", "site", "family", "metric"))
    query.set_defaults(func=run_query)
    export.add_argument("--device", action="append", help="only this device (repeatable)")
    export.add_argument("--resolution", default="raw", choices=("raw", "1m", "1h", "1d"))
    export.add_argument("--format", default=None, choices=("csv", "parquet"),
                        help="default: from the output's extension")  # fmt: skip
    export.add_argument("--output", type=Path, required=True, help="file to write")
    export.set_defaults(func=run_export)


def add_import_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``import``."""
    backfill = commands.add_parser("import", help="backfill readings from a CSV file")
    backfill.add_argument("--config", help="TOML configuration (for database_url)")
    backfill.add_argument("--input", type=Path, required=True, help="CSV as export writes it")
    backfill.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Import, with a progress bar; list the refused lines with their reasons."""
    import psycopg  # noqa: PLC0415

    from history.importer import BackfillError, import_csv  # noqa: PLC0415

    try:
        lines = max(sum(1 for _ in args.input.open("rb")) - 1, 0)
        bar = _ProgressBar(lines)
        with psycopg.connect(_database_url(args)) as conn:
            result = import_csv(conn, args.input, progress=lambda line: bar(line - 1))
        bar.finish()
    except (BackfillError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"imported {result.inserted:,} readings; {result.duplicates:,} were already stored;"
        f" {len(result.rejected):,} lines refused"
    )
    for line, reason in result.rejected[:20]:
        print(f"  line {line}: {reason}", file=sys.stderr)
    if len(result.rejected) > 20:
        print(f"  ... and {len(result.rejected) - 20:,} more", file=sys.stderr)
    return 0


def _database_url(args: argparse.Namespace) -> str:
    from ingest import config as ingest_config  # noqa: PLC0415

    return ingest_config.load(args.config).database_url


def run_query(args: argparse.Namespace) -> int:
    """Print the buckets and the gaps."""
    import psycopg  # noqa: PLC0415

    from history.query import Answer, QueryError, aggregate  # noqa: PLC0415

    async def answer() -> Answer:
        async with await psycopg.AsyncConnection.connect(_database_url(args)) as conn:
            return await aggregate(
                conn, start=args.start, end=args.end, bucket=args.bucket,
                aggregate=args.aggregate, group_by=args.group_by,
                sites=args.site, metrics=args.metric,
            )  # fmt: skip

    try:
        result = asyncio.run(answer())
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    zone = ZoneInfo(result.zone)
    print(
        f"# from {result.level}; {args.aggregate} per {args.bucket} by {args.group_by};"
        f" bucket starts in {result.zone} local time; 'partial' where the range cuts a bucket"
    )
    for row in result.rows:
        value = "" if row.value is None else f"{row.value:.6g}"
        at = row.bucket.astimezone(zone).isoformat()
        flag = "\tpartial" if row.partial else ""
        print(f"{row.group}\t{at}\t{value}\t{row.count}{flag}")
    for group, runs in result.gaps.items():
        for first, last in runs:
            span = f"{first.astimezone(zone).isoformat()} .. {last.astimezone(zone).isoformat()}"
            print(f"# gap {group}: {span}", file=sys.stderr)
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Stream the selection to a file, with a progress bar on standard error."""
    import psycopg  # noqa: PLC0415

    from history.export import ExportError, Selection, count, export  # noqa: PLC0415

    file_format = args.format or args.output.suffix.lstrip(".").lower()
    if file_format not in ("csv", "parquet"):
        print("error: say --format csv or parquet (or name the output .csv or .parquet)",
              file=sys.stderr)  # fmt: skip
        return 2
    selection = Selection(
        args.start, args.end, args.resolution, sites=args.site, devices=args.device,
        metrics=args.metric,
    )  # fmt: skip
    started = time.monotonic()
    try:
        with psycopg.connect(_database_url(args)) as conn:
            total = count(conn, selection)
            bar = _ProgressBar(total)
            written = export(conn, selection, args.output, file_format=file_format,
                             progress=bar)  # fmt: skip
            bar.finish()
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = max(time.monotonic() - started, 1e-9)
    print(f"wrote {written:,} rows to {args.output} ({written / seconds:,.0f} rows/s)")
    return 0


class _ProgressBar:
    """``[#####-----]  41% 4,100,000/10,000,000 rows`` on standard error, at most ten a second."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._shown = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._shown < 0.1 and done < self.total:
            return
        self._shown = now
        share = done / self.total if self.total else 1.0
        filled = int(30 * min(share, 1.0))
        bar = "#" * filled + "-" * (30 - filled)
        print(f"\r[{bar}] {share:4.0%} {done:,}/{self.total:,} rows", end="", file=sys.stderr)

    def finish(self) -> None:
        print(file=sys.stderr)
